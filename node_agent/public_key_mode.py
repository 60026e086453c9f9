"""Public-key mode in the agent (shared/SUBTEXT.md), as hooks on the one relay loop (node_agent/relay.py): open
the request's envelope and hand the conversation to the same parsing, policy, queue and budget as plain mode,
then encrypt the whole answer to the taster's key and send it as pseudo-SSE (role chunk, one content chunk, a
usage-only final chunk, `[DONE]`). The envelope's codec is node_agent/subtext.py.

The agent decrypts by design, so the operator can read the plaintext inside this process: this keeps prompts
and answers out of proxies, HTTP logs and the tracker, not out of the rig. Nothing decrypted is logged, and no
refusal message quotes decrypted text (the core's messages can name decrypted parameter names, so they are
replaced here by fixed sentences per reason)."""

import time

from aiohttp import web

from node_agent import keys, subtext
from node_agent.chat import parse_chat
from node_agent.errors import AgentError
from node_agent.relay import Outcome, Relay, sse

# Why an envelope could not be used, in words that quote nothing from it.
_WHY = {
    "no_subtext": "no encrypted message (LRS1) was found",
    "bad_magic": "the selector run does not start with LRS1",
    "bad_length": "the declared envelope length is out of range",
    "truncated": "the encrypted message is cut short",
    "interrupted": "the encrypted message is interrupted by other text",
    "trailing_selectors": "the selector run is longer than its declared length",
    "multiple": "the text carries more than one encrypted message",
    "bad_json": "the envelope is not JSON",
    "bad_envelope": "the envelope's fields are malformed",
    "bad_key": "the envelope's ephemeral key is unusable",
    "decrypt_failed": (
        "it does not open with this node's key for this token and node (altered, or encrypted for another token, "
        "another node, or as a response)"
    ),
    "bad_plaintext": "the decrypted request is not a {messages, params} object with allowlisted parameters",
}
# Upstream usage objects can carry more than counts (details, timings): outside the envelope only these go.
_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
# A generation this long without a byte sent gets an SSE comment, as a queue wait does: proxies drop quiet
# connections (nginx after 60 s by default), and here nothing else is sent until the whole answer is ready.
KEEPALIVE_SEC = 15.0


def user_public_pem(claims) -> str:
    """The taster's key from the signed token; 401 when a public-key token lacks a usable one."""
    pem = claims.raw.get("user_public_key")
    try:
        keys.public_key_from_pem(pem)
        fingerprint = keys.fingerprint_of_public_pem(pem)
    except (ValueError, TypeError, AttributeError) as exc:
        raise AgentError(401, "invalid_token", "This public-key tasting token carries no usable user key.") from exc
    if claims.raw.get("user_public_key_fingerprint") not in (None, fingerprint):
        raise AgentError(401, "invalid_token", "This tasting token's user key does not match its fingerprint.")
    return pem


class PublicKeyRelay(Relay):
    """The relay loop with public-key mode's hooks: the request is opened from its envelope; the answer is generated
    whole, then encrypted to the taster's key (AAD: response, jti, node) and sent as pseudo-SSE."""

    def __init__(self, *args, user_public_pem: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_public_pem = user_public_pem
        self.role_sent = False
        self.last_write = 0.0

    @classmethod
    def open_request(cls, body, agent, claims) -> tuple[list[dict], dict, bool]:
        """(messages, params, stream) of a public-key chat body, checked exactly as plain mode checks its own.

        Outside the envelope: one user message (cover text + selectors), `stream`, optionally `model` and
        `stream_options`; a conversation or sampling parameters in the clear are refused rather than merged."""
        outer, outer_params, stream = parse_chat(body)
        if len(outer) != 1 or outer[0]["role"] != "user":
            raise AgentError(
                400,
                "invalid_request",
                "In public-key mode the body has exactly one user message, the encrypted envelope; the system message "
                "and the history travel inside it.",
            )
        if outer_params:
            raise AgentError(
                400,
                "invalid_request",
                "In public-key mode sampling parameters travel inside the envelope, not in the body: "
                + ", ".join(sorted(outer_params)),
            )
        content = outer[0]["content"]
        if not subtext.contains_subtext(content):
            raise AgentError(
                400,
                "plaintext_not_allowed",
                "This is a public-key tasting token: the prompt must be encrypted to the node's key. A plaintext "
                "message is refused, not forwarded.",
            )
        try:
            opened = subtext.open_request(content, agent.private_key, jti=claims.jti, node_id=agent.node_id)
        except ValueError as exc:  # SubtextError, or an AAD the core refuses to build
            reason = getattr(exc, "reason", "bad_envelope")
            raise AgentError(
                400, "invalid_subtext", f"The encrypted prompt cannot be used ({reason}): {_WHY.get(reason, reason)}."
            ) from None
        # The decrypted request goes through plain mode's own validation: roles, multi-turn, parameter types and
        # ranges. check_request already limited params to the allowlist, so no `stream` or `model` comes from here.
        messages, params, _stream = parse_chat({"messages": opened["messages"], **opened["params"]})
        return messages, params, stream

    async def write(self, response: web.StreamResponse, data: bytes) -> None:
        await super().write(response, data)  # ClientStalled when the taster stops reading
        self.last_write = time.monotonic()

    async def forward(self, response: web.StreamResponse, events: list) -> None:
        # The first upstream chunk sends the headers and the role chunk, as plain mode's first chunk does:
        # until then a failure is still a proper HTTP status. The chunks themselves are only collected.
        if not self.role_sent:
            await self.send_role(response)
        elif time.monotonic() - self.last_write >= KEEPALIVE_SEC:
            await self.write(response, b": generating\n\n")

    async def generation_ended(self, response: web.StreamResponse) -> None:
        if not self.role_sent:  # an upstream that streamed no choice at all
            await self.send_role(response)

    async def send_role(self, response: web.StreamResponse) -> None:
        self.role_sent = True
        await self.write(
            response, sse(self.chunk([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]))
        )

    def answer(self, outcome: Outcome) -> list[bytes]:
        # The answer's own finish_reason is inside the envelope; outside, the encrypted message is complete.
        content = {"index": 0, "delta": {"content": self.encrypted_answer(outcome)}, "finish_reason": "stop"}
        return [sse(self.chunk([content])), sse(self.chunk([], usage=self.counts(outcome)))]

    def completion_body(self, outcome: Outcome) -> dict:
        return self.completion(self.encrypted_answer(outcome), "stop", usage=self.counts(outcome))

    def encrypted_answer(self, outcome: Outcome) -> str:
        """The answer, its usage, timing and moderation, encrypted to the taster's key: cover text + selectors."""
        timing = self.timing(outcome)
        moderation = timing.pop("moderation")
        return subtext.seal_response(
            outcome.text,
            outcome.finish_reason,
            self.usage_of(outcome),
            timing,
            moderation,
            user_public_pem=self.user_public_pem,
            jti=self.claims.jti,
            node_id=self.agent.node_id,
        )

    def counts(self, outcome: Outcome) -> dict:
        usage = self.usage_of(outcome)
        return {name: int(usage.get(name) or 0) for name in _COUNTS}

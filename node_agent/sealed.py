"""Public-key ("subtext") mode in the agent (shared/SUBTEXT.md): open the sealed request, hand the conversation
to the same parsing, policy, queue and budget as plain mode, then seal the whole answer to the taster's key and
send it as pseudo-SSE (role chunk, one content chunk, a usage-only final chunk, `[DONE]`).

The agent decrypts by design, so the operator can read the plaintext inside this process: this keeps prompts
and answers out of proxies, HTTP logs and the tracker, not out of the rig. Nothing decrypted is logged, and no
refusal message quotes decrypted text (the core's messages can name decrypted parameter names, so they are
replaced here by fixed sentences per reason)."""

import time

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent import keys, subtext
from node_agent.chat import parse_chat
from node_agent.errors import AgentError
from node_agent.relay import DONE, SSE_HEADERS, ClientStalled, Relay, sse, stream_failure

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
        "it does not open with this node's key for this token and node (altered, or sealed for another token, "
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


def open_body(body, private_key: X25519PrivateKey, *, jti: str, node_id: str) -> tuple[list[dict], dict, bool]:
    """(messages, params, stream) of a public-key chat body, checked exactly as plain mode checks its own.

    Outside the envelope: one user message (cover text + selectors), `stream`, optionally `model` and
    `stream_options`; a conversation or sampling parameters in the clear are refused rather than merged."""
    outer, outer_params, stream, _model = parse_chat(body)
    if len(outer) != 1 or outer[0]["role"] != "user":
        raise AgentError(
            400,
            "invalid_request",
            "In public-key mode the body has exactly one user message, the sealed envelope; the system message "
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
            "This is a public-key tasting token: the prompt must be sealed to the node's key. A plaintext "
            "message is refused, not forwarded.",
        )
    try:
        opened = subtext.open_request(content, private_key, jti=jti, node_id=node_id)
    except ValueError as exc:  # SubtextError, or an AAD the core refuses to build
        reason = getattr(exc, "reason", "bad_envelope")
        raise AgentError(
            400, "invalid_subtext", f"The encrypted prompt cannot be used ({reason}): {_WHY.get(reason, reason)}."
        ) from None
    # The decrypted request goes through plain mode's own validation: roles, multi-turn, parameter types and
    # ranges. check_request already limited params to the allowlist, so no `stream` or `model` comes from here.
    messages, params, _stream, _ = parse_chat({"messages": opened["messages"], **opened["params"]})
    return messages, params, stream


class SealedRelay(Relay):
    """A Relay whose answer is generated whole, then sealed to the taster's key (AAD: response, jti, node)."""

    def __init__(self, *args, user_public_pem: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_public_pem = user_public_pem
        self.role_sent = False
        self.last_write = 0.0
        self.response_id = ""

    def _id(self) -> str:
        # Fixed at first use: every chunk of one answer carries the same id.
        self.response_id = self.response_id or self.outcome.chunk_id or f"chatcmpl-{self.ticket}"
        return self.response_id

    def sealed_content(self, outcome) -> str:
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

    def counts(self, outcome) -> dict:
        usage = self.usage_of(outcome)
        return {name: int(usage.get(name) or 0) for name in _COUNTS}

    def chunk(self, choices: list, **extra) -> dict:
        return {
            "id": self._id(),
            "object": "chat.completion.chunk",
            "created": self.outcome.created or int(time.time()),
            "model": self.model or self.outcome.model,
            "choices": choices,
            **extra,
        }

    def role_chunk(self) -> dict:
        return self.chunk([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])

    def content_chunk(self, content: str) -> dict:
        # The answer's own finish_reason is inside the envelope; outside, the sealed message is complete.
        return self.chunk([{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}])

    def completion_body(self, outcome) -> dict:
        return {
            "id": self._id(),
            "object": "chat.completion",
            "created": outcome.created or int(time.time()),
            "model": self.model or outcome.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.sealed_content(outcome)},
                    "finish_reason": "stop",
                }
            ],
            "usage": self.counts(outcome),
        }

    async def stream(self) -> web.StreamResponse:
        agent = self.agent
        # 429 token_busy or queue_full before headers
        waiter = agent.queue.enter(self.ticket, tier=self.claims.tier, key=self.claims.jti)
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)

        async def write(data: bytes) -> None:
            await self.write(response, data)  # ClientStalled when the taster stops reading
            self.last_write = time.monotonic()

        async def on_chunk(_data: bytes) -> None:
            # The first upstream chunk sends the headers and the role chunk, as plain mode's first chunk does:
            # until then a failure is still a proper HTTP status. The chunks themselves are only collected.
            if not self.role_sent:
                self.role_sent = True
                await write(sse(self.role_chunk()))
            elif time.monotonic() - self.last_write >= KEEPALIVE_SEC:
                await write(b": generating\n\n")

        try:
            if waiter is not None:
                await self._wait_with_comments(waiter, response)
            try:
                outcome = await self.generate(on_chunk)
            except ClientStalled:
                raise
            except Exception as exc:  # noqa: BLE001 - after headers, every failure ends the stream cleanly
                if not response.prepared:
                    raise
                error = stream_failure(exc, self.ticket)
                await write(sse(error.body()))
                await write(DONE)
                return response
            if not self.role_sent:
                self.role_sent = True
                await write(sse(self.role_chunk()))
            if agent.policy.moderate_output == "block":
                flagged, categories, state = await agent.policy.check_output(outcome.text)
                self.moderation = {**self.moderation, "output": state}
                if flagged:
                    await agent.report_flag(self.claims, "output", categories)
                    withheld = AgentError(451, "moderation_blocked", "The rig's moderation withheld the answer.")
                    await write(sse(withheld.body()))
                    await write(DONE)
                    return response
            elif self.moderation.get("output") == "record":
                self.moderation = {**self.moderation, "output": "recorded"}
            await write(sse(self.content_chunk(self.sealed_content(outcome))))
            await write(sse(self.chunk([], usage=self.counts(outcome))))
            await write(DONE)
            self.record_output_later(outcome.text)
            return response
        except ClientStalled:
            return response  # its connection is gone: nothing more can be sent
        finally:
            agent.queue.release(self.ticket)

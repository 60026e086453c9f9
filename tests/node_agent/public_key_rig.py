"""Shared by the public-key mode tests: a rig (a real agent with a node key, registered on the real tracker),
the taster's side of a sealed tasting, and SSE helpers."""

import json

import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent import keys, subtext

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a prime number."},
    {"role": "assistant", "content": "7"},
    {"role": "user", "content": "Another one, bigger than 100?"},
]


class Rig:
    """An agent with a node key, registered with its public half, and a taster with a key of their own."""

    def __init__(self, tracker, agent, node_pem: str, fingerprint: str):
        self.tracker, self.agent, self.node_pem, self.fingerprint = tracker, agent, node_pem, fingerprint
        self.taster = X25519PrivateKey.generate()

    def token(self, **extra) -> dict:
        return self.tracker.token(
            self.agent.node_id,
            crypto_mode="public-key",
            user_public_key=keys.public_pem_of(self.taster.public_key()),
            **extra,
        )

    def seal(self, issued, messages=CONVERSATION, params=None, *, jti=None, node_id=None) -> str:
        return subtext.seal_request(
            messages,
            params or {},
            node_public_pem=self.node_pem,
            jti=jti or issued["jti"],
            node_id=node_id or self.agent.node_id,
        )

    def post(self, issued, content: str, *, stream=False, ascii_escapes=False, timeout=30, **outer):
        body = {"messages": [{"role": "user", "content": content}], "stream": stream, **outer}
        return requests.post(
            self.agent.v1 + "/chat/completions",
            data=json.dumps(body, ensure_ascii=ascii_escapes).encode("utf-8"),
            headers={"Authorization": f"Bearer {issued['token']}", "Content-Type": "application/json"},
            stream=stream,
            timeout=timeout,
        )

    def open(self, issued, content: str) -> dict:
        return subtext.open_response(content, self.taster, jti=issued["jti"], node_id=self.agent.node_id)


def events_of(response) -> list[tuple[str, object, bytes]]:
    """(kind, value, raw line) for each SSE line: ('comment', text) or ('data', obj or '[DONE]')."""
    events = []
    for raw in response.iter_lines():
        line = raw.decode("utf-8")
        if line.startswith(":"):
            events.append(("comment", line[1:].strip(), raw))
        elif line.startswith("data:"):
            data = line[5:].strip()
            events.append(("data", data if data == "[DONE]" else json.loads(data), raw))
    return events


def error_code(response) -> str:
    body = response.json()
    # The OpenAI shape; a 429 also says when to retry and what would earn more (docs/api.md).
    extras = {"retry_after_sec", "resets_at", "earn_more", "tier"} if response.status_code == 429 else set()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    assert set(body["error"]) - {"message", "type", "code"} <= extras, body
    return body["error"]["code"]


def _carried(content: str) -> bytearray:
    return bytearray(subtext.selectors_to_bytes(content[len(subtext.REQUEST_COVER) :]))


def _recarry(data: bytes) -> str:
    return subtext.REQUEST_COVER + subtext.bytes_to_selectors(bytes(data))


def tampered(content: str) -> str:
    data = _carried(content)
    i = len(data) - 10  # inside the ct field, before its last (canonical-bits) character
    data[i] = ord("A") if data[i] != ord("A") else ord("B")
    return _recarry(data)

"""The fixed material of the subtext vectors and the vectors that must open, for make_subtext_vectors.py.

Here: the deterministic bytes and keys (every key, salt and iv is SHA-256 of a fixed label), the request and response
inputs, and the builders of the `positive[]` and `codec[]` vectors. The rejected cases and the writer of
tests/vectors/subtext.json stay in make_subtext_vectors.py, which is still the one command to run; the split only
keeps each module under 500 lines.
"""

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent import keys, subtext

JTI = "01JDVECTOR0000000000000001"
NODE_ID = "rtx-3090-llama-3-1-8b-q4-k-m"


def fixed(label: str, size: int) -> bytes:
    """Deterministic bytes for a label (never do this outside test vectors)."""
    return hashlib.sha256(b"luckrig-subtext-vectors|" + label.encode()).digest()[:size]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_raw(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def jwk(private: X25519PrivateKey) -> dict:
    return {"kty": "OKP", "crv": "X25519", "d": b64u(private_raw(private)), "x": b64u(raw_public(private))}


def key_entry(private: X25519PrivateKey) -> dict:
    public_pem = keys.public_pem_of(private.public_key())
    return {
        "private_raw_hex": private_raw(private).hex(),
        "private_jwk": jwk(private),
        "private_pkcs8_pem": private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "public_raw_hex": raw_public(private).hex(),
        "public_jwk": {"kty": "OKP", "crv": "X25519", "x": b64u(raw_public(private))},
        "public_spki_pem": public_pem,
        "fingerprint": keys.fingerprint_of_public_pem(public_pem),
    }


NODE = X25519PrivateKey.from_private_bytes(fixed("node private key", 32))
TASTER = X25519PrivateKey.from_private_bytes(fixed("taster private key", 32))
RECIPIENTS = {"node": NODE, "taster": TASTER}
DIRECTION_OF = {"request": "node", "response": "taster"}


def injected(name: str) -> dict:
    return {
        "ephemeral_private": fixed(name + "/ephemeral", 32),
        "salt": fixed(name + "/salt", 16),
        "iv": fixed(name + "/iv", 12),
    }


def carried(envelope_json: bytes, magic: bytes = subtext.MAGIC, length: int | None = None) -> bytes:
    return magic + (len(envelope_json) if length is None else length).to_bytes(4, "big") + envelope_json


def positive(name: str, kind: str, direction: str, *, plaintext: bytes, value=None) -> dict:
    recipient = DIRECTION_OF[direction]
    inject = injected(name)
    ephemeral = X25519PrivateKey.from_private_bytes(inject["ephemeral_private"])
    shared = ephemeral.exchange(RECIPIENTS[recipient].public_key())
    envelope = subtext.seal(
        plaintext,
        RECIPIENTS[recipient].public_key(),
        direction=direction,
        jti=JTI,
        node_id=NODE_ID,
        **inject,
    )
    env_json = subtext.envelope_bytes(envelope)
    cover = subtext.REQUEST_COVER if direction == "request" else subtext.RESPONSE_COVER
    if kind == "request":
        content = subtext.seal_request(
            value["messages"],
            value["params"],
            node_public_pem=keys.public_pem_of(NODE.public_key()),
            jti=JTI,
            node_id=NODE_ID,
            **inject,
        )
    elif kind == "response":
        content = subtext.seal_response(
            **value, user_public_pem=keys.public_pem_of(TASTER.public_key()), jti=JTI, node_id=NODE_ID, **inject
        )
    else:
        content = subtext.encode_message(env_json, cover)
    assert content == cover + subtext.bytes_to_selectors(carried(env_json))
    vector = {
        "name": name,
        "kind": kind,
        "direction": direction,
        "recipient": recipient,
        "jti": JTI,
        "node_id": NODE_ID,
        "ephemeral_private_hex": inject["ephemeral_private"].hex(),
        "ephemeral_private_jwk": jwk(ephemeral),
        "salt_hex": inject["salt"].hex(),
        "iv_hex": inject["iv"].hex(),
    }
    if value is not None:
        vector[kind] = value
    vector["plaintext_hex"] = plaintext.hex()
    vector["expected"] = {
        "ephemeral_public_hex": raw_public(ephemeral).hex(),
        "shared_secret_hex": shared.hex(),
        "key_hex": subtext.derive_key(shared, inject["salt"]).hex(),
        "aad": subtext.aad(direction, JTI, NODE_ID).decode(),
        "envelope": envelope,
        "envelope_json": env_json.decode(),
        "carried_hex": carried(env_json).hex(),
        "cover": cover,
        "content": content,
    }
    return vector


def request_plaintext(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


REQUESTS = {
    "request_ascii": {
        "messages": [{"role": "user", "content": "Hello, rig! What is 2 + 2?"}],
        "params": {"temperature": 0.7, "max_tokens": 64},
    },
    "request_japanese": {
        "messages": [{"role": "user", "content": "日本の首都はどこですか？一文で答えてください。"}],
        "params": {},
    },
    "request_emoji_fe0f": {
        # U+2764 U+FE0F, a skin-tone modifier, a ZWJ flag sequence with U+FE0F, a keycap with U+FE0F U+20E3.
        "messages": [
            {
                "role": "user",
                "content": "I \u2764\ufe0f my 3090 \U0001f44d\U0001f3fd \U0001f3f3\ufe0f\u200d\U0001f308"
                " 1\ufe0f\u20e3?",
            }
        ],
        "params": {"seed": 42},
    },
    "request_multi_turn": {
        "messages": [
            {"role": "system", "content": "You are a terse assistant. Answer in one line."},
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Another one, bigger than 100?"},
        ],
        "params": {
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 32,
            "stop": ["\n", "###"],
            "presence_penalty": 0.5,
            "frequency_penalty": -0.25,
        },
    },
}

RESPONSES = {
    "response_ascii": {
        "content": "101 is prime.",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 41, "completion_tokens": 5, "total_tokens": 46},
        "luckrig": {
            "node_id": NODE_ID,
            "queue_wait_ms": 12,
            "proxy_ttft_ms": 230,
            "generation_ms": 410,
            "truncated": False,
        },
        "moderation": {"input": "pass", "output": "off"},
    },
    "response_japanese_emoji": {
        "content": "東京です。\U0001f5fc\u2728 \u263a\ufe0f",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
        "luckrig": {
            "node_id": NODE_ID,
            "queue_wait_ms": 0,
            "proxy_ttft_ms": 95,
            "generation_ms": 700,
            "truncated": True,
        },
        "moderation": {},
    },
}


def build_positive() -> list[dict]:
    vectors = [
        positive(name, "request", "request", plaintext=request_plaintext(value), value=value)
        for name, value in REQUESTS.items()
    ]
    # A conversation that already holds subtext (an earlier encrypted answer pasted back) and stray selectors:
    # the inner runs travel as ordinary text inside the envelope.
    inner = vectors[0]["expected"]["content"]
    nested = {
        "messages": [
            {"role": "user", "content": "What does this say? " + inner},
            {"role": "assistant", "content": "It is encrypted \ufe0f\ufe0f\ufe0f\ufe0f\ufe0f; I cannot read it."},
            {"role": "user", "content": "\U000e0100\U000e01ef ok \u2764\ufe0f"},
        ],
        "params": {"max_completion_tokens": 16, "response_format": {"type": "text"}},
    }
    vectors.append(
        positive("request_containing_subtext", "request", "request", plaintext=request_plaintext(nested), value=nested)
    )
    vectors += [
        positive(name, "response", "response", plaintext=request_plaintext(value), value=value)
        for name, value in RESPONSES.items()
    ]
    # Raw envelopes: the empty plaintext (ct is the tag alone) and arbitrary non-UTF-8 bytes.
    vectors.append(positive("envelope_empty_plaintext", "envelope", "request", plaintext=b""))
    vectors.append(positive("envelope_all_bytes", "envelope", "response", plaintext=bytes(range(256))))
    return vectors


def build_codec() -> list[dict]:
    samples = {
        "empty": b"",
        "all_bytes": bytes(range(256)),
        "boundaries": bytes([0, 15, 16, 255]),
        "header": subtext.MAGIC + (300).to_bytes(4, "big"),
    }
    return [
        {
            "name": name,
            "bytes_hex": data.hex(),
            "selectors": subtext.bytes_to_selectors(data),
            "code_points": [ord(ch) for ch in subtext.bytes_to_selectors(data)],
        }
        for name, data in samples.items()
    ]

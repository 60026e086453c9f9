"""Writes tests/vectors/subtext.json: the fixed test vectors of subtext mode (shared/SUBTEXT.md) that the Python
implementation (node_agent/subtext.py) and the browser's WebCrypto implementation must both pass.

Deterministic: every key, salt and iv comes from SHA-256 of a fixed label, so rerunning rewrites the same file.

    .venv/bin/python tests/vectors/make_subtext_vectors.py            # rewrite the file
    .venv/bin/python tests/vectors/make_subtext_vectors.py --check    # exit 1 if the committed file differs

Format (all binary values are lowercase hex; strings are JSON strings, selectors included):
- `constants`: magic, HKDF info, alg, AAD template, selector rule, limits, covers, sampling-parameter allowlist.
- `keys.node` / `keys.taster`: X25519 private key as raw hex, JWK and PKCS#8 PEM; public key as raw hex, JWK
  and SPKI PEM; the fingerprint.
- `codec[]`: `bytes_hex` <-> `selectors` (and the same as `code_points`).
- `positive[]`: `kind` (`request` | `response` | `envelope`), `direction`, `recipient` (`node` | `taster`),
  `jti`, `node_id`, the injected `ephemeral_private_hex` (+ `_jwk`), `salt_hex`, `iv_hex`, the input
  (`request` | `response` object, or nothing for `envelope`), `plaintext_hex`; `expected` holds every
  intermediate (`ephemeral_public_hex`, `shared_secret_hex`, `key_hex`, `aad`), the `envelope` object, its
  carried spelling `envelope_json`, `carried_hex` (LRS1 + length + envelope) and the chat `content`.
- `negative[]`: `operation` (`decode`: find_and_decode(`content`); `open_envelope`: open the bytes
  `envelope_hex`; `open_request` / `open_response`: the whole `content`), with `recipient`, `direction`, `jti`,
  `node_id` where they apply, and `expected_error: {code, reason}`. `code` is the contract (always
  `invalid_subtext`); `reason` says which check must catch it.
- `contains_subtext[]`: `text` and whether it counts as an attempt at subtext (false → `plaintext_not_allowed`).

The fixed keys, inputs and well-formed (`positive`, `codec`) vectors live in subtext_material.py; this module holds
the rejected cases (`negative`, `contains_subtext`) and the writer.
"""

import argparse
import base64
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from node_agent import keys, subtext  # noqa: E402
from tests.vectors.subtext_material import (  # noqa: E402
    JTI,
    NODE,
    NODE_ID,
    REQUESTS,
    TASTER,
    b64u,
    build_codec,
    build_positive,
    carried,
    injected,
    key_entry,
    request_plaintext,
)

OUT = Path(__file__).with_name("subtext.json")


def mutate(envelope: dict, **changes) -> bytes:
    """An envelope spelled compactly with some fields changed (None removes a field)."""
    out = {**envelope}
    for name, value in changes.items():
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return json.dumps(out, separators=(",", ":")).encode()


def flip(b64: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    raw[index] ^= 0x01
    return b64u(bytes(raw))


def build_negative(pos: list[dict]) -> list[dict]:
    req = pos[0]
    env = req["expected"]["envelope"]
    env_json = req["expected"]["envelope_json"].encode()
    cover = subtext.REQUEST_COVER
    content = req["expected"]["content"]
    sel = subtext.bytes_to_selectors
    body = carried(env_json)
    out: list[dict] = []

    def decode(name: str, text: str, reason: str, note: str) -> None:
        out.append(
            {
                "name": name,
                "operation": "decode",
                "content": text,
                "note": note,
                "expected_error": {"code": "invalid_subtext", "reason": reason},
            }
        )

    def opened(name: str, data: bytes, reason: str, note: str, **ctx) -> None:
        context = {"recipient": "node", "direction": "request", "jti": JTI, "node_id": NODE_ID, **ctx}
        out.append(
            {
                "name": name,
                "operation": "open_envelope",
                **context,
                "envelope_hex": data.hex(),
                "note": note,
                "expected_error": {"code": "invalid_subtext", "reason": reason},
            }
        )

    def opened_message(name: str, operation: str, text: str, reason: str, note: str) -> None:
        recipient = "node" if operation == "open_request" else "taster"
        out.append(
            {
                "name": name,
                "operation": operation,
                "recipient": recipient,
                "jti": JTI,
                "node_id": NODE_ID,
                "content": text,
                "note": note,
                "expected_error": {"code": "invalid_subtext", "reason": reason},
            }
        )

    # -- carrying in text
    decode("plain_text_with_emoji", "I \u2764\ufe0f my rig \U0001f44d\U0001f3fd", "no_subtext", "ordinary text")
    decode("bad_magic", cover + sel(carried(env_json, magic=b"LRS2")), "bad_magic", "LRS2 instead of LRS1")
    decode("length_zero", cover + sel(carried(b"", length=0)), "bad_length", "declared length 0")
    decode("length_huge", cover + sel(carried(env_json, length=0xFFFFFFFF)), "bad_length", "length 2^32-1")
    decode(
        "length_one_too_long",
        cover + sel(carried(env_json, length=len(env_json) + 1)),
        "truncated",
        "declared length one more than the envelope; the text ends first",
    )
    decode(
        "length_one_too_short",
        cover + sel(carried(env_json, length=len(env_json) - 1)),
        "trailing_selectors",
        "declared length one less than the envelope; the run goes on",
    )
    decode("truncated_envelope", content[:-10], "truncated", "last 10 selectors cut off")
    decode("truncated_header", cover + sel(body[:6]), "truncated", "LRS1 and 2 of the 4 length bytes")
    middle = len(cover) + len(body) // 2
    decode("interrupted_envelope", content[:middle] + " " + content[middle:], "interrupted", "a space inside the run")
    decode(
        "interrupted_header",
        content[: len(cover) + 6] + "x" + content[len(cover) + 6 :],
        "interrupted",
        "a letter inside the length header",
    )
    decode("trailing_fe0f", content + "\ufe0f", "trailing_selectors", "a bare U+FE0F right after the run")
    decode("two_messages", content + " " + content, "multiple", "two LRS1 messages")
    # -- the envelope
    opened("not_json", b"not json", "bad_json", "carried bytes are not JSON")
    opened("not_utf8", b'\xff\xfe{"v":1}', "bad_json", "carried bytes are not UTF-8")
    opened("json_array", b"[1]", "bad_json", "JSON, but not an object")
    opened("missing_key", mutate(env, salt=None), "bad_envelope", "no salt")
    opened("extra_key", mutate(env, kid="x"), "bad_envelope", "an unknown key")
    opened("version_2", mutate(env, v=2), "bad_envelope", "v is 2")
    opened("version_string", mutate(env, v="1"), "bad_envelope", 'v is the string "1"')
    opened("version_true", mutate(env, v=True), "bad_envelope", "v is true")
    opened("wrong_alg", mutate(env, alg="X25519-HKDF-SHA256-A128GCM"), "bad_envelope", "another algorithm")
    opened("epk_padded", mutate(env, epk=env["epk"] + "="), "bad_envelope", "base64url with padding")
    opened("epk_standard_alphabet", mutate(env, epk="+" + env["epk"][1:]), "bad_envelope", "'+' is not base64url")
    last = env["epk"][-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    noncanonical = env["epk"][:-1] + alphabet[alphabet.index(last) | 1]
    opened("epk_noncanonical", mutate(env, epk=noncanonical), "bad_envelope", "unused trailing bits set")
    salt = env["salt"][:-1] + alphabet[alphabet.index(env["salt"][-1]) | 1]
    opened("salt_noncanonical", mutate(env, salt=salt), "bad_envelope", "unused trailing bits set (2-char tail)")
    opened("epk_31_bytes", mutate(env, epk=b64u(bytes(31))), "bad_envelope", "epk of 31 bytes")
    opened("salt_15_bytes", mutate(env, salt=b64u(bytes(15))), "bad_envelope", "salt of 15 bytes")
    opened("iv_16_bytes", mutate(env, iv=b64u(bytes(16))), "bad_envelope", "iv of 16 bytes")
    opened("ct_15_bytes", mutate(env, ct=b64u(bytes(15))), "bad_envelope", "ct shorter than the tag")
    opened("low_order_epk", mutate(env, epk=b64u(bytes(32))), "bad_key", "all-zero ephemeral key")
    opened("tampered_ct", mutate(env, ct=flip(env["ct"], 0)), "decrypt_failed", "first ciphertext bit flipped")
    opened("tampered_tag", mutate(env, ct=flip(env["ct"], -1)), "decrypt_failed", "last tag bit flipped")
    opened("tampered_salt", mutate(env, salt=flip(env["salt"], 0)), "decrypt_failed", "salt bit flipped")
    opened("tampered_iv", mutate(env, iv=flip(env["iv"], 0)), "decrypt_failed", "iv bit flipped")
    opened(
        "wrong_direction", env_json, "decrypt_failed", "a request envelope opened as a response", direction="response"
    )
    opened("wrong_jti", env_json, "decrypt_failed", "opened under another token", jti=JTI[:-1] + "2")
    opened("wrong_node_id", env_json, "decrypt_failed", "opened by another node", node_id=NODE_ID + "-2")
    opened("wrong_recipient_key", env_json, "decrypt_failed", "opened with the taster's key", recipient="taster")
    # -- the plaintexts (properly sealed, wrong shape inside)
    node_pem = keys.public_pem_of(NODE.public_key())
    taster_pem = keys.public_pem_of(TASTER.public_key())

    def sealed(name: str, plaintext: bytes, direction: str) -> str:
        pem = node_pem if direction == "request" else taster_pem
        envelope = subtext.seal(plaintext, pem, direction=direction, jti=JTI, node_id=NODE_ID, **injected(name))
        cover = subtext.REQUEST_COVER if direction == "request" else subtext.RESPONSE_COVER
        return subtext.encode_message(subtext.envelope_bytes(envelope), cover)

    def bad_request(name: str, plaintext: bytes, note: str) -> None:
        opened_message(name, "open_request", sealed(name, plaintext, "request"), "bad_plaintext", note)

    bad_request("request_not_json", b"hello", "plaintext is not JSON")
    bad_request("request_not_utf8", b"\xc3\x28", "plaintext is not UTF-8")
    bad_request("request_no_messages", b'{"messages":[],"params":{}}', "empty messages")
    bad_request("request_no_params", b'{"messages":[{"role":"user","content":"hi"}]}', "params missing")
    bad_request(
        "request_extra_top_key",
        b'{"messages":[{"role":"user","content":"hi"}],"params":{},"stream":true}',
        "an unknown top-level key",
    )
    bad_request(
        "request_message_extra_key",
        b'{"messages":[{"role":"user","content":"hi","name":"x"}],"params":{}}',
        "an unknown message key",
    )
    bad_request("request_bad_role", b'{"messages":[{"role":"tool","content":"hi"}],"params":{}}', "role tool")
    bad_request(
        "request_content_parts",
        b'{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"params":{}}',
        "content must be a string inside the envelope",
    )
    bad_request(
        "request_unknown_param",
        b'{"messages":[{"role":"user","content":"hi"}],"params":{"logit_bias":{}}}',
        "a parameter outside the allowlist",
    )
    opened_message(
        "response_as_request_shape",
        "open_response",
        sealed("response_as_request_shape", request_plaintext(REQUESTS["request_ascii"]), "response"),
        "bad_plaintext",
        "a request-shaped plaintext in a response",
    )
    opened_message(
        "response_missing_moderation",
        "open_response",
        sealed(
            "response_missing_moderation", b'{"content":"x","finish_reason":"stop","usage":{},"luckrig":{}}', "response"
        ),
        "bad_plaintext",
        "moderation missing",
    )
    opened_message(
        "request_opened_as_response",
        "open_response",
        content,
        "decrypt_failed",
        "a request content handed to open_response",
    )
    return out


def build_contains() -> list[dict]:
    content = subtext.REQUEST_COVER + subtext.bytes_to_selectors(carried(b"{}"))
    cases = [
        ("Hello", False),
        ("I \u2764\ufe0f it \u263a\ufe0f\u263a\ufe0f", False),
        ("\u845b\U000e0100 (an ideographic variation sequence)", False),
        ("three in a row \ufe00\ufe01\ufe02 is still text", False),
        ("four in a row \ufe00\ufe01\ufe02\ufe03 is an attempt", True),
        (content, True),
        ("bad magic " + subtext.bytes_to_selectors(b"LRS2" + bytes(4)), True),
        ("a truncated magic " + subtext.bytes_to_selectors(b"LRS"), False),
    ]
    return [{"text": text, "expected": expected} for text, expected in cases]


def build() -> dict:
    pos = build_positive()
    return {
        "schema": "luckrig-subtext-vectors",
        "version": 1,
        "generator": "tests/vectors/make_subtext_vectors.py",
        "spec": "shared/SUBTEXT.md (v1); implementation notes in node_agent/subtext.py",
        "constants": {
            "magic_hex": subtext.MAGIC.hex(),
            "hkdf_info": subtext.INFO.decode(),
            "alg": subtext.ALG,
            "aad_template": "luckrig-subtext-v1|{direction}|{jti}|{node_id}",
            "selector_rule": "byte b < 16 -> U+FE00 + b; otherwise U+E0100 + (b - 16)",
            "length_bytes": 4,
            "length_byte_order": "big",
            "max_envelope_bytes": subtext.MAX_ENVELOPE_BYTES,
            "min_subtext_run": subtext.MIN_SUBTEXT_RUN,
            "request_cover": subtext.REQUEST_COVER,
            "response_cover": subtext.RESPONSE_COVER,
            "envelope_key_order": ["v", "alg", "epk", "salt", "iv", "ct"],
            "base64url": "unpadded, url-safe alphabet only, canonical (unused bits zero); anything else rejected",
            "sampling_params": sorted(subtext.SAMPLING_PARAMS),
            "error_code": "invalid_subtext",
            "reasons": list(subtext.REASONS),
        },
        "keys": {"node": key_entry(NODE), "taster": key_entry(TASTER)},
        "codec": build_codec(),
        "positive": pos,
        "negative": build_negative(pos),
        "contains_subtext": build_contains(),
    }


def render() -> str:
    # ASCII-only file: selectors and non-Latin text are \u escapes, so no editor or tool can mangle them.
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is not up to date")
    args = parser.parse_args()
    text = render()
    if args.check:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text)} bytes)")


if __name__ == "__main__":
    main()

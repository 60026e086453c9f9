"""The subtext codec of public-key mode (shared/SUBTEXT.md, v1): the encrypted envelope and how its bytes ride in
chat text (node_agent/public_key_mode.py is the mode in the agent, node_agent/taste.py its CLI client).

Pure functions, no I/O, no Django: the agent, the CLI and the browser (through tests/vectors/subtext.json) share
this one definition. The mode keeps prompts and answers out of HTTP logs, proxies and the tracker. It is NOT
end-to-end encryption from the node's operator: the node decrypts by design and its operator can read the text.

Choices the spec leaves open (the browser implementation must make the same ones):
- base64url is strict on input: no padding, only `A-Z a-z 0-9 - _`, canonical (unused trailing bits zero), so that
  every envelope has exactly one spelling and the test vectors are byte-exact.
- The envelope JSON is written compactly with keys in the order v, alg, epk, salt, iv, ct; any JSON spelling with
  exactly those keys is accepted (duplicate keys: the last wins, as in JSON.parse). `v` must be the JSON integer
  1. Request and response plaintexts are compact UTF-8 JSON (not ASCII-escaped).
- Every failure of untrusted input raises `SubtextError` (a ValueError) with `code == "invalid_subtext"` and a
  finer `reason` (listed in REASONS); the caller turns it into a 400. Caller bugs (bad key objects, a `|` in a
  jti) raise plain ValueError.
- `seal` and `open` are the codec's verbs for encrypting to a recipient's key and decrypting, as in HPKE (RFC 9180);
  everywhere a person reads it (messages, CLI help, docs, the site) the feature is "public-key mode" and its
  messages are "encrypted".
"""

import base64
import json
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from node_agent import keys
from node_agent.chat import SAMPLING

MAGIC = b"LRS1"
INFO = b"luckrig-subtext-v1"
ALG = "X25519-HKDF-SHA256-A256GCM"
DIRECTIONS = ("request", "response")
REQUEST_COVER = "luckrig encrypted prompt"
RESPONSE_COVER = "luckrig encrypted response"
# Far above what the agent's body limit lets through (a selector is 4 bytes of UTF-8, so a 1 MiB body carries at
# most 256 KiB of envelope); it only bounds the work a forged length header can ask for.
MAX_ENVELOPE_BYTES = 8 * 1024 * 1024
# A run this long is never ordinary text (an emoji or ideographic variation sequence has one selector), so it
# counts as an attempt at subtext: decoding it must fail loudly rather than pass as plaintext.
MIN_SUBTEXT_RUN = 4
ROLES = frozenset({"system", "user", "assistant"})
# The allowlisted sampling parameters of plain mode: their values are checked by the same code as in plain mode
# once the request is opened.
SAMPLING_PARAMS = frozenset(SAMPLING)
REASONS = (
    "no_subtext",  # no LRS1 magic and no selector run of MIN_SUBTEXT_RUN or more
    "bad_magic",  # a long selector run, but none starts with LRS1
    "bad_length",  # declared envelope length 0 or above the maximum
    "truncated",  # the text ends before the declared length is complete
    "interrupted",  # a non-selector character appears before the declared length is complete
    "trailing_selectors",  # the run goes on past the declared length
    "multiple",  # a second LRS1 message in the same text
    "bad_json",  # the carried envelope is not a UTF-8 JSON object
    "bad_envelope",  # wrong keys, version, algorithm, base64url or field length
    "bad_key",  # the ephemeral key gives no usable shared secret (a low-order point)
    "decrypt_failed",  # tag check failed: tampered, wrong key, or wrong direction / jti / node (AAD)
    "bad_plaintext",  # decrypted, but not the request / response JSON shape
)


class SubtextError(ValueError):
    """Untrusted subtext that cannot be used: always a 400 `invalid_subtext`, never a 500."""

    code = "invalid_subtext"

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


# ---- bytes <-> variation selectors ---------------------------------------------------------------------------

_SELECTOR_CLASS = "[\ufe00-\ufe0f\U000e0100-\U000e01ef]"
_RUN = re.compile(_SELECTOR_CLASS + "*")
_LONG_RUN = re.compile(_SELECTOR_CLASS + f"{{{MIN_SUBTEXT_RUN},}}")
_ANY_SELECTOR = re.compile(_SELECTOR_CLASS)
# The codec works on UTF-32-LE lanes with bytes.translate rather than per character: an envelope can be a few
# hundred thousand selectors, and a per-character loop would block the agent's event loop for tens of ms.
# U+FE00 + b is the little-endian bytes (b, FE, 00, 00); U+E0100 + (b - 16) is (b - 16, 01, 0E, 00).
_LANE0 = bytes(b if b < 16 else b - 16 for b in range(256))
_LANE1 = bytes(0xFE if b < 16 else 0x01 for b in range(256))
_LANE2 = bytes(0x00 if b < 16 else 0x0E for b in range(256))
_PLUS16 = bytes.maketrans(b"\x0e", b"\x10")  # plane byte 0E (U+E01xx) -> add 16 back; 00 (U+FE0x) -> add 0


def is_selector(ch: str) -> bool:
    return bool(_ANY_SELECTOR.fullmatch(ch))


def bytes_to_selectors(data: bytes) -> str:
    """One variation selector per byte: U+FE00 + b for b < 16, U+E0100 + (b - 16) otherwise."""
    out = bytearray(4 * len(data))
    out[0::4], out[1::4], out[2::4] = data.translate(_LANE0), data.translate(_LANE1), data.translate(_LANE2)
    return out.decode("utf-32-le")


def selectors_to_bytes(text: str) -> bytes:
    """The inverse of bytes_to_selectors; ValueError if the text holds anything but selectors."""
    if not _RUN.fullmatch(text):
        raise ValueError("not a run of variation selectors")
    return _run_to_bytes(text)


def _run_to_bytes(text: str) -> bytes:
    """selectors_to_bytes for text already known to be selectors only."""
    raw = text.encode("utf-32-le")
    # Low byte plus 16 for the supplementary selectors: the low byte is then at most 0xEF, so the big-integer
    # sum of the two lanes never carries from one byte into the next.
    total = int.from_bytes(raw[0::4], "big") + int.from_bytes(raw[2::4].translate(_PLUS16), "big")
    return total.to_bytes(len(text), "big")


_MAGIC_TEXT = bytes_to_selectors(MAGIC)


def encode_message(envelope_bytes: bytes, cover: str = REQUEST_COVER) -> str:
    """Chat content: the visible cover text, then the selectors of `LRS1` + 4-byte big-endian length + envelope."""
    if not 0 < len(envelope_bytes) <= MAX_ENVELOPE_BYTES:
        raise ValueError("envelope length out of range")
    if _ANY_SELECTOR.search(cover):
        raise ValueError("the cover text must not contain variation selectors")
    return cover + bytes_to_selectors(MAGIC + len(envelope_bytes).to_bytes(4, "big") + envelope_bytes)


def contains_subtext(text: str) -> bool:
    """Whether text tries to carry subtext at all: an LRS1 magic, or any run of MIN_SUBTEXT_RUN+ selectors.

    False means plaintext (the agent's `plaintext_not_allowed`); True means find_and_decode must succeed or the
    request is `invalid_subtext`. An emoji's U+FE0F alone is plaintext."""
    return _MAGIC_TEXT in text or bool(_LONG_RUN.search(text))


def find_and_decode(text: str, *, max_length: int = MAX_ENVELOPE_BYTES) -> bytes:
    """The envelope bytes carried in text; SubtextError otherwise.

    The message starts at the first occurrence of the four selectors spelling `LRS1`. Selectors before it are
    ignored, even directly adjacent ones (text or a cover ending in an emoji puts a U+FE0F right there), and so
    are selector runs elsewhere in the text, separated from the message by at least one other character.
    From the magic on, the run is read as: 4 length bytes (big-endian N), then N envelope bytes, then the run
    must end (end of text or a non-selector character). Anything else is an odd run:
    the text ends first (`truncated`), a non-selector character comes first (`interrupted`), or the run goes on
    past N (`trailing_selectors`: ordinary text puts a selector after a base character, not after another
    selector, so it means an altered run or a wrong length). N of 0 or above max_length is `bad_length`; a
    second LRS1 after the message is `multiple` (ambiguous, never guessed).
    """
    start = text.find(_MAGIC_TEXT)
    if start < 0:
        if _LONG_RUN.search(text):
            raise SubtextError("bad_magic", "a variation-selector run that does not start with LRS1")
        raise SubtextError("no_subtext", "no subtext message (LRS1) in the text")
    end = _RUN.match(text, start).end()

    def short(what: str) -> SubtextError:
        if end == len(text):
            return SubtextError("truncated", f"the subtext ends inside the {what}")
        return SubtextError("interrupted", f"a non-selector character interrupts the subtext {what}")

    if end - start < 8:
        raise short("length header")
    length = int.from_bytes(_run_to_bytes(text[start + 4 : start + 8]), "big")
    if not 0 < length <= max_length:
        raise SubtextError("bad_length", f"declared envelope length {length} is out of range")
    body_end = start + 8 + length
    if end < body_end:
        raise short("envelope")
    if end > body_end:
        raise SubtextError("trailing_selectors", "the selector run is longer than its declared length")
    if text.find(_MAGIC_TEXT, end) >= 0:
        raise SubtextError("multiple", "more than one subtext message in the text")
    return _run_to_bytes(text[start + 8 : body_end])


# ---- the envelope --------------------------------------------------------------------------------------------

_ENVELOPE_KEYS = ("v", "alg", "epk", "salt", "iv", "ct")
_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# A final group of 2 (or 3) characters carries 4 (or 2) unused low bits, which canonical base64 leaves at zero.
_UNUSED_BITS = {0: 0, 2: 0b1111, 3: 0b11}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value, field: str) -> bytes:
    """Strict base64url: unpadded, url alphabet only, canonical; one spelling per byte string."""
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise SubtextError("bad_envelope", f"envelope {field} is not unpadded base64url")
    if value and _B64URL_ALPHABET.index(value[-1]) & _UNUSED_BITS[len(value) % 4]:
        raise SubtextError("bad_envelope", f"envelope {field} is not canonical base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def aad(direction: str, jti: str, node_id: str) -> bytes:
    """`luckrig-subtext-v1|<direction>|<jti>|<node_id>`: binds an envelope to one token, node and direction."""
    if direction not in DIRECTIONS:
        raise ValueError("direction must be 'request' or 'response'")
    for name, value in (("jti", jti), ("node_id", node_id)):
        # A `|` would make two different (jti, node_id) pairs spell the same AAD.
        if not isinstance(value, str) or not value or "|" in value:
            raise ValueError(f"{name} must be a non-empty string without '|'")
    return f"{INFO.decode()}|{direction}|{jti}|{node_id}".encode()


def derive_key(shared_secret: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=INFO).derive(shared_secret)


def _public_key(key: X25519PublicKey | str) -> X25519PublicKey:
    if isinstance(key, str):
        return keys.public_key_from_pem(key)
    if not isinstance(key, X25519PublicKey):
        raise ValueError("recipient key must be an X25519PublicKey or SPKI PEM")
    return key


def seal(
    plaintext: bytes,
    recipient_public_key: X25519PublicKey | str,
    *,
    direction: str,
    jti: str,
    node_id: str,
    ephemeral_private: X25519PrivateKey | bytes | None = None,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> dict:
    """Encrypt to the recipient's public key. Fresh ephemeral key, salt and iv unless injected (test vectors only:
    reusing them across envelopes would break AES-GCM)."""
    associated = aad(direction, jti, node_id)
    if ephemeral_private is None:
        ephemeral_private = X25519PrivateKey.generate()
    elif isinstance(ephemeral_private, bytes):
        ephemeral_private = X25519PrivateKey.from_private_bytes(ephemeral_private)
    salt = os.urandom(16) if salt is None else salt
    iv = os.urandom(12) if iv is None else iv
    if len(salt) != 16 or len(iv) != 12:
        raise ValueError("salt must be 16 bytes and iv 12 bytes")
    shared = ephemeral_private.exchange(_public_key(recipient_public_key))
    ct = AESGCM(derive_key(shared, salt)).encrypt(iv, plaintext, associated)
    epk = ephemeral_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"v": 1, "alg": ALG, "epk": b64url(epk), "salt": b64url(salt), "iv": b64url(iv), "ct": b64url(ct)}


def envelope_bytes(envelope: dict) -> bytes:
    """The canonical spelling that is carried: compact JSON, keys in spec order."""
    return json.dumps({k: envelope[k] for k in _ENVELOPE_KEYS}, separators=(",", ":")).encode("ascii")


def parse_envelope(data: bytes) -> dict:
    """Carried bytes -> envelope object (not yet validated)."""
    try:
        envelope = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SubtextError("bad_json", "the envelope is not UTF-8 JSON") from exc
    if not isinstance(envelope, dict):
        raise SubtextError("bad_json", "the envelope is not a JSON object")
    return envelope


def validate_envelope(envelope: dict) -> tuple[bytes, bytes, bytes, bytes]:
    """(epk, salt, iv, ct) of a well-formed v1 envelope; bad_envelope otherwise."""
    if not isinstance(envelope, dict) or set(envelope) != set(_ENVELOPE_KEYS):
        raise SubtextError("bad_envelope", "the envelope must have exactly the keys " + ", ".join(_ENVELOPE_KEYS))
    v = envelope["v"]
    if type(v) is not int or v != 1:
        raise SubtextError("bad_envelope", "unsupported envelope version")
    if envelope["alg"] != ALG:
        raise SubtextError("bad_envelope", "unsupported envelope algorithm")
    fields = {name: b64url_decode(envelope[name], name) for name in ("epk", "salt", "iv", "ct")}
    for name, size in (("epk", 32), ("salt", 16), ("iv", 12)):
        if len(fields[name]) != size:
            raise SubtextError("bad_envelope", f"envelope {name} must be {size} bytes")
    if len(fields["ct"]) < 16:
        raise SubtextError("bad_envelope", "envelope ct is shorter than the 16-byte tag")
    return fields["epk"], fields["salt"], fields["iv"], fields["ct"]


def open_envelope(
    envelope: dict | bytes,
    recipient_private_key: X25519PrivateKey,
    *,
    direction: str,
    jti: str,
    node_id: str,
) -> bytes:
    """The plaintext of an envelope encrypted to this key for this direction, jti and node; SubtextError otherwise."""
    associated = aad(direction, jti, node_id)
    if not isinstance(recipient_private_key, X25519PrivateKey):
        raise ValueError("recipient key must be an X25519PrivateKey")
    epk, salt, iv, ct = validate_envelope(parse_envelope(envelope) if isinstance(envelope, bytes) else envelope)
    try:
        shared = recipient_private_key.exchange(X25519PublicKey.from_public_bytes(epk))
    except ValueError as exc:  # OpenSSL refuses the all-zero secret of a low-order point
        raise SubtextError("bad_key", "the envelope's ephemeral key is unusable") from exc
    try:
        return AESGCM(derive_key(shared, salt)).decrypt(iv, ct, associated)
    except InvalidTag as exc:
        raise SubtextError("decrypt_failed", "the envelope does not open with this key, token and node") from exc


# ---- request and response plaintexts -------------------------------------------------------------------------


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _loads(plaintext: bytes):
    try:
        return json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SubtextError("bad_plaintext", "the decrypted text is not UTF-8 JSON") from exc


def check_request(obj) -> dict:
    """`{"messages": [{"role", "content": str}, ...], "params": {allowlisted name: value}}`; values of params are
    left to the plain-mode validation (node_agent.chat), which the agent runs on the opened request."""

    def bad(message: str) -> SubtextError:
        return SubtextError("bad_plaintext", "subtext request: " + message)

    if not isinstance(obj, dict) or set(obj) != {"messages", "params"}:
        raise bad('must be an object with exactly "messages" and "params"')
    messages, params = obj["messages"], obj["params"]
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise bad(f'messages[{i}] must have exactly "role" and "content"')
        if message["role"] not in ROLES:
            raise bad(f"messages[{i}].role must be one of system, user, assistant")
        if not isinstance(message["content"], str):
            raise bad(f"messages[{i}].content must be a string")
    if not isinstance(params, dict):
        raise bad("params must be an object")
    unknown = sorted(set(params) - SAMPLING_PARAMS)
    if unknown:
        raise bad("unknown parameter " + ", ".join(unknown))
    return obj


def check_response(obj) -> dict:
    """`{"content": str, "finish_reason": str|null, "usage": {}, "luckrig": {}, "moderation": {}}`, exactly."""

    def bad(message: str) -> SubtextError:
        return SubtextError("bad_plaintext", "subtext response: " + message)

    if not isinstance(obj, dict) or set(obj) != {"content", "finish_reason", "usage", "luckrig", "moderation"}:
        raise bad("must have exactly content, finish_reason, usage, luckrig, moderation")
    if not isinstance(obj["content"], str):
        raise bad("content must be a string")
    if obj["finish_reason"] is not None and not isinstance(obj["finish_reason"], str):
        raise bad("finish_reason must be a string or null")
    for name in ("usage", "luckrig", "moderation"):
        if not isinstance(obj[name], dict):
            raise bad(f"{name} must be an object")
    return obj


def seal_request(
    messages: list[dict],
    params: dict,
    *,
    node_public_pem: str,
    jti: str,
    node_id: str,
    ephemeral_private: X25519PrivateKey | bytes | None = None,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> str:
    """The chat content of the single user message of a subtext request (the whole conversation is inside)."""
    plaintext = _dumps(check_request({"messages": messages, "params": params}))
    envelope = seal(
        plaintext,
        node_public_pem,
        direction="request",
        jti=jti,
        node_id=node_id,
        ephemeral_private=ephemeral_private,
        salt=salt,
        iv=iv,
    )
    return encode_message(envelope_bytes(envelope), REQUEST_COVER)


def open_request(content: str, node_private_key: X25519PrivateKey, *, jti: str, node_id: str) -> dict:
    """`{"messages", "params"}` from a user message's content; SubtextError for anything unusable."""
    plaintext = open_envelope(find_and_decode(content), node_private_key, direction="request", jti=jti, node_id=node_id)
    return check_request(_loads(plaintext))


def seal_response(
    content: str,
    finish_reason: str | None,
    usage: dict,
    luckrig: dict,
    moderation: dict,
    *,
    user_public_pem: str,
    jti: str,
    node_id: str,
    ephemeral_private: X25519PrivateKey | bytes | None = None,
    salt: bytes | None = None,
    iv: bytes | None = None,
) -> str:
    """The content of the one content chunk (or message) of a subtext response, encrypted to the taster's key."""
    plaintext = _dumps(
        check_response(
            {
                "content": content,
                "finish_reason": finish_reason,
                "usage": usage,
                "luckrig": luckrig,
                "moderation": moderation,
            }
        )
    )
    envelope = seal(
        plaintext,
        user_public_pem,
        direction="response",
        jti=jti,
        node_id=node_id,
        ephemeral_private=ephemeral_private,
        salt=salt,
        iv=iv,
    )
    return encode_message(envelope_bytes(envelope), RESPONSE_COVER)


def open_response(content: str, user_private_key: X25519PrivateKey, *, jti: str, node_id: str) -> dict:
    """`{"content", "finish_reason", "usage", "luckrig", "moderation"}` from a response's content."""
    plaintext = open_envelope(
        find_and_decode(content), user_private_key, direction="response", jti=jti, node_id=node_id
    )
    return check_response(_loads(plaintext))

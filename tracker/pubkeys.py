"""X25519 public keys (node keys and tasters' keys in public-key mode): validation and fingerprints."""

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

MAX_PEM_CHARS = 1000


class InvalidPublicKey(ValueError):
    pass


def load_x25519_public_pem(pem: str) -> X25519PublicKey:
    if not isinstance(pem, str) or len(pem) > MAX_PEM_CHARS:
        raise InvalidPublicKey("must be an X25519 public key in SPKI PEM")
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError) as exc:
        raise InvalidPublicKey("must be an X25519 public key in SPKI PEM") from exc
    if not isinstance(key, X25519PublicKey):
        raise InvalidPublicKey("must be an X25519 key (found another key type)")
    return key


def canonical_pem(key: X25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def fingerprint(key: X25519PublicKey) -> str:
    """`sha256:` + base64url-without-padding(SHA-256(SPKI DER)): 43 characters after the prefix."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def validate(pem: str) -> tuple[str, str]:
    """(canonical PEM, fingerprint) of a valid key, else InvalidPublicKey."""
    key = load_x25519_public_pem(pem)
    return canonical_pem(key), fingerprint(key)

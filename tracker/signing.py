"""The tracker's Ed25519 signing keys, tasting-token JWTs and tunnel tickets (pure: files and crypto, no ORM).

The current key comes from TRACKER_SIGNING_KEY_FILE, or is generated once into data/ (mode 0600; linked into
place whole, so that several processes starting together agree on one key and none reads half of it).
Rotation: a key named in TRACKER_NEXT_SIGNING_KEY_FILE is published before it signs; keys in
TRACKER_RETIRED_SIGNING_KEY_FILES stay published until the last token they signed has expired."""

import base64
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
TOKEN_TYPE = "luckrig-tasting+jwt"  # noqa: S105 - a JWT "typ", not a secret
# A relayed node's agent shows a tunnel ticket to its relay. Its own `typ`, so that neither kind of JWT can be
# passed off as the other (an agent or a relay that checks `typ` refuses the wrong one).
TUNNEL_TYPE = "luckrig-tunnel+jwt"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    public_pem: str


@dataclass(frozen=True)
class Keyring:
    current: SigningKey
    upcoming: SigningKey | None
    retired: tuple[SigningKey, ...]


def kid_for(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "lr-" + base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()[:16]


def _load(path: Path) -> SigningKey:
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path.name} is not an Ed25519 private key")
    public = private.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return SigningKey(kid_for(public), private, pem)


def generate_key_file(path: Path) -> None:
    """Write a new Ed25519 key in PKCS#8 PEM, mode 0600; keep an existing file (first writer wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written whole under a name of its own, then linked into place: link() fails if the file exists, and a
    # process that finds it (gunicorn's workers and Daphne start together) never reads a half-written key.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@lru_cache(maxsize=4)
def load_keyring(current_file: str, next_file: str, retired_files: tuple[str, ...]) -> Keyring:
    current_path = Path(current_file)
    if not current_path.exists():
        generate_key_file(current_path)
    return Keyring(
        current=_load(current_path),
        upcoming=_load(Path(next_file)) if next_file else None,
        retired=tuple(_load(Path(f)) for f in retired_files),
    )


def sign(keyring: Keyring, claims: dict, *, typ: str = TOKEN_TYPE) -> str:
    key = keyring.current
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ})


def sign_ticket(keyring: Keyring, claims: dict) -> str:
    """A tunnel ticket: `sub` the node, `aud` the relay it may open a tunnel on."""
    return sign(keyring, claims, typ=TUNNEL_TYPE)

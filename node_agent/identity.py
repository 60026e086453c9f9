"""The agent's own Ed25519 identity key (issue 16): made once in the config dir (`agent_ed25519.pem`, PKCS#8,
mode 0600), never sent anywhere. Its public half goes into the LAN announcement (node_agent/lan.py) and is what
pairing will pin; the fingerprint (sha256 of the SPKI DER, as for the X25519 node key in node_agent/keys.py) is
what people compare.

It is a different key from the X25519 node key of public-key mode: that one encrypts tasters' prompts and is
optional; this one names the machine on the LAN and will sign its requests to paired devices."""

import base64
import contextlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from node_agent import keys

FILE_NAME = "agent_ed25519.pem"


@dataclass(frozen=True)
class Identity:
    private_key: Ed25519PrivateKey
    path: Path

    @property
    def public_raw(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_b64(self) -> str:
        """The public key as unpadded base64url (43 characters): short enough for one TXT string."""
        return b64(self.public_raw)

    @property
    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    @property
    def fingerprint(self) -> str:
        return keys.fingerprint_of_public_pem(self.public_pem)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from its unpadded base64url raw form; ValueError for anything else."""
    if not isinstance(text, str) or len(text) != 43:
        raise ValueError("an Ed25519 public key is 43 characters of base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc
    if b64(raw) != text:  # non-canonical encodings name the same key twice
        raise ValueError("not canonical base64url")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint_of(public: Ed25519PublicKey) -> str:
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return keys.fingerprint_of_public_pem(pem)


def load_or_create(config_dir: Path) -> Identity:
    """The agent's identity key from `config_dir`, made on first use. A file that is not an Ed25519 private key is
    an error, never silently replaced: a new key would make this machine a stranger to every device that pinned it."""
    path = Path(config_dir) / FILE_NAME
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            keys.write_private_key(path, Ed25519PrivateKey.generate())
    return load_existing(config_dir)


def load_existing(config_dir: Path) -> Identity:
    """The agent's identity key if there is one (OSError if not): for showing it, never making it."""
    path = Path(config_dir) / FILE_NAME
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Identity(private, path)

"""The node's X25519 key pair for public-key tasting mode: PKCS#8 private key (file mode 0600), SPKI public key,
and the fingerprint tasters compare out of band."""

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey


def fingerprint_of_public_pem(public_pem: str) -> str:
    key = serialization.load_pem_public_key(public_pem.encode())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def generate(private_path: Path) -> tuple[str, str]:
    """Create a key pair; refuses to overwrite an existing private key. Returns (public PEM, fingerprint)."""
    private = X25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return public_pem, fingerprint_of_public_pem(public_pem)


def load_public_pem(private_path: Path) -> str:
    private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(private, X25519PrivateKey):
        raise ValueError(f"{private_path} is not an X25519 private key")
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

"""The node's X25519 key pair for public-key tasting mode: PKCS#8 private key (file mode 0600), SPKI public key,
and the fingerprint tasters compare out of band."""

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey


def public_key_from_pem(public_pem: str) -> X25519PublicKey:
    """An X25519 public key from SPKI PEM; ValueError for anything else (another key type, garbage)."""
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    if not isinstance(key, X25519PublicKey):
        raise ValueError("not an X25519 public key")
    return key


def public_pem_of(key: X25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_private_key(private_path: Path) -> X25519PrivateKey:
    """The node's private key from its PKCS#8 PEM file (read once at start, kept in memory)."""
    private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(private, X25519PrivateKey):
        raise ValueError(f"{private_path} is not an X25519 private key")
    return private


def fingerprint_of_public_pem(public_pem: str) -> str:
    key = serialization.load_pem_public_key(public_pem.encode())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def generate(private_path: Path) -> tuple[str, str]:
    """Create a key pair; refuses to overwrite an existing private key. Returns (public PEM, fingerprint)."""
    private = X25519PrivateKey.generate()
    write_private_key(private_path, private)
    public_pem = public_pem_of(private.public_key())
    return public_pem, fingerprint_of_public_pem(public_pem)


def write_private_key(private_path: Path, private) -> None:
    """Write a private key as PKCS#8 PEM, mode 0600 from the start; refuses to overwrite an existing file (losing
    a key would change who this machine is to everyone who knows it)."""
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_public_pem(private_path: Path) -> str:
    return public_pem_of(load_private_key(private_path).public_key())

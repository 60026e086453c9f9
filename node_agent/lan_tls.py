"""TLS for the local radius (issue 16), pinned to the rig's Ed25519 identity key (node_agent/identity.py).

A TXT record is a hint of where a key is, never proof: anyone on the LAN can announce a paired rig's `pk` at its own
address. So a rig pinned `--visibility local` serves HTTPS with a self-signed certificate made at start from its
identity key (TLS 1.3 only; nothing else is in the certificate that matters), and announces `tls=1`. The router
(and any client sending a paired device's signed requests) trusts no CA: once the handshake is done, and before a
byte of the request is written, it checks that the certificate's public key is the key it pinned in paired.json.
The handshake itself proves the server holds that key's private half (TLS 1.3's CertificateVerify is signed with
it), so an impostor cannot present the rig's certificate.

aiohttp runs a `Fingerprint`'s `check(transport)` on the new TLS transport before the request is written (connector
.py, `_create_direct_connection`), closes the transport when it raises, and never pools it; PinnedKey is such a
check on the key rather than on the certificate's hash (the certificate is made anew at each start)."""

import datetime
import hashlib
import ssl
import tempfile
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from node_agent import identity

CERT_DAYS = 3650  # the pin is on the key, not on the certificate's dates; nothing checks them


def certificate(agent: identity.Identity) -> x509.Certificate:
    """A self-signed certificate for the agent's identity key (Ed25519 signs it, as TLS 1.3 allows)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "luckrig rig")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(agent.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .sign(agent.private_key, None)
    )


def server_context(agent: identity.Identity) -> ssl.SSLContext:
    """The rig's server context: TLS 1.3 minimum, its certificate made now. The private key is read from the
    identity's own file (Python's ssl loads only files); the certificate, public, goes through a temporary one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with tempfile.TemporaryDirectory(prefix="luckrig-tls-") as folder:
        cert_file = Path(folder) / "cert.pem"
        cert_file.write_bytes(certificate(agent).public_bytes(serialization.Encoding.PEM))
        context.load_cert_chain(cert_file, keyfile=agent.path)
    return context


class KeyMismatch(aiohttp.ServerFingerprintMismatch):
    """The server at a paired rig's announced address does not hold the rig's pinned key."""


class PinnedKey(aiohttp.Fingerprint):
    """aiohttp's `ssl=` for a paired rig: TLS with no CA, the server's certificate key checked against the pinned
    raw Ed25519 key before the request is written. Equal for equal keys, so pooled connections are reused."""

    def __init__(self, public_b64: str):
        self.public_raw = identity.public_key_from_b64(public_b64).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        super().__init__(hashlib.sha256(self.public_raw).digest())

    def __eq__(self, other) -> bool:
        return isinstance(other, PinnedKey) and other.public_raw == self.public_raw

    def __hash__(self) -> int:
        return hash((PinnedKey, self.public_raw))

    def check(self, transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        got = certificate_key(der) if der else None
        if got != self.public_raw:
            host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
            raise KeyMismatch(self.fingerprint, hashlib.sha256(got or b"").digest(), host, port)


def certificate_key(der: bytes) -> bytes | None:
    """The raw Ed25519 key of a DER certificate; None when it is anything else."""
    try:
        public = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if not isinstance(public, Ed25519PublicKey):
        return None
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

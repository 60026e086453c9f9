"""Paired devices (issue 16): the Ed25519 keys this machine has pinned (`<config-dir>/paired.json`), and the
signature a paired device puts on its local-mode requests, checked here.

A signed request carries four headers:

    X-LuckRig-Key        the signer's key fingerprint (sha256:..., as identity.fingerprint_of)
    X-LuckRig-Timestamp  unix seconds when it was signed
    X-LuckRig-Nonce      16 to 64 base64url characters, fresh for every request
    X-LuckRig-Signature  unpadded base64url Ed25519 signature of the string below

    luckrig-request-v1 \\n METHOD \\n path?query \\n timestamp \\n nonce \\n sha256(body) hex \\n recipient fingerprint

The recipient's fingerprint is in it so that a request signed for one of your rigs cannot be replayed to another
one that pinned the same device. The agent refuses a timestamp more than WINDOW seconds away from its clock and a
nonce it has seen within that window (each one is remembered for twice the window, so a request cannot outlive
its nonce). The nonces seen are kept in `<config-dir>/seen_nonces` too (NonceLog), written before the request is
served, so that the agent restarted within the window still refuses a request it served. TLS is not part of it:
the body travels in the clear on the LAN, and the signature proves who sent it and that it was not changed,
nothing more."""

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node_agent import identity
from node_agent.errors import AgentError

FILE_NAME = "paired.json"
NONCES_FILE = "seen_nonces"
COMPACT_AT = 4096  # lines in seen_nonces before it is rewritten with the live entries only (when they are fewer)
WINDOW = 60  # seconds of clock difference a signed request may have
MAX_NONCES = 100_000  # a flood of signed requests must not grow the replay cache without bound
HEADER_KEY, HEADER_TIME = "X-LuckRig-Key", "X-LuckRig-Timestamp"
HEADER_NONCE, HEADER_SIGNATURE = "X-LuckRig-Nonce", "X-LuckRig-Signature"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() would let "²" through to int()
MAX_NAME = 64


@dataclass(frozen=True)
class Device:
    public_key: str  # 43 characters of base64url, the raw Ed25519 key
    fingerprint: str
    name: str
    paired_at: str


def clean_name(name: str) -> str:
    """A device's name as shown and stored: printable, one line, at most MAX_NAME characters."""
    kept = "".join(ch for ch in str(name) if ch.isprintable()).strip()
    return kept[:MAX_NAME] or "device"


class PairedStore:
    """`paired.json` in the config dir, mode 0600, written whole by rename. Read again whenever the file changed,
    so `luckrig-node unpair` takes effect on a running agent's next request."""

    def __init__(self, config_dir: Path):
        self.path = Path(config_dir) / FILE_NAME
        self._seen: tuple | None = None
        self._devices: dict[str, Device] = {}

    def _stamp(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def devices(self) -> dict[str, Device]:
        """fingerprint → device. A file that cannot be read pins nobody (and says so by raising ValueError once
        for the commands; the agent treats it as empty)."""
        stamp = self._stamp()
        if stamp != self._seen:
            self._devices = self._read() if stamp is not None else {}
            self._seen = stamp
        return self._devices

    def _read(self) -> dict[str, Device]:
        try:
            data = json.loads(self.path.read_text())
            found = {}
            for item in data.get("devices", []):
                key = identity.public_key_from_b64(item["public_key"])
                fingerprint = identity.fingerprint_of(key)  # computed, never trusted from the file
                found[fingerprint] = Device(
                    item["public_key"], fingerprint, clean_name(item.get("name", "")), str(item.get("paired_at", ""))
                )
            return found
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.path} is not a list of paired devices: {exc}") from exc

    def _write(self, devices: dict[str, Device]) -> None:
        body = {
            "devices": [
                {"public_key": d.public_key, "fingerprint": d.fingerprint, "name": d.name, "paired_at": d.paired_at}
                for d in devices.values()
            ]
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(f".{FILE_NAME}.{secrets.token_hex(4)}")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(body, out, indent=2)
        os.replace(part, self.path)
        self._seen = None

    def pin(self, public_key: str, name: str) -> Device:
        """Pin `public_key` (base64url) under `name`; pairing the same key again renames it."""
        fingerprint = identity.fingerprint_of(identity.public_key_from_b64(public_key))
        devices = dict(self.devices())
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        devices[fingerprint] = Device(public_key, fingerprint, clean_name(name), when)
        self._write(devices)
        return devices[fingerprint]

    def find(self, which: str) -> list[Device]:
        """The devices `which` names: a whole fingerprint, or a name."""
        devices = self.devices()
        if which in devices:
            return [devices[which]]
        return [d for d in devices.values() if d.name == which]

    def unpair(self, which: str) -> Device:
        """Forget the one device `which` names (fingerprint or name); ValueError when none or several match."""
        found = self.find(which)
        if not found:
            raise ValueError(f"no paired device is {which!r} (luckrig-node pair --list)")
        if len(found) > 1:
            raise ValueError(f"{len(found)} paired devices are named {which!r}: name one by its fingerprint")
        devices = {k: v for k, v in self.devices().items() if k != found[0].fingerprint}
        self._write(devices)
        return found[0]


# --- signing requests -------------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def signed_string(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes, recipient: str) -> bytes:
    lines = ["luckrig-request-v1", method.upper(), path_qs, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    return "\n".join([*lines, recipient]).encode()


def sign_headers(
    agent: identity.Identity, method: str, path_qs: str, body: bytes, *, recipient: str, now: float | None = None
) -> dict[str, str]:
    """The headers that make a request from this machine one a paired rig (`recipient`, its fingerprint) accepts."""
    timestamp, nonce = str(int(time.time() if now is None else now)), secrets.token_urlsafe(18)
    signature = agent.private_key.sign(signed_string(method, path_qs, timestamp, nonce, body, recipient))
    return {
        HEADER_KEY: agent.fingerprint,
        HEADER_TIME: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: _b64(signature),
    }


def is_signed(headers) -> bool:
    return any(name in headers for name in (HEADER_KEY, HEADER_SIGNATURE, HEADER_NONCE, HEADER_TIME))


def _refused(code: str, message: str) -> AgentError:
    return AgentError(401, code, message)


class NonceLog:
    """The nonces of signed requests seen here, for as long as a request with them could still be accepted: in
    memory, and appended to `<config-dir>/seen_nonces` (mode 0600, one `until sha256-prefix` line each) before the
    request is served. Loaded at start keeping only entries not yet expired, so a restarted agent refuses them too;
    rewritten with the live entries when the file grows. It is per config dir, as paired.json and the key are: two
    agents never share one unless they share the whole identity.

    No fsync: the risk is the agent restarted (a crash, `serve` run again), and a write() the kernel returned from
    survives the process. Only a power loss within the seconds before the kernel writes it back, with the machine up
    and serving again inside the 60 s window, could lose one; an fsync per request would cost a disk flush each.
    A file that cannot be read or written refuses the request (503 `nonce_store_unavailable`): never served
    unrecorded."""

    def __init__(self, path: Path, *, clock=time.time):
        self.path, self.clock = Path(path), clock
        self.seen: dict[str, float] = {}  # sha256-prefix of the nonce → until
        self.lines = 0
        self.broken: OSError | None = None
        self._load()

    @staticmethod
    def _key(nonce: str) -> str:
        return hashlib.sha256(nonce.encode()).hexdigest()[:32]

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            self.broken = exc
            return
        now, lines = self.clock(), text.splitlines()
        for line in lines:
            until, _, key = line.partition(" ")
            try:
                if float(until) >= now and len(key) == 32:
                    self.seen[key] = float(until)
            except ValueError:
                continue  # a line cut short by a crash: the ones around it still count
        self.broken, self.lines = None, len(lines)

    def _unavailable(self, exc: OSError) -> AgentError:
        return AgentError(
            503,
            "nonce_store_unavailable",
            f"This rig cannot record signed requests ({NONCES_FILE} in its config dir: {exc.strerror or exc}); "
            "it serves none until it can.",
        )

    def __contains__(self, nonce: str) -> bool:
        return self._key(nonce) in self.seen

    def __len__(self) -> int:
        return len(self.seen)

    def prune(self, now: float) -> None:
        for key in [k for k, until in self.seen.items() if until < now]:
            del self.seen[key]

    def record(self, nonce: str, until: float) -> None:
        """Remember `nonce` until `until`, on disk first; AgentError 503 when that cannot be written."""
        if self.broken is not None:
            self._load()  # a store fixed meanwhile is used again
            if self.broken is not None:
                raise self._unavailable(self.broken)
        key = self._key(nonce)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                line = f"{until:.0f} {key}\n".encode()
                if os.write(fd, line) != len(line):  # one small append: whole, or refused
                    raise OSError(0, "short write")
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        self.seen[key] = until
        self.lines += 1
        if self.lines > COMPACT_AT and self.lines > 2 * len(self.seen):
            self._compact()

    def _compact(self) -> None:
        part = self.path.with_name(f".{NONCES_FILE}.{secrets.token_hex(4)}")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.writelines(f"{until:.0f} {key}\n" for key, until in self.seen.items())
            os.replace(part, self.path)
            self.lines = len(self.seen)
        except OSError:
            part.unlink(missing_ok=True)  # the long file still holds every entry: compacting can wait


class SignatureChecker:
    """Checks the signature headers of requests to this agent (whose fingerprint is `own_fingerprint`) against
    the pinned keys, with a replay cache of nonces kept next to paired.json (NonceLog)."""

    def __init__(self, store: PairedStore, own_fingerprint: str, *, clock=time.time):
        self.store, self.own_fingerprint, self.clock = store, own_fingerprint, clock
        self.nonces = NonceLog(store.path.parent / NONCES_FILE, clock=clock)

    def _pinned(self) -> dict[str, Device]:
        try:
            return self.store.devices()
        except ValueError:
            return {}  # an unreadable paired.json pins nobody (the commands say why)

    def verify(self, method: str, path_qs: str, headers, body: bytes) -> Device:
        """The paired device that signed this request, or AgentError 401: `invalid_signature` (missing or
        malformed headers, a signature that does not verify), `not_paired` (a key this machine has not pinned),
        `stale_signature` (timestamp outside the window), `replayed_signature` (a nonce already used); 503
        `nonce_store_unavailable` when the nonce cannot be recorded."""
        values = [headers.get(name) for name in (HEADER_KEY, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)]
        if not all(values):
            raise _refused(
                "invalid_signature",
                f"A signed request needs all of {HEADER_KEY}, {HEADER_TIME}, {HEADER_NONCE} and {HEADER_SIGNATURE}.",
            )
        fingerprint, timestamp, nonce, signature = values
        if not _TIMESTAMP.fullmatch(timestamp) or not _NONCE.fullmatch(nonce) or len(signature) != 86:
            raise _refused("invalid_signature", "The request's signature headers are malformed.")
        device = self._pinned().get(fingerprint)
        if device is None:
            raise _refused("not_paired", "This rig has not paired with the key that signed the request.")
        try:
            raw = base64.urlsafe_b64decode(signature + "==")
            key: Ed25519PublicKey = identity.public_key_from_b64(device.public_key)
            key.verify(raw, signed_string(method, path_qs, timestamp, nonce, body, self.own_fingerprint))
        except (InvalidSignature, ValueError, binascii.Error) as exc:
            raise _refused("invalid_signature", "The request's signature does not verify.") from exc
        now = self.clock()
        if abs(now - int(timestamp)) > WINDOW:
            raise _refused("stale_signature", f"The request was signed more than {WINDOW} s from this rig's clock.")
        self.nonces.prune(now)
        if nonce in self.nonces:
            raise _refused("replayed_signature", "This signed request was already used.")
        if len(self.nonces) >= MAX_NONCES:
            raise AgentError(503, "busy", "Too many signed requests in the last minutes; try again shortly.")
        self.nonces.record(nonce, now + 2 * WINDOW)
        return device

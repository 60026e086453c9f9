"""Pairing two devices on the LAN (issue 16): `luckrig-node pair` on device A shows a code, `luckrig-node pair CODE`
on device B finds A and the two exchange their Ed25519 identity keys (node_agent/identity.py), then each pins the
other's key (node_agent/paired.py) once its user has compared a six-digit code.

A runs a short-lived listener of its own (not the agent: pairing then works whether or not a rig is serving, and
nothing of it stays open after): HTTP on --port (8791), announced over mDNS as `_luckrig-pair._tcp.local.` on the
LAN interface. The exchange, both messages over plain HTTP:

    B → A  GET  /v1/pair   A's public key and name (a hint, proven below), a fresh `session` id and A's
                           `commitment` = SHA-256 over a fresh random nonce Na and A's key (Na stays on A)
    B → A  POST /v1/pair   B's key, name, its own random nonce Nb, the session and commitment, a proof and B's
                           signature
    A → B  200             A's key, name, Na revealed, a proof and A's signature

The proof is an HMAC, keyed by K = PBKDF2-SHA256(code, salt = "luckrig-pair-v2" + A's key), over the role, both
keys, the session, the commitment, the nonces known at that point and the names; each signature is over the same
transcript with the sender's identity key. So only someone who knows the code can get their key pinned on A (B's
proof), only the device B meant can answer (A's proof and signature), and each side holds the private key it hands
over. B checks that Na is what A committed to. The code is single use, lives CODE_TTL seconds and is burned after
MAX_ATTEMPTS wrong proofs. The comparison code (HMAC with K over both keys and both nonces) is the same on both
screens only when both hold the same pair of keys.

Why the commitment (as Bluetooth's numeric comparison): someone who knows the code (read over a shoulder) and sits
between B and A pairs with each under a key of its own, and needs both screens to show the same six digits. As
the listener toward B it must commit to its Na before it sees Nb, and cannot change Na after (B checks the
commitment); as the client toward A it must send its Nb before A reveals Na. Either way the digits on that side are
random to it once it can no longer change its input: a 1 in 10**6 chance that they match the other side's, and
otherwise the two screens show different codes. (With v1, the digits were fixed by the code and the keys, so it
could try keys until A would show what B showed.) Each GET opens a session, at most MAX_SESSIONS at once per
listener (the oldest is dropped), all ending with the code: the first good POST spends the code and them.

A v1 peer is told, not crashed on: a v1 request gets 400 `unsupported_protocol`, and `pair CODE` facing a v1
listener says so. Limits: in docs/local-mode.md ("Pairing")."""

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from cryptography.exceptions import InvalidSignature

from node_agent import identity, paired
from node_agent.errors import AgentError

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read aloud or typed without confusion
CODE_LENGTH = 8  # 31**8, about 2**39.6
CODE_TTL = 300
MAX_ATTEMPTS = 5
KDF_ITERATIONS = 200_000  # a guess at the code costs this many HMACs: cracking a sniffed proof takes months
PORT = 8791
PROTOCOL = "luckrig-pair-v2"
MAX_SESSIONS = 16  # open commitments per listener: each GET opens one (the oldest dropped), a good POST ends all
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # a nonce or a session id
_DIGEST = re.compile(r"[0-9a-f]{64}")


class PairingError(Exception):
    """Why pairing did not happen (said to the user as it is); `code` is the listener's error code when it refused
    (wrong_code, code_expired, code_used, wrong_device, ...), else empty."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str:
    """The code as typed (any case, with dashes or spaces) in its canonical form; ValueError if it cannot be one."""
    code = "".join(str(text).split()).replace("-", "").upper()
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
        raise ValueError(f"a pairing code is {CODE_LENGTH} characters like ABCD-EFGH (no 0, O, 1, I or L)")
    return code


def display_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def code_key(code: str, a_public: str) -> bytes:
    """K: slow to derive, salted with A's key so that no table of codes can be made in advance."""
    return hashlib.pbkdf2_hmac("sha256", code.encode(), f"{PROTOCOL}\n{a_public}".encode(), KDF_ITERATIONS)


def transcript(
    role: str, a_public: str, b_public: str, session: str, commitment: str, nonces: tuple, a_name: str, b_name: str
) -> bytes:
    """What a proof and a signature cover: B's has `nonces` = (Nb,), A's (Nb, Na)."""
    return json.dumps([PROTOCOL, role, a_public, b_public, session, commitment, *nonces, a_name, b_name]).encode()


def commitment_of(nonce_a: str, a_public: str) -> str:
    """A's commitment to Na, sent before it sees Nb and checked by B once Na is revealed."""
    return hashlib.sha256(json.dumps([PROTOCOL, "commit", a_public, nonce_a]).encode()).hexdigest()


def proof(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def comparison_code(key: bytes, a_public: str, b_public: str, nonce_a: str, nonce_b: str) -> str:
    """Six digits both screens show: equal only for the same code, the same two keys and the same two nonces, of
    which neither side could choose the other's after seeing its own (see the module docstring)."""
    message = json.dumps(["compare", a_public, b_public, nonce_a, nonce_b]).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"


def protocol_refusal(protocol) -> str:
    """The message for a peer that speaks another version of this protocol; empty when `protocol` is none."""
    if isinstance(protocol, str) and protocol.startswith("luckrig-pair-") and protocol != PROTOCOL:
        shown = protocol[:40].encode("ascii", "replace").decode()
        return f"The other device speaks {shown}, this one {PROTOCOL}: update luckrig-node on the older one."
    return ""


def _sign(agent: identity.Identity, message: bytes) -> str:
    return paired._b64(agent.private_key.sign(message))


def _verify(public: str, signature: str, message: bytes) -> bool:
    try:
        identity.public_key_from_b64(public).verify(base64.urlsafe_b64decode(str(signature) + "=="), message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Peer:
    """The other device, as pairing proved it: its key, fingerprint, name, and the comparison code."""

    public_key: str
    fingerprint: str
    name: str
    comparison: str


def default_name() -> str:
    return paired.clean_name(socket.gethostname())


# --- device A: the listener --------------------------------------------------------------------------------------


@dataclass
class PairingSession:
    """One code, waiting for one device. `hello` answers B's GET (opening a session with A's commitment), `handle`
    answers B's POST; `done` resolves with the peer."""

    agent: identity.Identity
    name: str
    code: str = field(default_factory=new_code)
    clock: object = time.monotonic
    started: float = 0.0
    attempts: int = 0
    used: bool = False
    done: asyncio.Future | None = None
    sessions: dict = field(default_factory=dict)  # session id → Na, oldest first

    def __post_init__(self):
        self.name = paired.clean_name(self.name)  # as B will read it back: the transcripts must agree
        self.started = self.clock()
        self.key = code_key(self.code, self.agent.public_b64)

    def expired(self) -> bool:
        return self.clock() - self.started > CODE_TTL

    def hello(self) -> dict:
        """A's key and name, and a new session: a fresh Na, committed to and kept here until the POST reveals it."""
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]  # a flood of GETs crowds out old sessions, never grows
        session, nonce_a = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
        self.sessions[session] = nonce_a
        return {
            "protocol": PROTOCOL,
            "public_key": self.agent.public_b64,
            "name": self.name,
            "session": session,
            "commitment": commitment_of(nonce_a, self.agent.public_b64),
        }

    def handle(self, body) -> tuple[dict, Peer]:
        """B's request → (A's answer, the peer); AgentError for every refusal."""
        if self.used:
            raise AgentError(410, "code_used", "This pairing code was already used: start pairing again.")
        if self.expired():
            raise AgentError(410, "code_expired", "This pairing code has expired: start pairing again.")
        if not isinstance(body, dict):
            raise AgentError(400, "invalid_pairing", f"Expected a {PROTOCOL} request.")
        if refusal := protocol_refusal(body.get("protocol")):
            raise AgentError(400, "unsupported_protocol", refusal)
        if body.get("protocol") != PROTOCOL:
            raise AgentError(400, "invalid_pairing", f"Expected a {PROTOCOL} request.")
        b_public, nonce_b = body.get("public_key"), body.get("nonce")
        session, commitment = body.get("session"), body.get("commitment")
        b_name = paired.clean_name(body.get("name", ""))
        try:
            b_fingerprint = identity.fingerprint_of(identity.public_key_from_b64(b_public))
        except (ValueError, TypeError) as exc:
            raise AgentError(400, "invalid_pairing", "public_key is not an Ed25519 key in base64url.") from exc
        if not isinstance(nonce_b, str) or not _TOKEN.fullmatch(nonce_b):
            raise AgentError(400, "invalid_pairing", "nonce must be 16 to 64 base64url characters.")
        if not isinstance(session, str) or not _TOKEN.fullmatch(session):
            raise AgentError(400, "invalid_pairing", "session must be the one GET /v1/pair gave.")
        if not isinstance(commitment, str) or not _DIGEST.fullmatch(commitment):
            raise AgentError(400, "invalid_pairing", "commitment must be the one GET /v1/pair gave.")
        if body.get("peer") != self.agent.public_b64:
            raise AgentError(409, "wrong_device", "This request was meant for another device's key.")
        a_public = self.agent.public_b64
        nonce_a = self.sessions.get(session)  # revealed only below, after which the code and every session is spent
        said = transcript("B", a_public, b_public, session, commitment, (nonce_b,), self.name, b_name)
        # The proof first: a wrong one counts as a guess at the code, whatever the signature or the session.
        if not hmac.compare_digest(str(body.get("proof", "")), proof(self.key, said)):
            self.attempts += 1
            if self.attempts >= MAX_ATTEMPTS:
                self.used = True  # burned: no more guesses at this code
            raise AgentError(401, "wrong_code", "The pairing code is not the one this device shows.")
        if not _verify(b_public, body.get("signature"), said):
            raise AgentError(401, "invalid_signature", "The request is not signed by the key it carries.")
        if nonce_a is None or commitment_of(nonce_a, a_public) != commitment:
            raise AgentError(
                409, "unknown_session", "This pairing attempt is not open here (crowded out by others): try again."
            )
        self.used = True
        self.sessions.clear()  # the code is spent: no other session can be answered
        answer_transcript = transcript(
            "A", a_public, b_public, session, commitment, (nonce_b, nonce_a), self.name, b_name
        )
        comparison = comparison_code(self.key, a_public, b_public, nonce_a, nonce_b)
        answer = {
            "protocol": PROTOCOL,
            "public_key": a_public,
            "name": self.name,
            "nonce": nonce_a,
            "proof": proof(self.key, answer_transcript),
            "signature": _sign(self.agent, answer_transcript),
        }
        return answer, Peer(b_public, b_fingerprint, b_name, comparison)


def listener_app(session: PairingSession) -> web.Application:
    """The pairing listener's two routes; the first good POST resolves `session.done`."""
    from node_agent.server import errors_middleware

    if session.done is None:
        session.done = asyncio.get_running_loop().create_future()

    async def get(request: web.Request) -> web.Response:
        return web.json_response(session.hello())

    async def post(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deep for json: bad input, not a 500
            raise AgentError(400, "invalid_json", "The body is not valid JSON.") from exc
        answer, peer = session.handle(body)
        if not session.done.done():
            session.done.set_result(peer)
        return web.json_response(answer)

    app = web.Application(middlewares=[errors_middleware], client_max_size=16 * 1024)
    app.router.add_get("/v1/pair", get)
    app.router.add_post("/v1/pair", post)
    return app


# --- device B: asking -----------------------------------------------------------------------------------------------


async def request_pairing(
    http: aiohttp.ClientSession, base_url: str, code: str, agent: identity.Identity, name: str
) -> Peer:
    """Pair with the listener at `base_url` using `code`: the peer once A has proven it knows the code and holds
    its key; PairingError otherwise (AgentError's code in the message when A refused)."""
    try:
        code = normalize_code(code)
    except ValueError as exc:
        raise PairingError(str(exc)) from exc
    name = paired.clean_name(name)  # as A will read it: the transcripts must agree
    base = base_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=15)
    try:
        async with http.get(base + "/v1/pair", timeout=timeout) as resp:
            hello = await resp.json()
        if not isinstance(hello, dict):
            raise TypeError("not an object")
        if refusal := protocol_refusal(hello.get("protocol")):
            raise PairingError(f"unsupported_protocol: {refusal}", code="unsupported_protocol")
        a_public, session, commitment = hello["public_key"], hello["session"], hello["commitment"]
        a_name = paired.clean_name(hello.get("name", ""))
        identity.public_key_from_b64(a_public)
        if not isinstance(session, str) or not _TOKEN.fullmatch(session) or not _DIGEST.fullmatch(str(commitment)):
            raise ValueError("no session or commitment")
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise PairingError(f"{base} is not a pairing listener ({type(exc).__name__})") from exc
    key = await asyncio.to_thread(code_key, code, a_public)
    nonce_b = secrets.token_urlsafe(24)
    said = transcript("B", a_public, agent.public_b64, session, commitment, (nonce_b,), a_name, name)
    body = {
        "protocol": PROTOCOL,
        "public_key": agent.public_b64,
        "name": name,
        "nonce": nonce_b,
        "session": session,
        "commitment": commitment,
        "peer": a_public,
        "proof": proof(key, said),
        "signature": _sign(agent, said),
    }
    try:
        async with http.post(base + "/v1/pair", json=body, timeout=timeout) as resp:
            answer = await resp.json()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:
        raise PairingError(f"{base} did not answer the pairing request ({type(exc).__name__})") from exc
    if status != 200:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        code = str(error.get("code", "")) if isinstance(error, dict) else ""
        message = error.get("message", "refused") if isinstance(error, dict) else "refused"
        raise PairingError(f"{code or status}: {message}", code=code)
    nonce_a = answer.get("nonce") if isinstance(answer, dict) else None
    if not isinstance(nonce_a, str) or not _TOKEN.fullmatch(nonce_a) or commitment_of(nonce_a, a_public) != commitment:
        # A listener in the middle that chose its Na after seeing Nb, to steer the comparison code.
        raise PairingError("the device that answered did not reveal the nonce it committed to: nothing was pinned")
    expected = transcript("A", a_public, agent.public_b64, session, commitment, (nonce_b, nonce_a), a_name, name)
    if (
        answer.get("public_key") != a_public
        or not hmac.compare_digest(str(answer.get("proof", "")), proof(key, expected))
        or not _verify(a_public, answer.get("signature"), expected)
    ):
        raise PairingError("the device that answered did not prove it knows the code: nothing was pinned")
    fingerprint = identity.fingerprint_of(identity.public_key_from_b64(a_public))
    return Peer(a_public, fingerprint, a_name, comparison_code(key, a_public, agent.public_b64, nonce_a, nonce_b))

"""In-process machinery for the relay's protocol tests: the real relay app (relay/server.py) on a real socket, a
small tracker that publishes a key, signs tickets and tokens and records heartbeats and witness reports (the real
tracker's side is tested in tests/tracker/ and, end to end, in test_relayed_rigs.py), and a scripted agent that
speaks the tunnel's frames itself, so that every misbehaviour an agent could commit can be committed on purpose."""

import asyncio
import contextlib
import json
import secrets
import time
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node_agent import frames
from relay.config import RelayConfig
from relay.server import RELAY, build_app


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class FakeTracker:
    def __init__(self):
        self.key = Ed25519PrivateKey.generate()
        self.kid = "k-test"
        self.heartbeats: list[dict] = []
        self.reports: list[dict] = []
        self.relays = [{"relay_id": "r1", "public_url": "http://relay-one.test"}]
        self.up = True
        self.base = ""
        app = web.Application()
        app.router.add_get("/api/tracker-keys", self.keys)
        app.router.add_post("/api/relays/{relay_id}/heartbeat", self.heartbeat)
        app.router.add_post("/api/relays/{relay_id}/reports", self.report)
        app.router.add_post("/api/nodes/{node_id}/tunnel", self.tunnel)
        app.router.add_get("/api/relays/{relay_id}/catalog", self.catalog)
        app.router.add_post("/api/relays/{relay_id}/tokens", self.tokens)
        self.app = app
        # The gateway's side (docs/api.md, "Gateway"): the catalog's rigs and aliases, the token requests seen, a
        # refusal to give instead of a token ((status, body, headers)), and the tokens' lifetime and requests.
        self.rigs: list[dict] = []
        self.aliases: dict[str, str] = {}
        self.catalog_requests = 0
        self.token_requests: list[dict] = []
        self.token_refusal: tuple[int, dict, dict] | None = None
        self.token_ttl = 900
        self.token_max_requests = 3
        # What POST /api/nodes/<id>/tunnel answers: the relay to name (id → public URL in `relay_urls`), the
        # tickets' lifetime, or a refusal (status, code).
        self.assign = "r1"
        self.relay_urls: dict[str, str] = {}
        self.ticket_ttl = 900
        self.refuse: tuple[int, str] | None = None
        self.garbage = False  # answer 200 with a JSON array
        self.skew = 0  # seconds this tracker's clock is off
        self.tunnel_requests: list[dict] = []

    def _down(self):
        if not self.up:
            raise web.HTTPServiceUnavailable()

    async def keys(self, request):
        self._down()
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return web.json_response({"keys": [{"kid": self.kid, "alg": "EdDSA", "public_key_pem": pem.decode()}]})

    async def heartbeat(self, request):
        self._down()
        self.heartbeats.append(await request.json())
        return web.json_response({"schema_version": 1, "relays": self.relays})

    async def report(self, request):
        self._down()
        self.reports.append(await request.json())
        return web.json_response({"ok": True}, status=202)

    async def tunnel(self, request):
        self._down()
        self.tunnel_requests.append(await request.json())
        if self.garbage:
            return web.json_response([])
        if self.refuse:
            status, code = self.refuse
            return web.json_response({"schema_version": 1, "error": code, "code": code}, status=status)
        node_id = request.match_info["node_id"]
        url = self.relay_urls[self.assign]
        now = int(time.time()) + self.skew
        exp = now + self.ticket_ttl
        return web.json_response(
            {
                "schema_version": 1,
                "relay_id": self.assign,
                "relay_url": url,
                "tunnel_url": url.replace("http://", "ws://") + "/tunnel",
                "ticket": self.ticket(node_id, relay_id=self.assign, exp=exp, iat=now),
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp)),
            }
        )

    async def catalog(self, request):
        self._down()
        self.catalog_requests += 1
        return web.json_response({"schema_version": 1, "rigs": self.rigs, "aliases": self.aliases})

    async def tokens(self, request):
        self._down()
        body = await request.json()
        self.token_requests.append(body)
        if self.token_refusal:
            status, answer, headers = self.token_refusal
            return web.json_response(answer, status=status, headers=headers)
        exp = int(time.time()) + self.token_ttl
        token = self.token(body["node_id"], exp=exp, max_requests=self.token_max_requests)
        claims = jwt.decode(token, options={"verify_signature": False})
        return web.json_response(
            {
                "schema_version": 1,
                "token": token,
                "jti": claims["jti"],
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp)),
                "tier": "contributor" if body.get("contributor_key") else "limited",
                "limits": {"max_requests": self.token_max_requests, "max_output_tokens": 256},
            },
            status=201,
        )

    def rig(self, node_id: str, model: str = "smollm2-135m-instruct", **fields) -> dict:
        """A catalog entry (docs/api.md, "Gateway"), served by relay r1 unless `relay_id`/`endpoint_url` say."""
        queue = {"active": 0, "waiting": 0, "max_active": 1, "eta_sec": 0, **fields.pop("queue", {})}
        entry = {
            "node_id": node_id,
            "model": model,
            "model_key": model.lower(),
            "quantization": "Q4_K_M",
            "status": "available",
            "endpoint_url": f"{self.relay_urls.get('r1', '')}/n/{node_id}/v1",
            "relay_id": "r1",
            "queue": queue,
            "tok_per_sec_p50": None,
            "ttft_ms_p50": None,
            "rarity_score": 0.0,
            **fields,
        }
        self.rigs.append(entry)
        return entry

    def sign(self, claims: dict, typ: str, key=None, kid=None) -> str:
        now = int(time.time())
        body = {"iss": self.base, "iat": now, "exp": now + 900, "jti": secrets.token_hex(8), **claims}
        return jwt.encode(body, key or self.key, algorithm="EdDSA", headers={"kid": kid or self.kid, "typ": typ})

    def ticket(self, node_id: str, relay_id: str = "r1", **claims) -> str:
        return self.sign({"sub": node_id, "aud": relay_id, **claims}, "luckrig-tunnel+jwt")

    def token(self, node_id: str, mode: str = "plain", **claims) -> str:
        return self.sign(
            {
                "sub": "anon:test",
                "aud": node_id,
                "tier": "limited",
                "crypto_mode": mode,
                "max_requests": 10,
                "max_output_tokens": 256,
                **claims,
            },
            "luckrig-tasting+jwt",
        )

    def entries(self) -> list[dict]:
        return [e for r in self.reports for e in r["entries"]]


class FakeAgent:
    """A scripted agent on the other end of a tunnel. `requests` receives (stream id, head, body) for each request;
    `frames_seen` every frame the relay sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.requests: asyncio.Queue = asyncio.Queue()
        self.frames_seen: list[frames.Frame] = []
        self.bodies: dict[int, bytearray] = {}
        self.heads: dict[int, frames.RequestHead] = {}
        self.hello: dict | None = None
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            frame = frames.decode(msg.data)
            self.frames_seen.append(frame)
            if frame.type == frames.HELLO:
                self.hello = frame.json()
            elif frame.type == frames.REQUEST:
                self.heads[frame.stream_id] = frames.RequestHead.parse(frame.payload)
                self.bodies[frame.stream_id] = bytearray()
            elif frame.type == frames.DATA:
                self.bodies[frame.stream_id] += frame.payload
            elif frame.type == frames.END:
                await self.requests.put(
                    (frame.stream_id, self.heads[frame.stream_id], bytes(self.bodies[frame.stream_id]))
                )

    def seen(self, kind: int, stream_id: int | None = None) -> bool:
        return any(f.type == kind and (stream_id is None or f.stream_id == stream_id) for f in self.frames_seen)

    async def wait_for_frame(self, kind: int, stream_id: int | None = None, timeout: float = 5) -> float:
        started = time.monotonic()
        while not self.seen(kind, stream_id):
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no {frames.NAMES[kind]} frame within {timeout} s: {self.frames_seen}")
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def send(self, data: bytes):
        await self.ws.send_bytes(data)

    async def respond(self, sid: int, status: int = 200, headers=None, body: bytes = b"", end: bool = True):
        await self.send(frames.ResponseHead(status, headers or [("Content-Type", "application/json")]).encode(sid))
        for frame in frames.data_frames(sid, body):
            await self.send(frame)
        if end:
            await self.send(frames.encode(frames.END, sid))

    async def close(self):
        await self.ws.close()
        self._reader.cancel()


class Setup:
    def __init__(self, tracker: FakeTracker, tracker_server: TestServer, relay_server: TestServer, app, session):
        self.tracker, self.tracker_server, self.relay_server, self.app = tracker, tracker_server, relay_server, app
        self.session = session
        self.extra: list[TestServer] = []
        tracker.relay_urls["r1"] = self.base

    async def another_relay(self, relay_id: str, tmp_path: Path):
        """A second relay process-alike for the same tracker: (its app, its base URL)."""
        cfg = RelayConfig(
            tracker=self.tracker.base,
            relay_id=relay_id,
            relay_secret="lrr_test",
            state_dir=str(tmp_path / f"relay-state-{relay_id}"),
            report_interval=0.2,
            heartbeat_interval=0.5,
            allow_private_rigs=1,  # the other relays and rigs of a test are all on 127.0.0.1
        )
        app = build_app(cfg)
        server = TestServer(app, handler_cancellation=True)
        await server.start_server()
        self.extra.append(server)
        base = str(server.make_url("")).rstrip("/")
        self.tracker.relay_urls[relay_id] = base
        return app[RELAY], base

    @property
    def relay(self):
        return self.app[RELAY]

    @property
    def base(self) -> str:
        return str(self.relay_server.make_url("")).rstrip("/")

    async def connect(self, ticket: str | None = None, node_id: str = "rig-1") -> aiohttp.ClientWebSocketResponse:
        ticket = ticket if ticket is not None else self.tracker.ticket(node_id)
        return await self.session.ws_connect(
            self.base + "/tunnel",
            headers={"Authorization": f"Bearer {ticket}"},
            max_msg_size=4 * frames.MAX_FRAME,
            compress=0,
        )

    async def agent(self, node_id: str = "rig-1") -> FakeAgent:
        agent = FakeAgent(await self.connect(node_id=node_id))
        deadline = time.monotonic() + 5
        while agent.hello is None or self.relay.registry.get(node_id) is None:
            assert time.monotonic() < deadline, "the relay did not accept the tunnel"
            await asyncio.sleep(0.01)
        return agent

    def chat_body(self, stream: bool = True) -> dict:
        return {"messages": [{"role": "user", "content": "hello"}], "stream": stream}

    async def chat(self, node_id: str = "rig-1", token: str | None = None, body=None, **kw):
        token = token if token is not None else self.tracker.token(node_id)
        return await self.session.post(
            f"{self.base}/n/{node_id}/v1/chat/completions",
            json=body if body is not None else self.chat_body(),
            headers={"Authorization": f"Bearer {token}"},
            **kw,
        )

    async def open_stream(self) -> tuple[FakeAgent, int, aiohttp.ClientResponse]:
        """A taster's streaming chat through a new agent tunnel, its SSE headers sent and its body left open:
        (the agent, the stream id, the taster's response)."""
        agent = await self.agent()
        pending = asyncio.ensure_future(self.chat())
        sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
        await agent.respond(sid, headers=SSE_HEADERS, end=False)
        return agent, sid, await pending


@contextlib.asynccontextmanager
async def relay_setup(tmp_path: Path, **config):
    tracker = FakeTracker()
    tracker_server = TestServer(tracker.app)
    await tracker_server.start_server()
    tracker.base = str(tracker_server.make_url("")).rstrip("/")
    cfg = RelayConfig(
        tracker=tracker.base,
        relay_id="r1",
        relay_secret="lrr_test",
        state_dir=str(tmp_path / "relay-state"),
        report_interval=0.2,
        heartbeat_interval=0.5,
        **{"allow_private_rigs": 1, **config},  # the other relays and rigs of a test are all on 127.0.0.1
    )
    app = build_app(cfg)
    relay_server = TestServer(app, handler_cancellation=True)
    await relay_server.start_server()
    session = aiohttp.ClientSession()
    setup = Setup(tracker, tracker_server, relay_server, app, session)
    try:
        yield setup
    finally:
        await session.close()
        for server in setup.extra:
            await server.close()
        await relay_server.close()
        await tracker_server.close()


def sse_chunk(content: str) -> bytes:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]

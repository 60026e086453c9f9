"""The relay process: the agents' tunnel endpoint (`GET /tunnel`), the tasters' paths (relay/routes.py), the gateway at
its root (relay/gateway.py), `GET /health` and `GET /metrics`, and the link to the tracker. Draining on SIGTERM:
agents are told GOAWAY, the tracker is told at once (so nodes move to another relay without waiting for this one's
heartbeat to age), open streams get a few seconds to finish."""

import asyncio
import contextlib
import logging
import time

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from node_agent import cors, event_loop, frames
from node_agent.errors import AgentError
from relay import __version__, limits
from relay.auth import Keys
from relay.config import RelayConfig
from relay.gateway import Gateway, expose_node_header
from relay.routes import SECURITY_HEADERS, Routes
from relay.tracker_link import TrackerLink
from relay.tunnels import Registry, Tunnel

log = logging.getLogger("luckrig.relay")

RELAY = web.AppKey("relay", object)
DRAIN_SEC = 10.0
TUNNEL_CLOSE_SEC = 2.0  # at the end of a drain, for the tunnels' close handshakes
TICKET_LEEWAY_SEC = 30
OUTAGE_RECHECK_SEC = 30
OUTAGE_RENEW_GRACE_SEC = 60


class Metrics:
    """Counts kept as plain ints on the hot path; /metrics turns them into Prometheus text on demand."""

    def __init__(self):
        self.bytes_out = 0
        self.streams: dict[str, int] = {}
        self.refusals: dict[str, int] = {}

    def refused(self, code: str) -> None:
        self.refusals[code] = self.refusals.get(code, 0) + 1


class Relay:
    def __init__(self, config: RelayConfig):
        self.config = config
        self.version = __version__
        self.keys = Keys(config.issuer or config.tracker)
        self.registry = Registry()
        self.metrics = Metrics()
        self.limiter = limits.RateLimiter(config.rate_per_min, config.rate_burst)
        self.trusted = limits.parse_networks(config.trusted_proxies)
        self.session: aiohttp.ClientSession | None = None
        self.link: TrackerLink | None = None
        self.routes = Routes(self)
        self.gateway = Gateway(self)
        self._tasks: list[asyncio.Task] = []
        self._spare: set[asyncio.Task] = set()

    def client_key(self, request: web.Request) -> str:
        return limits.client_key(request.remote, request.headers.get("X-Forwarded-For"), self.trusted)

    def client_address(self, request: web.Request) -> str:
        """The caller's address as text (an IPv4-mapped one as its IPv4), as the tracker takes it for tokens."""
        addr = limits.client_address(request.remote, request.headers.get("X-Forwarded-For"), self.trusted)
        if addr is not None and addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return str(addr) if addr is not None else "unknown"  # the tracker refuses it: 400, never a guess

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(trust_env=False)
        self.link = TrackerLink(session=self.session, config=self.config, keys=self.keys, registry=self.registry)
        self.link.load_cached_keys()
        await self.link.refresh_keys()
        await self.link.heartbeat_once()
        self._tasks.append(asyncio.create_task(self.link.run()))
        self._tasks.append(self.gateway.start())
        log.info(
            "relay %s serving on %s; %d tracker key(s)", self.config.relay_id, self.config.base_url, len(self.keys.keys)
        )

    async def drain(self, app: web.Application) -> None:
        """SIGTERM: no new tunnels or streams, the tracker told at once, open streams given time to finish."""
        if self.link is None:
            return
        self.link.draining = True
        goaway = frames.encode_json(frames.GOAWAY, 0, {"reason": "relay shutting down"})
        for tunnel in list(self.registry.tunnels.values()):
            tunnel.send_soon(goaway)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.link.heartbeat_once(), 5)
        deadline = time.monotonic() + DRAIN_SEC
        while (self.registry.open_streams or self.gateway.in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # What is still carried ends with an error event: the gateway's answers from direct rigs here, the tunnels'
        # streams (and the gateway's through them) when the tunnels close.
        self.gateway.in_flight.cut_all()
        # Together and bounded: closing waits for the socket to take the close frame, which an agent that stopped
        # reading (a frozen or suspended machine) never lets happen; such a tunnel is dropped, as its send loop would.
        tunnels = list(self.registry.tunnels.values())
        closing = {asyncio.ensure_future(t.close(1001, "relay shutting down")): t for t in tunnels}
        if closing:
            _, late = await asyncio.wait(closing, timeout=TUNNEL_CLOSE_SEC)
            for task in late:
                task.cancel()
                if closing[task].transport is not None:
                    closing[task].transport.abort()
        settle = time.monotonic() + 2
        while self.gateway.in_flight and time.monotonic() < settle:
            await asyncio.sleep(0.05)

    async def stop(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.link is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.link.flush(), 5)  # one last try for the witness entries
        await self.gateway.stop()
        if self.session is not None:
            await self.session.close()

    # --- the agents' side -------------------------------------------------------------------------------

    async def tunnel(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=frames.WS_MAX_MESSAGE, heartbeat=20, compress=False)
        await ws.prepare(request)
        # Accepted, then closed with 4401 when refused: "refused" must differ from "relay down" for the agent.
        try:
            if self.link.draining:
                raise AgentError(503, "draining", "This relay is shutting down.")
            ticket = self.keys.ticket(request.headers.get("Authorization"), self.config.relay_id)
        except AgentError as exc:
            self.metrics.refused("tunnel_" + exc.code)
            if exc.code == "invalid_token":
                self.link.unknown_kid_seen()
            await ws.close(
                code=1001 if exc.code == "draining" else frames.CLOSE_REFUSED, message=exc.message.encode()[:120]
            )
            return ws
        tunnel = Tunnel(ws, ticket.node_id, ticket.exp, self.config.window_bytes, transport=request.transport)
        old = self.registry.add(tunnel)
        if old is not None:
            log.info("node %s: a newer tunnel replaces the open one", ticket.node_id)
            old.lost("tunnel_lost", "The rig's agent reconnected; this request was cut.")
            # In the background: a dead old peer must not hold up the new tunnel for aiohttp's close timeout.
            self._background(old.close(frames.CLOSE_REPLACED, "replaced by a newer tunnel for this node"))
        log.info("node %s: tunnel open", ticket.node_id)
        self.link.tunnels_changed()
        tunnel.send_soon(
            frames.encode_json(
                frames.HELLO,
                0,
                {
                    "relay_id": self.config.relay_id,
                    "node_id": ticket.node_id,
                    "public_url": self.config.base_url,
                    "max_frame_bytes": frames.MAX_FRAME,
                    "window_bytes": self.config.window_bytes,
                    "ticket_expires_at": ticket.exp,
                },
            )
        )
        expiry = asyncio.create_task(self._expire(tunnel))
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.ERROR:
                    error = ws.exception()
                    log.warning("node %s: tunnel error (%s: %s)", tunnel.node_id, type(error).__name__, error)
                    break
                if msg.type != aiohttp.WSMsgType.BINARY:
                    await tunnel.close(frames.CLOSE_PROTOCOL, "binary frames only")
                    break
                try:
                    frame = frames.decode(msg.data)
                    if frame.type == frames.TICKET:
                        if not await self._renew(tunnel, frame):
                            break
                    else:
                        tunnel.on_frame(frame)
                except frames.FrameError as exc:
                    log.warning("node %s: protocol error (%s); closing its tunnel", tunnel.node_id, exc)
                    self.metrics.refused("tunnel_protocol_error")
                    await tunnel.close(frames.CLOSE_PROTOCOL, "protocol error")
                    break
        finally:
            expiry.cancel()
            self.registry.remove(tunnel)
            tunnel.lost()
            self.link.tunnels_changed()
            log.info("node %s: tunnel closed (%s)", tunnel.node_id, ws.close_code)
        return ws

    async def _renew(self, tunnel: Tunnel, frame: frames.Frame) -> bool:
        try:
            ticket = self.keys.ticket("Bearer " + bytes(frame.payload).decode("utf-8", "replace"), self.config.relay_id)
            if ticket.node_id != tunnel.node_id:
                raise AgentError(401, "invalid_token", "The renewed ticket is for another node.")
        except AgentError as exc:
            await tunnel.close(frames.CLOSE_REFUSED, exc.message)
            return False
        tunnel.ticket_exp = max(tunnel.ticket_exp, ticket.exp)
        return True

    async def _expire(self, tunnel: Tunnel) -> None:
        """A tunnel lives as long as its ticket: an agent that stops renewing (its node taken down, its secret
        revoked) loses the tunnel when the last ticket runs out. Except while the tracker is down: then nobody can
        renew, and nothing can have been revoked since, so the tunnel is kept until the tracker is back and its
        agent has had a minute to renew."""
        while True:
            left = tunnel.ticket_exp + TICKET_LEEWAY_SEC - time.time()
            if left <= 0:
                if self.link.tracker_down():
                    await asyncio.sleep(OUTAGE_RECHECK_SEC)
                    continue
                if self.link.tracker_back_for() < OUTAGE_RENEW_GRACE_SEC:
                    await asyncio.sleep(OUTAGE_RENEW_GRACE_SEC - self.link.tracker_back_for())
                    continue
                await tunnel.close(frames.CLOSE_TICKET_EXPIRED, "tunnel ticket expired")
                return
            await asyncio.sleep(left)

    def _background(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._spare.add(task)
        task.add_done_callback(self._spare.discard)

    # --- health and metrics -----------------------------------------------------------------------------

    async def prometheus(self, request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        Gauge("luckrig_relay_tunnels", "Open agent tunnels", registry=registry).set(
            sum(1 for t in self.registry.tunnels.values() if t.usable)
        )
        Gauge("luckrig_relay_open_streams", "Tasters' requests in flight", registry=registry).set(
            self.registry.open_streams
        )
        Counter("luckrig_relay_bytes_to_tasters", "Answer bytes sent to tasters", registry=registry).inc(
            self.metrics.bytes_out
        )
        streams = Counter("luckrig_relay_streams", "Finished streams, by how they ended", ["ended"], registry=registry)
        for ended, n in self.metrics.streams.items():
            streams.labels(ended).inc(n)
        refusals = Counter(
            "luckrig_relay_refusals", "Refused requests and tunnels, by code", ["code"], registry=registry
        )
        for code, n in self.metrics.refusals.items():
            refusals.labels(code).inc(n)
        Counter("luckrig_relay_gateway_tokens", "Tokens the tracker issued for gateway callers", registry=registry).inc(
            self.gateway.tokens.issued
        )
        Gauge("luckrig_relay_pending_reports", "Witness entries not yet taken by the tracker", registry=registry).set(
            len(self.link.pending) if self.link else 0
        )
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def make_errors_middleware(relay: Relay):
    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except AgentError as exc:
            relay.metrics.refused(exc.code)
            return exc.response()
        except web.HTTPRequestEntityTooLarge:
            relay.metrics.refused("body_too_large")
            return AgentError(413, "body_too_large", "The request body is too large.").response()
        except web.HTTPNotFound:
            return AgentError(404, "not_found", "No such endpoint.").response()
        except web.HTTPMethodNotAllowed:
            return AgentError(405, "method_not_allowed", "Method not allowed.").response()

    return errors


def build_app(config: RelayConfig) -> web.Application:
    relay = Relay(config)
    app = web.Application(middlewares=[make_errors_middleware(relay)], client_max_size=config.max_body_bytes)
    app[RELAY] = relay
    app.on_startup.append(relay.start)
    app.on_shutdown.append(relay.drain)
    app.on_cleanup.append(relay.stop)
    app.router.add_get("/health", relay.routes.health)
    app.router.add_get("/metrics", relay.prometheus)
    app.router.add_get("/tunnel", relay.tunnel)
    app.router.add_route("*", r"/n/{node_id:[A-Za-z0-9_-]{1,64}}/{tail:.+}", relay.routes.proxy)
    for path in ("/v1/chat/completions", "/chat/completions"):
        app.router.add_route("POST", path, relay.gateway.chat)
        app.router.add_route("OPTIONS", path, relay.gateway.chat)
    app.router.add_route("GET", "/v1/models", relay.gateway.models)
    app.router.add_route("OPTIONS", "/v1/models", relay.gateway.models)
    # The tasting panel calls the relay from the tracker's origin, exactly as it calls a direct agent.
    app.on_response_prepare.append(cors.add_cors_headers)
    app.on_response_prepare.append(expose_node_header)
    app.on_response_prepare.append(add_security_headers)
    return app


def serve(config: RelayConfig) -> None:
    # handler_cancellation: a taster who goes away cancels the handler, which sends CANCEL through the tunnel.
    web.run_app(
        build_app(config),
        host=config.host,
        port=config.port,
        handler_cancellation=True,
        print=None,
        access_log=None,
        shutdown_timeout=DRAIN_SEC + 5,
        loop=event_loop.new_event_loop(),  # uvloop's when it can be imported (node_agent/event_loop.py)
    )

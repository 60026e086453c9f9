"""The agent's side of the relay tunnel (docs/relay.md): a rig with no open port dials out to its relay and
serves tasters through that one WebSocket.

Each request that arrives through the tunnel is served by the agent's own aiohttp application, in process
(node_agent/tunnel_streams.py), so that a relayed tasting goes through exactly the code a direct one does (token
check, filter rules, moderation, queue, budgets, public-key mode, usage): one behaviour, not two. A PAUSE makes the
handler's writes wait (it stops reading the rig) until RESUME, and a CANCEL cancels the handler (the slot is freed,
as when a direct taster hangs up).

The loop: fetch a ticket (`POST /api/nodes/<id>/tunnel`), dial the relay it names, renew the ticket before it
expires (over the open tunnel when the relay stays the same, by moving to the new relay when it does not), and
reconnect with jittered backoff (about 1 s growing to 60 s) when the tunnel drops."""

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import aiohttp
import jwt
from aiohttp import web

from node_agent import frames
from node_agent.tunnel_streams import DispatchedStream, ReplayedStream, TunnelStream

log = logging.getLogger("luckrig.agent.tunnel")
RENEW_BEFORE_SEC = 180  # a fresh ticket this long before the current one expires
MAX_STREAMS = 256  # open streams per tunnel (the relay's own cap): a hostile relay cannot open more
MAX_RECEIVING_BYTES = 16 * 1024 * 1024  # request bodies still arriving, all streams together
DRAIN_OLD_TUNNEL_SEC = 60  # after moving to another relay, streams on the old tunnel get this long to finish


class NotRelayed(Exception):
    """The tracker says this node is direct (409 not_relayed): there is nothing to dial."""


class TicketRefused(Exception):
    """The tracker refused a ticket for a reason that retrying soon will not fix (a hidden or unknown node)."""


@dataclass(frozen=True)
class Ticket:
    relay_id: str
    relay_url: str
    tunnel_url: str
    ticket: str
    expires_at: float  # epoch seconds, by our clock (the tracker's lifetime applied to our "now")

    @property
    def taster_url(self) -> str:
        return self.relay_url.rstrip("/")


class TunnelConnection:
    """One open WebSocket to a relay and the streams it carries."""

    def __init__(self, client: "TunnelClient", ws: aiohttp.ClientWebSocketResponse, ticket: Ticket):
        self.client, self.ws, self.ticket = client, ws, ticket
        self.socket = ws.get_extra_info("socket")  # for node_agent/corking.py
        self.streams: dict[int, TunnelStream] = {}
        self.receiving: dict[int, TunnelStream] = {}  # streams whose request body is still arriving
        self.last_id = 0
        self.hello: dict | None = None
        self.hello_seen = asyncio.Event()
        self.goaway = asyncio.Event()  # this relay is draining (its own flag: an old tunnel's GOAWAY is not ours)
        self.said_goaway = False  # this agent is draining or moving: a stream the relay opens meanwhile is refused
        self.receiving_bytes = 0

    async def send(self, frame: bytes) -> None:
        # Uncompressed frames are written in one go by aiohttp, so streams may send concurrently; the await is
        # the WebSocket's own back-pressure when the relay reads slowly.
        await self.ws.send_bytes(frame)

    def on_frame(self, frame: frames.Frame) -> None:
        kind, sid = frame.type, frame.stream_id
        if kind == frames.REQUEST:
            if sid <= self.last_id or sid in self.streams:
                raise frames.FrameError("stream ids must grow")
            self.last_id = sid
            if len(self.streams) >= MAX_STREAMS:
                self.refuse(sid, "too_many_streams", "This rig has too many open requests through the relay.")
                return
            if self.said_goaway:
                # What a closed listening socket did for the loopback replay this replaced: a request that crossed
                # our GOAWAY is not started on an agent that is stopping (the relay tells its taster 503).
                self.refuse(sid, "upstream_unavailable", "This rig's agent is shutting down or moving.")
                return
            try:
                head = frames.RequestHead.parse(frame.payload)
            except frames.FrameError:
                self.refuse(sid, "invalid_request", "The relay sent a malformed request head.")
                return
            stream = (DispatchedStream if self.client.app is not None else ReplayedStream)(self, sid, head)
            self.streams[sid] = stream
            self.receiving[sid] = stream
            if stream.starts_before_body:
                # Served from now, its body read as it comes (tunnel_streams.DispatchedStream): the token and the
                # rules are checked while the taster's body is still on its way, as for a direct taster.
                stream.task = asyncio.ensure_future(stream.run())
        elif kind == frames.DATA:
            stream = self.receiving.get(sid)
            if stream is None:
                return  # late data for a stream already cancelled or answered
            stream.receive(frame.payload)
            self.receiving_bytes += len(frame.payload)
            if stream.received > self.client.max_body_bytes or self.receiving_bytes > MAX_RECEIVING_BYTES:
                # The agent's own server would answer 413; the body is not kept growing to find that out (nor
                # are many half-sent bodies, which a hostile relay could send to fill this machine's memory).
                self.forget_body(sid)
                self.streams.pop(sid, None)
                if stream.task is not None:
                    stream.task.cancel()
                self.refuse(sid, "body_too_large", "The request body is too large.")
        elif kind == frames.END:
            stream = self.forget_body(sid)
            if stream is not None:
                if stream.task is None:
                    stream.task = asyncio.ensure_future(stream.run())
                else:
                    stream.body_complete()
        elif kind == frames.CANCEL:
            self.forget_body(sid)
            stream = self.streams.pop(sid, None)
            if stream is not None and stream.task is not None:
                stream.task.cancel()
        elif kind == frames.PAUSE:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.flowing.clear()
        elif kind == frames.RESUME:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.flowing.set()
        elif kind == frames.HELLO:
            self.hello = frame.json()
            self.hello_seen.set()
        elif kind == frames.GOAWAY:
            self.goaway.set()
        else:
            raise frames.FrameError(f"a relay may not send {frames.NAMES[kind]}")

    def forget_body(self, sid: int) -> "TunnelStream | None":
        stream = self.receiving.pop(sid, None)
        if stream is not None:
            self.receiving_bytes -= stream.received
        return stream

    def refuse(self, sid: int, code: str, message: str) -> None:
        task = asyncio.ensure_future(
            self.send(frames.encode_json(frames.ERROR, sid, {"code": code, "message": message}))
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def serve(self) -> None:
        """Read frames until the tunnel closes; then cancel whatever it was carrying."""
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    try:
                        self.on_frame(frames.decode(msg.data))
                    except frames.FrameError as exc:
                        log.warning("relay protocol error (%s); closing the tunnel", exc)
                        await self.ws.close(code=frames.CLOSE_PROTOCOL, message=b"protocol error")
                        break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    log.warning("tunnel error (%s: %s)", type(self.ws.exception()).__name__, self.ws.exception())
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                    break
        finally:
            await self.abort()

    async def abort(self) -> None:
        tasks = [s.task for s in self.streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.streams.clear()
        self.receiving.clear()

    async def say_goaway(self, reason: str) -> None:
        """Tell the relay this agent takes no new streams here (the open ones go on)."""
        self.said_goaway = True
        with contextlib.suppress(Exception):
            await self.send(frames.encode_json(frames.GOAWAY, 0, {"reason": reason}))

    async def drain(self) -> None:
        """The node moved to another relay: finish what this tunnel carries, then close it."""
        await self.say_goaway("moving to another relay")
        deadline = time.monotonic() + DRAIN_OLD_TUNNEL_SEC
        while self.streams and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await self.ws.close()


class TunnelClient:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        tracker: str,
        node_id: str,
        node_secret: str,
        max_body_bytes: int,
        app: web.Application | None = None,
        local_base: str = "",
    ):
        """`app`: the agent's own application, which serves the tunnelled requests in process; without one, they
        are replayed over HTTP against the server at `local_base`."""
        self.session = session
        self.tracker = tracker.rstrip("/")
        self.node_id, self.node_secret = node_id, node_secret
        self.app = app
        self.local_base = local_base.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self.current: TunnelConnection | None = None
        self.relayed: bool | None = None  # None until the tracker has said
        self.last_close_code: int | None = None
        self._draining: set[asyncio.Task] = set()

    @property
    def status(self) -> dict:
        """For /health and `luckrig-node status`: where tasters reach this rig, and whether the tunnel is up."""
        if self.relayed is False:
            return {"reachability": "direct"}
        if self.relayed is None:  # the tracker has not said yet (or cannot be reached)
            return {"reachability": "unknown"}
        up = self.current is not None and not self.current.ws.closed
        return {
            "reachability": "relayed",
            "tunnel": "open" if up else "connecting",
            "relay_id": self.current.ticket.relay_id if up else None,
        }

    # --- tickets ----------------------------------------------------------------------------------------

    async def fetch_ticket(self, unreachable: str | None = None) -> Ticket:
        body = {"schema_version": 1}
        if unreachable:
            body["unreachable_relay_id"] = unreachable
        async with self.session.post(
            f"{self.tracker}/api/nodes/{self.node_id}/tunnel",
            json=body,
            headers={"Authorization": f"Bearer {self.node_secret}"},
            timeout=aiohttp.ClientTimeout(total=15),
        ) as resp:
            doc = await resp.json(content_type=None)
            if not isinstance(doc, dict):
                raise ValueError("the tracker's answer is not a JSON object")
            code = doc.get("code")
            if resp.status == 409 and code == "not_relayed":
                raise NotRelayed()
            if resp.status in (401, 403, 404):
                raise TicketRefused(f"HTTP {resp.status} {code}")
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=str(code))
        ticket = str(doc["ticket"])
        # The ticket's own lifetime (exp - iat), applied to our clock: comparing the tracker's absolute times with
        # ours would renew too late (or every few seconds) on a machine whose clock is off.
        claims = jwt.decode(ticket, options={"verify_signature": False})
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if not 60 <= lifetime <= 86400:
            raise ValueError("the ticket's lifetime is implausible")
        return Ticket(
            relay_id=str(doc["relay_id"]),
            relay_url=str(doc["relay_url"]),
            tunnel_url=str(doc["tunnel_url"]),
            ticket=ticket,
            expires_at=time.time() + lifetime,
        )

    # --- the loop ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: hold a tunnel to the relay the tracker names. Nothing ends this loop but a cancellation: an
        unexpected error is logged and retried with backoff, so that a rig never silently stops being reachable."""
        backoff = 1.0
        unreachable: str | None = None
        ticket: Ticket | None = None
        previous: TunnelConnection | None = None  # an old tunnel to drain once the new one is accepted
        while True:
            try:
                if ticket is None or ticket.expires_at - time.time() < RENEW_BEFORE_SEC:
                    ticket = await self.fetch_ticket(unreachable)
                self.relayed = True
            except NotRelayed:
                if self.relayed is not False:
                    log.info("this node is direct (it has a public URL): no relay tunnel")
                self.relayed = False
                await asyncio.sleep(600)  # a node may be switched to relayed later (PATCH endpoint_url away)
                continue
            except TicketRefused as exc:
                log.warning("the tracker refused a tunnel ticket (%s); retrying in a minute", exc)
                ticket = None
                await asyncio.sleep(60 + random.uniform(0, 10))
                continue
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, OSError, jwt.PyJWTError) as exc:
                log.warning("no tunnel ticket (%s); retrying in %.0f s", type(exc).__name__, backoff)
                await asyncio.sleep(backoff + random.uniform(0, backoff * 0.3))
                backoff = min(backoff * 2, 60.0)
                continue
            try:
                ws = await self.session.ws_connect(
                    ticket.tunnel_url,
                    headers={"Authorization": f"Bearer {ticket.ticket}"},
                    heartbeat=20,
                    max_msg_size=frames.WS_MAX_MESSAGE,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5),
                )
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.warning(
                    "could not reach relay %s (%s); retrying in %.0f s", ticket.relay_id, type(exc).__name__, backoff
                )
                unreachable, ticket = ticket.relay_id, None  # the next ticket may name another relay
                await asyncio.sleep(backoff + random.uniform(0, backoff * 0.3))
                backoff = min(backoff * 2, 60.0)
                continue
            unreachable = None
            opened = time.monotonic()
            try:
                ticket, previous = await self._serve(ws, ticket, previous)
            except asyncio.CancelledError:
                await ws.close()
                raise
            except Exception:  # noqa: BLE001 - logged with its traceback, then the loop goes on
                log.exception("the tunnel failed unexpectedly; reconnecting")
                await ws.close()
                ticket = None
            if time.monotonic() - opened > 30:
                backoff = 1.0  # it was a working tunnel: reconnect promptly
            code = self.last_close_code
            if code == frames.CLOSE_REPLACED:
                log.warning("another agent took over this node's tunnel (4409); is the node running twice?")
                backoff = 60.0
            elif code == frames.CLOSE_REFUSED:
                log.warning("the relay refused the tunnel ticket (4401); fetching a new one")
                ticket = None
            if ticket is not None and previous is not None:
                continue  # moving to another relay with a fresh ticket in hand: dial it at once
            await asyncio.sleep(backoff + random.uniform(0, backoff * 0.3))
            backoff = min(backoff * 2, 60.0)

    async def _serve(
        self, ws: aiohttp.ClientWebSocketResponse, ticket: Ticket, previous: "TunnelConnection | None"
    ) -> tuple[Ticket | None, "TunnelConnection | None"]:
        """Serve one tunnel until it closes or the node moves. Returns (the ticket to dial next, the tunnel to drain
        once the next one is accepted): (None, None) after a plain close, so that a fresh ticket is fetched."""
        connection = TunnelConnection(self, ws, ticket)
        self.last_close_code = None
        reader = asyncio.ensure_future(connection.serve())
        # The old tunnel (after a move) is drained only once this relay has said HELLO: if the new relay cannot
        # take the node, the old one goes on serving meanwhile.
        hello = asyncio.ensure_future(connection.hello_seen.wait())
        await asyncio.wait({reader, hello}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        hello.cancel()
        if not connection.hello_seen.is_set():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.last_close_code = ws.close_code if ws.close_code not in (1000, 1001, 1006, None) else None
            log.warning("relay %s did not accept the tunnel (code %s)", ticket.relay_id, ws.close_code)
            await ws.close()
            return None, previous
        if previous is not None:
            self._drain_later(previous)
        self.current = connection
        log.info(
            "tunnel open to relay %s: tasters reach this rig at %s/n/%s/v1",
            ticket.relay_id,
            ticket.taster_url,
            self.node_id,
        )
        try:
            while not reader.done():
                renew_in = max(5.0, ticket.expires_at - time.time() - RENEW_BEFORE_SEC)
                goaway = asyncio.ensure_future(connection.goaway.wait())
                done, _ = await asyncio.wait({reader, goaway}, timeout=renew_in, return_when=asyncio.FIRST_COMPLETED)
                goaway.cancel()
                if reader in done:
                    break
                if goaway in done:
                    log.info("relay %s is draining (GOAWAY); moving", ticket.relay_id)
                    try:
                        return await self.fetch_ticket(unreachable=ticket.relay_id), connection
                    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, OSError,
                            jwt.PyJWTError, NotRelayed, TicketRefused):  # fmt: skip
                        return None, connection
                try:
                    fresh = await self.fetch_ticket()
                except (
                    aiohttp.ClientError,
                    TimeoutError,
                    ValueError,
                    KeyError,
                    TypeError,
                    OSError,
                    jwt.PyJWTError,
                ) as exc:
                    # The tracker is down: the tunnel keeps serving on the ticket it has; retry soon.
                    log.warning(
                        "could not renew the tunnel ticket (%s); the open tunnel keeps serving", type(exc).__name__
                    )
                    await asyncio.wait({reader}, timeout=min(30.0, max(5.0, (ticket.expires_at - time.time()) / 6)))
                    continue
                except (NotRelayed, TicketRefused) as exc:
                    log.warning("the tracker no longer issues tunnel tickets for this node (%s)", type(exc).__name__)
                    self._drain_later(connection)
                    return None, None
                if fresh.relay_id == ticket.relay_id:
                    try:
                        await connection.send(frames.encode(frames.TICKET, 0, fresh.ticket.encode()))
                    except (aiohttp.ClientError, ConnectionError, RuntimeError):
                        break  # the tunnel closed meanwhile: the reader ends, and the loop dials again
                    connection.ticket = ticket = fresh
                else:
                    log.info("the tracker moved this node from relay %s to %s", ticket.relay_id, fresh.relay_id)
                    return fresh, connection
            await asyncio.gather(reader, return_exceptions=True)
            self.last_close_code = ws.close_code if ws.close_code not in (1000, 1001, 1006, None) else None
            log.info("tunnel to relay %s closed (code %s)", ticket.relay_id, ws.close_code)
            return None, None
        finally:
            if self.current is connection and reader.done():
                self.current = None

    def _drain_later(self, connection: TunnelConnection) -> None:
        task = asyncio.ensure_future(connection.drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

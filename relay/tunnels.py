"""One tunnel per relayed node, and the stream table of each: the relay's side of the protocol in docs/relay.md.

The WebSocket reader never waits on a taster: it appends DATA to the stream's buffer and returns, so one slow
taster cannot hold up the other streams of the same tunnel. Each stream's buffer is bounded by high and low
watermarks (snitun's idea): above `window` bytes the agent is told to PAUSE that stream, below a quarter of it to
RESUME; an agent that keeps sending past twice the window has its stream reset."""

import asyncio
import collections
import contextlib
import logging

from aiohttp import web

from node_agent import frames
from node_agent.corking import corked

log = logging.getLogger("luckrig.relay.tunnels")

MAX_STREAMS_PER_TUNNEL = 256  # the agent's queue is far shorter; this only bounds a misbehaving relay client
# Frames waiting to go to the agent (request bodies, mostly): above this no new stream is opened, and an agent that
# reads nothing for SEND_TIMEOUT_SEC loses its tunnel, so that a stalled agent cannot make the relay hoard bodies.
OUTBOX_CAP_BYTES = 8 * 1024 * 1024
SEND_TIMEOUT_SEC = 30.0
# What Tunnel.flush sends from a taster's own task at most: a request's head and a usual chat body.
FLUSH_MAX_BYTES = 16 * 1024


class StreamClosed(Exception):
    """The stream ended before its answer did: `code` says why (tunnel_lost, reset, upstream_unavailable...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Stream:
    __slots__ = (
        "tunnel",
        "id",
        "head",
        "chunks",
        "buffered",
        "paused",
        "ended",
        "closed",
        "_waiter",
        "window",
    )

    def __init__(self, tunnel: "Tunnel", stream_id: int, window: int):
        self.tunnel, self.id, self.window = tunnel, stream_id, window
        self.head: asyncio.Future = asyncio.get_running_loop().create_future()
        self.chunks: collections.deque = collections.deque()
        self.buffered = 0
        self.paused = False
        self.ended = False  # the agent sent END: what is buffered is all there is
        self.closed: StreamClosed | None = None
        self._waiter: asyncio.Future | None = None

    # --- fed by the tunnel's reader (never blocks) -----------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def on_head(self, head: frames.ResponseHead) -> None:
        if self.head.done():
            self.reset("reset", "The rig's agent sent a second response head.")
            return
        self.head.set_result(head)

    def on_data(self, data) -> None:
        if not self.head.done():
            self.reset("reset", "The rig's agent sent data before its response head.")
            return
        if self.ended:
            return  # data after END: ignored, like data after a cancel
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > self.window and not self.paused:
            self.paused = True
            self.tunnel.send_soon(frames.encode(frames.PAUSE, self.id))
        if self.buffered > 2 * self.window:
            # The agent kept sending after PAUSE: this stream is dropped rather than the relay's memory.
            self.reset("reset", "The rig's agent ignored flow control.")
            return
        self._wake()

    def on_end(self) -> None:
        if not self.head.done():
            self.reset("upstream_error", "The rig's agent ended the stream without an answer.")
            return
        self.ended = True
        self._wake()

    def fail(self, code: str, message: str) -> None:
        """The stream cannot go on (tunnel lost, ERROR frame): the taster side learns it at its next read."""
        if self.closed is None:
            self.closed = StreamClosed(code, message)
        if not self.head.done():
            self.head.set_exception(self.closed)
            self.head.exception()  # retrieved here too: nobody may be waiting on it any more
        self._wake()
        self.tunnel.forget(self)

    def reset(self, code: str, message: str) -> None:
        """Give up on the stream from the relay's side: CANCEL to the agent, and fail the taster side."""
        self.tunnel.send_soon(frames.encode(frames.CANCEL, self.id))
        self.fail(code, message)

    # --- read by the taster's handler -------------------------------------------------------------------

    async def read(self):
        """The next buffered chunk; None once the agent's answer is complete; StreamClosed if it never will be."""
        while True:
            if self.chunks:
                data = self.chunks.popleft()
                self.buffered -= len(data)
                if self.paused and self.buffered <= self.window // 4:
                    self.paused = False
                    self.tunnel.send_soon(frames.encode(frames.RESUME, self.id))
                return data
            if self.closed is not None:
                raise self.closed
            if self.ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class Tunnel:
    """One agent's WebSocket: it opens streams for tasters and dispatches the agent's frames to them."""

    def __init__(self, ws: web.WebSocketResponse, node_id: str, ticket_exp: int, window: int, transport=None):
        self.ws, self.node_id, self.ticket_exp, self.window = ws, node_id, ticket_exp, window
        self.transport = transport  # the socket under the WebSocket, to drop it when a handshake cannot work
        self.streams: dict[int, Stream] = {}
        self.last_id = 0
        self.draining = False  # the agent said GOAWAY: no new streams here
        self.bytes_in = 0
        self._outbox: asyncio.Queue = asyncio.Queue()
        self.queued_bytes = 0
        self._socket = transport.get_extra_info("socket") if transport is not None else None
        self._sending = False  # a batch is being written (by the sender task or by flush)
        self._sender = asyncio.ensure_future(self._send_loop())

    @property
    def usable(self) -> bool:
        return not self.draining and not self.ws.closed

    # --- sending: one writer task, so frames never interleave and the reader never blocks --------------

    def send_soon(self, frame: bytes) -> None:
        self.queued_bytes += len(frame)
        self._outbox.put_nowait(frame)

    async def _send_loop(self) -> None:
        outbox = self._outbox
        try:
            while True:
                batch = [await outbox.get()]
                while not outbox.empty():
                    batch.append(outbox.get_nowait())
                self.queued_bytes -= sum(len(frame) for frame in batch)
                self._sending = True
                try:
                    # The frames queued together (a request's head, body and END) leave together: in one turn of
                    # the loop (asyncio.timeout, not wait_for, which would start a task per frame and a turn each),
                    # and in one TCP segment (node_agent/corking.py), so that the agent wakes once for them.
                    with corked(self._socket if len(batch) > 1 else None):
                        for frame in batch:
                            if self.ws.closed:
                                continue
                            async with asyncio.timeout(SEND_TIMEOUT_SEC):
                                await self.ws.send_bytes(frame)
                finally:
                    self._sending = False
        except TimeoutError:
            # A close handshake cannot reach an agent that reads nothing: the connection is dropped, which ends the
            # tunnel's reader at once, and with it every stream (their tasters are told).
            log.warning("tunnel %s: the agent reads nothing; dropping its tunnel", self.node_id)
            if self.transport is not None:
                self.transport.abort()
            else:
                await self.close(frames.CLOSE_PROTOCOL, "the agent stopped reading")
        except (ConnectionError, RuntimeError) as exc:  # the socket went away; the reader notices and cleans up
            log.info("tunnel %s: send failed (%s)", self.node_id, type(exc).__name__)

    async def flush(self) -> None:
        """Send what is queued now, in the caller's task, rather than in the sender task's next turn: a request's
        frames reach the agent one wake-up sooner (docs/benchmarks.md, "The relay"). Only what cannot wait: a few
        frames (FLUSH_MAX_BYTES), with nothing being sent and nothing buffered for the agent's socket, so the
        writes go straight to the socket and never wait for the agent to read (aiohttp's WebSocket writer waits only
        once its transport is paused, past 64 KiB buffered). Anything else is left to the sender task, whose
        timeout drops an agent that reads nothing: a taster's request is never the one that waits on it."""
        outbox, transport = self._outbox, self.transport
        if (
            self._sending
            or outbox.empty()
            or self.queued_bytes > FLUSH_MAX_BYTES
            or transport is None
            or transport.get_write_buffer_size()
        ):
            return
        batch = []
        while not outbox.empty():
            batch.append(outbox.get_nowait())
        self.queued_bytes -= sum(len(frame) for frame in batch)
        self._sending = True
        try:
            with corked(self._socket if len(batch) > 1 else None):
                for frame in batch:
                    if not self.ws.closed:
                        await self.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError) as exc:  # as in _send_loop: the reader notices and cleans up
            log.info("tunnel %s: send failed (%s)", self.node_id, type(exc).__name__)
        finally:
            self._sending = False

    # --- streams ----------------------------------------------------------------------------------------

    def open(self, head: frames.RequestHead, body: bytes | None) -> Stream:
        """A new stream, its head queued for the agent, with its body and END when `body` is given; with None the
        caller sends them later (send_body), once the taster's body has come."""
        if len(self.streams) >= MAX_STREAMS_PER_TUNNEL or self.queued_bytes > OUTBOX_CAP_BYTES:
            raise StreamClosed("too_many_streams", "This rig has too many open requests through the relay.")
        self.last_id += 1
        stream = Stream(self, self.last_id, self.window)
        self.streams[stream.id] = stream
        self.send_soon(head.encode(stream.id))
        if body is not None:
            self.send_body(stream, body)
        return stream

    def send_body(self, stream: Stream, body: bytes) -> None:
        for frame in frames.data_frames(stream.id, body):
            self.send_soon(frame)
        self.send_soon(frames.encode(frames.END, stream.id))

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)

    def cancel(self, stream: Stream) -> None:
        """The taster is gone, or the relay gave up: the agent stops the rig and frees its slot."""
        if self.streams.pop(stream.id, None) is not None:
            self.send_soon(frames.encode(frames.CANCEL, stream.id))

    def done(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)

    # --- receiving --------------------------------------------------------------------------------------

    def on_frame(self, frame: frames.Frame) -> None:
        """Dispatch one frame from the agent. Raises FrameError for a frame the protocol forbids (the caller closes
        the tunnel); a frame for a stream that is already over is ignored (late data after a cancel)."""
        kind = frame.type
        if kind == frames.DATA:
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                self.bytes_in += len(frame.payload)
                stream.on_data(frame.payload)
            elif frame.stream_id > self.last_id:
                raise frames.FrameError("DATA for a stream that was never opened")
            return
        if kind in (frames.RESPONSE, frames.END, frames.ERROR):
            if frame.stream_id > self.last_id:
                raise frames.FrameError(f"{frames.NAMES[kind]} for a stream that was never opened")
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                return
            if kind == frames.END:
                stream.on_end()
                return
            try:
                if kind == frames.RESPONSE:
                    stream.on_head(frames.ResponseHead.parse(frame.payload))
                else:
                    error = frame.json()
                    stream.fail(str(error.get("code") or "upstream_error")[:64], str(error.get("message") or "")[:300])
            except frames.FrameError:
                stream.reset("reset", "The rig's agent sent a malformed frame.")
            return
        if kind == frames.GOAWAY:
            self.draining = True
            return
        if kind == frames.TICKET:
            return  # handled by the server, which holds the keys (see server.tunnel_handler)
        raise frames.FrameError(f"an agent may not send {frames.NAMES[kind]}")

    def lost(self, code: str = "tunnel_lost", message: str = "The rig's tunnel to the relay was lost.") -> None:
        for stream in list(self.streams.values()):
            stream.fail(code, message)
        self.streams.clear()
        self._sender.cancel()

    async def close(self, code: int, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message.encode()[:120])


class Registry:
    """node id → its tunnel. A second tunnel for a node replaces the first, which is closed with its own code."""

    def __init__(self):
        self.tunnels: dict[str, Tunnel] = {}

    def get(self, node_id: str) -> Tunnel | None:
        tunnel = self.tunnels.get(node_id)
        return tunnel if tunnel is not None and tunnel.usable else None

    def add(self, tunnel: Tunnel) -> Tunnel | None:
        old = self.tunnels.get(tunnel.node_id)
        self.tunnels[tunnel.node_id] = tunnel
        return old

    def remove(self, tunnel: Tunnel) -> None:
        if self.tunnels.get(tunnel.node_id) is tunnel:
            del self.tunnels[tunnel.node_id]

    @property
    def open_streams(self) -> int:
        return sum(len(t.streams) for t in self.tunnels.values())

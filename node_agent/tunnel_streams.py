"""The streams a relay tunnel carries (node_agent/tunnel.py): each taster's request, served by the agent, and its
answer sent back as frames (docs/relay.md).

`DispatchedStream`, the agent's case, hands the request to the agent's own aiohttp application in process: an
aiohttp Request is built from the REQUEST frame and the body, and the application's router, middlewares, handlers
and `on_response_prepare` signals serve it as they serve one that came on a socket. A relayed tasting thus runs
exactly the code a direct one does (token check, filter rules, moderation, queue, budgets, public-key mode, usage,
CORS): one behaviour, not two. The handler's response writes through `FrameWriter`, aiohttp's writer interface:
its head becomes a RESPONSE frame, its body DATA frames, its end END. Without the loopback HTTP hop this replaced
(a client request, a server parse and a second socket per chunk) a relayed first token costs the agent a few frames
and nothing more.

- Back-pressure: while the relay has said PAUSE, the handler's writes wait until RESUME, so it stops reading the rig;
  a taster who stays paused past --client-stall-timeout is dropped, as a direct one whose socket stays full is.
- Cancellation: CANCEL cancels the task that runs the handler, which leaves the queue or closes the upstream request
  (the rig stops generating), as aiohttp cancels the handler of a direct taster who hangs up.
- A handler that fails, or that drops its "connection" (a stalled reader), ends the stream with ERROR, never END: the
  relay must not pass a cut answer off as whole.

`ReplayedStream` replays the request over HTTP against a server at a URL instead: for a tunnel client that is not
part of an agent (the tests' stand-in servers)."""

import abc
import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

# The header and URL types aiohttp's request is made of (multidict's and yarl's), named through aiohttp: they come
# with it, and the agent declares aiohttp alone (tests/node_agent/test_install.py).
from aiohttp.typedefs import URL, CIMultiDict, CIMultiDictProxy

from node_agent import frames
from node_agent.corking import corked

log = logging.getLogger("luckrig.agent.tunnel")

# Request headers the relay may forward, and response headers that stay on this side (hop-by-hop).
FORWARD_REQUEST_HEADERS = frozenset({"authorization", "content-type", "accept"})
DROP_RESPONSE_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "date", "server"})


class TunnelStream(abc.ABC):
    """One taster's request: its head, its body as it arrives, whether the relay lets its answer flow."""

    # Whether the tunnel runs the stream from its REQUEST frame (its body then read as it comes) rather than
    # from its END (its body whole).
    starts_before_body = False

    def __init__(self, tunnel, stream_id: int, head: frames.RequestHead):
        self.tunnel, self.id, self.head = tunnel, stream_id, head  # tunnel: a node_agent.tunnel.TunnelConnection
        self.body = bytearray()
        self.received = 0  # body bytes the relay sent, whoever holds them now
        self.complete = False  # END came
        self.flowing = asyncio.Event()  # cleared by PAUSE, set by RESUME
        self.flowing.set()
        self.task: asyncio.Task | None = None

    def receive(self, data) -> None:
        """A DATA frame of the request's body."""
        self.received += len(data)
        self.body += data

    def body_complete(self) -> None:
        """The request's END, for a stream that runs already (starts_before_body)."""
        self.complete = True

    @abc.abstractmethod
    async def run(self) -> None:
        """Serve the request and send its answer (or ERROR) to the relay; the tunnel runs it as the stream's task."""

    async def fail(self, code: str, message: str) -> None:
        """Tell the relay this stream is over without a whole answer."""
        with contextlib.suppress(Exception):
            await self.tunnel.send(frames.encode_json(frames.ERROR, self.id, {"code": code, "message": message}))


# --- in process ---------------------------------------------------------------------------------------------


class TunnelTransport(asyncio.Transport):
    """The "connection" a tunnelled request came on, for a handler that drops it (a taster who stopped reading,
    a body that never came): the stream then ends with ERROR instead of END, which is what the relay would have
    seen of a dropped connection. It has no address and nothing to read."""

    def __init__(self, stream: "DispatchedStream"):
        super().__init__()
        self.stream = stream

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self) -> bool:
        return self.stream.dropped

    def close(self) -> None:
        self.stream.dropped = True

    def abort(self) -> None:
        self.stream.dropped = True


class TunnelProtocol(BaseProtocol):
    """What aiohttp's Request asks of the connection handler a request came through: no TLS of its own (the relay
    has it), no peer address, and nothing to pause (the tunnel bounds a body's size, node_agent/tunnel.py)."""

    ssl_context = None
    peername = None
    sockname = None
    max_field_size = 8190  # aiohttp's defaults, for a form body (the agent reads none)
    max_headers = 128

    def __init__(self, stream: "DispatchedStream"):
        super().__init__(asyncio.get_running_loop())
        self.transport = TunnelTransport(stream)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass

    def force_close(self) -> None:
        pass  # a socket would be closed after this answer; the tunnel is not this request's to close


class FrameWriter(AbstractStreamWriter):
    """aiohttp's response writer, for a tunnelled request: what the handler writes goes to the relay as frames."""

    def __init__(self, stream: "DispatchedStream"):
        self.stream = stream
        self.length = None
        self.head: bytes | None = None  # the RESPONSE frame until it is sent: with the first body bytes, at the latest

    async def write_headers(self, status_line: str, headers: "CIMultiDict[str]") -> None:
        status = int(status_line.split(" ", 2)[1])
        kept = [(name, value) for name, value in headers.items() if name.lower() not in DROP_RESPONSE_HEADERS]
        self.head = frames.ResponseHead(status, kept).encode(self.stream.id)

    def send_headers(self) -> None:
        # A StreamResponse's head is due now, but this is not a coroutine: it goes at the next turn of the loop,
        # unless the handler's first write (usually the very next thing it does) has taken it along by then.
        asyncio.get_running_loop().call_soon(self.stream.head_due)

    async def send_head(self) -> None:
        head = self.head
        if head is not None:
            self.head = None
            await self.stream.tunnel.send(head)

    async def write(self, chunk) -> None:
        stream = self.stream
        if stream.dropped:
            raise ConnectionResetError("the tunnelled request was dropped")
        if not stream.flowing.is_set():
            await stream.flowing.wait()  # PAUSE: the handler waits here, and stops reading the rig, until RESUME
        if self.head is None:
            await self._send_data(chunk)
            return
        with corked(stream.tunnel.socket):  # the head and the first bytes in one segment: the relay wakes once
            await self.send_head()
            await self._send_data(chunk)

    async def write_eof(self, chunk: bytes = b"") -> None:
        stream = self.stream
        if chunk and not stream.flowing.is_set():
            await stream.flowing.wait()
        if stream.dropped:
            raise ConnectionResetError("the tunnelled request was dropped")
        with corked(stream.tunnel.socket if self.head is not None else None):  # a whole answer (a JSON body)
            await self.send_head()
            await self._send_data(chunk)
            await stream.tunnel.send(frames.encode(frames.END, stream.id))

    async def _send_data(self, chunk) -> None:
        if chunk:
            self.output_size += len(chunk)
            send = self.stream.tunnel.send
            for frame in frames.data_frames(self.stream.id, chunk):
                await send(frame)

    async def drain(self) -> None:
        if not self.stream.flowing.is_set():
            await self.stream.flowing.wait()

    def enable_chunking(self) -> None:
        pass  # the frames delimit the body

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise RuntimeError("a tunnelled answer is not compressed (the relay carries it as the agent wrote it)")


class DispatchedStream(TunnelStream):
    """A request served by the agent's own application, in process."""

    def __init__(self, tunnel, stream_id: int, head: frames.RequestHead):
        super().__init__(tunnel, stream_id, head)
        self.dropped = False  # the handler dropped the "connection" (TunnelTransport)
        self.writer = FrameWriter(self)
        self._head_task: asyncio.Task | None = None
        # A request with a body runs from its head: the relay sends the head ahead of a body that is still on its
        # way to it. Until the handler starts, what comes is kept in `body`; if END came by then too, the request
        # is dispatched whole (with its Content-Length), as it was before; else the handler reads a StreamReader
        # fed frame by frame, ended by END.
        self.starts_before_body = head.method not in ("GET", "HEAD", "OPTIONS")
        self._reader: StreamReader | None = None

    def receive(self, data) -> None:
        if self._reader is None:
            super().receive(data)
        else:
            self.received += len(data)
            self._reader.feed_data(bytes(data))

    def body_complete(self) -> None:
        super().body_complete()
        if self._reader is not None:
            self._reader.feed_eof()

    def request_message(self) -> RawRequestMessage:
        head = self.head
        pairs = [(name, value) for name, value in head.headers if name.lower() in FORWARD_REQUEST_HEADERS]
        if self.body and (self.complete or not self.starts_before_body):  # a whole body: its length is known
            pairs.append(("Content-Length", str(len(self.body))))
        return RawRequestMessage(
            head.method,
            head.path,
            HttpVersion11,
            CIMultiDictProxy(CIMultiDict(pairs)),
            tuple((name.encode(), value.encode()) for name, value in pairs),
            False,  # should_close
            None,  # compression
            False,  # upgrade
            False,  # chunked
            URL(head.path, encoded=True),
        )

    def payload(self, protocol: TunnelProtocol) -> StreamReader:
        if self.starts_before_body and not self.complete:
            # The body is still coming: the reader is fed as its frames arrive, and ended by END. Its pausing
            # does nothing (TunnelProtocol): the tunnel bounds what a relay may send (max_body_bytes).
            self._reader = StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
            if self.body:
                self._reader.feed_data(bytes(self.body))
                self.body = bytearray()
            return self._reader
        if not self.body:
            return EMPTY_PAYLOAD
        # A limit the size of the body: the reader never asks the (absent) socket to pause.
        reader = StreamReader(protocol, max(len(self.body), 2**16), loop=asyncio.get_running_loop())
        reader.feed_data(bytes(self.body))
        reader.feed_eof()
        self.body = bytearray()
        return reader

    def head_due(self) -> None:
        if self.writer.head is not None and not self.dropped:
            self._head_task = asyncio.ensure_future(self.writer.send_head())

    async def run(self) -> None:
        app = self.tunnel.client.app
        try:
            protocol = TunnelProtocol(self)
            # What aiohttp's own server does with a request off a socket (web_protocol.RequestHandler): the
            # application's request factory, its handler (router and middlewares), then prepare and write_eof.
            request = app._make_request(
                self.request_message(), self.payload(protocol), protocol, self.writer, asyncio.current_task()
            )
            try:
                response = await app._handle(request)
            except web.HTTPException as exc:  # raised past the middlewares: aiohttp answers with it
                response = exc
            await response.prepare(request)
            await response.write_eof()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever failed, the relay must hear that this stream is over
            self.writer.head = None  # a head not sent yet never follows the ERROR
            if self.dropped:
                await self.fail("upstream_unavailable", "The rig's agent ended the answer.")
            else:
                log.warning("tunnel stream %d: the agent failed to serve it (%s)", self.id, type(exc).__name__)
                await self.fail("upstream_error", "The rig's agent could not serve the request.")
        finally:
            if self._head_task is not None and not self._head_task.done():
                self._head_task.cancel()
            self.tunnel.streams.pop(self.id, None)
            # Answered before its body was whole (a refusal reads none): what still comes of it is dropped, and it
            # no longer counts as a body arriving, END or not (a relay that never sends END cannot pile them up).
            self.tunnel.forget_body(self.id)


# --- over HTTP ----------------------------------------------------------------------------------------------


class ReplayedStream(TunnelStream):
    """A request replayed over HTTP against the server at the tunnel client's `local_base`."""

    async def run(self) -> None:
        t = self.tunnel
        send = t.send
        response = None
        try:
            headers = {k: v for k, v in self.head.headers if k.lower() in FORWARD_REQUEST_HEADERS}
            response = await t.client.session.request(
                self.head.method,
                t.client.local_base + self.head.path,
                headers=headers,
                data=bytes(self.body) if self.body else None,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                allow_redirects=False,
            )
            await send(
                frames.ResponseHead(
                    response.status,
                    [(k, v) for k, v in response.headers.items() if k.lower() not in DROP_RESPONSE_HEADERS],
                ).encode(self.id)
            )
            async for data in response.content.iter_any():
                if not self.flowing.is_set():
                    await self.flowing.wait()  # PAUSE: the local answer is not read (TCP then stops its writer)
                for frame in frames.data_frames(self.id, data):
                    await send(frame)
            await send(frames.encode(frames.END, self.id))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever failed, the relay must hear that this stream is over
            log.warning("tunnel stream %d: the local server did not answer (%s)", self.id, type(exc).__name__)
            await self.fail("upstream_unavailable", "The rig's agent could not serve the request.")
        finally:
            if response is not None:
                # close(), not release(): a half-read answer must drop the connection, so that the handler on
                # the other end is cancelled and the rig stops generating.
                response.close()
            t.streams.pop(self.id, None)

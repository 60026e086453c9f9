"""The tunnel's frame codec: many HTTP exchanges multiplexed over one WebSocket between a node agent and a relay
(docs/relay.md). Pure: no I/O, no asyncio. It lives in the agent package, which the relay depends on, so that both
ends share one codec and never a copy.

A frame is one binary WebSocket message:

    byte 0      version (1)
    byte 1      type (below)
    bytes 2-5   stream id, unsigned big-endian (0: the tunnel itself)
    bytes 6-    payload (its meaning depends on the type)

Heads (`REQUEST`, `RESPONSE`) and `ERROR` / `GOAWAY` carry a small JSON object; `DATA` carries raw body bytes; the
others carry nothing, except `TICKET` (a renewed tunnel ticket, UTF-8). The header is fixed-size so that the hot
path (DATA) is one `struct.unpack_from` and a memoryview slice: no parse of the body it carries."""

import json
import struct
from dataclasses import dataclass

VERSION = 1
HEADER = struct.Struct(">BBI")
HEADER_SIZE = HEADER.size  # 6
MAX_STREAM_ID = 2**32 - 1

# Relay → agent
REQUEST = 0x01  # {method, path, headers: [[name, value], ...]}: a taster's request head; its body follows as DATA
CANCEL = 0x05  # the taster went away, or the relay gave up on the stream: stop and forget it
PAUSE = 0x07  # the taster is not reading: stop reading the rig for this stream
RESUME = 0x08  # the taster caught up
HELLO = 0x0B  # {relay_id, node_id, max_frame_bytes, window_bytes, ticket_expires_at}: the tunnel is accepted
# Agent → relay
RESPONSE = 0x04  # {status, headers: [[name, value], ...]}: the agent's response head; its body follows as DATA
ERROR = 0x06  # {code, message}: the agent could not serve the stream (before or after its head)
TICKET = 0x0A  # a renewed tunnel ticket (UTF-8 JWT) for the open tunnel
# Both ways
DATA = 0x02  # body bytes of the stream (request body relay → agent, response body agent → relay)
END = 0x03  # the sender's side of the stream is complete
GOAWAY = 0x09  # {reason}: the sender is draining; no new streams on this tunnel (stream id 0)

NAMES = {
    REQUEST: "REQUEST",
    DATA: "DATA",
    END: "END",
    RESPONSE: "RESPONSE",
    CANCEL: "CANCEL",
    ERROR: "ERROR",
    PAUSE: "PAUSE",
    RESUME: "RESUME",
    GOAWAY: "GOAWAY",
    TICKET: "TICKET",
    HELLO: "HELLO",
}
JSON_TYPES = frozenset({REQUEST, RESPONSE, ERROR, GOAWAY, HELLO})
EMPTY_TYPES = frozenset({END, CANCEL, PAUSE, RESUME})
TUNNEL_TYPES = frozenset({GOAWAY, TICKET, HELLO})  # stream id 0 only

# Limits (docs/relay.md). A DATA payload is at most MAX_DATA bytes; the whole frame, whatever its type, at most
# MAX_FRAME: the WebSocket's max message size is set to it on both ends, so a larger message closes the tunnel.
MAX_DATA = 64 * 1024
MAX_FRAME = MAX_DATA + HEADER_SIZE
# What to give aiohttp as the WebSocket's max_msg_size: it refuses a message whose size equals its limit, so a
# full-size frame needs one byte of room (found by bench/relay_tunnel.py, where unpaced answers fill whole frames).
WS_MAX_MESSAGE = MAX_FRAME + 1
MAX_HEAD_BYTES = 16 * 1024  # a request or response head (JSON); headers are filtered to a few anyway
MAX_HEADERS = 64

# WebSocket close codes (4000-4999 are the application's).
CLOSE_REFUSED = 4401  # bad, expired or other-relay ticket (the same code as the tracker's /ws/agent/)
CLOSE_REPLACED = 4409  # a newer tunnel for the same node took over
CLOSE_PROTOCOL = 4400  # a frame that breaks this codec or the protocol's rules
CLOSE_TICKET_EXPIRED = 4402  # the ticket expired and no renewed one arrived


class FrameError(ValueError):
    """A frame that breaks the codec: the tunnel that sent it is closed with CLOSE_PROTOCOL."""


@dataclass(frozen=True, slots=True)
class Frame:
    type: int
    stream_id: int
    payload: bytes | memoryview = b""

    def json(self) -> dict:
        """The JSON payload of a head, ERROR, GOAWAY or HELLO frame, as an object (FrameError otherwise)."""
        return decode_json(self.payload)


def encode(type_: int, stream_id: int, payload: bytes = b"") -> bytes:
    if type_ not in NAMES:
        raise FrameError(f"unknown frame type {type_}")
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise FrameError("stream id out of range")
    if len(payload) + HEADER_SIZE > MAX_FRAME:
        raise FrameError("frame too large")
    return HEADER.pack(VERSION, type_, stream_id) + payload


def encode_json(type_: int, stream_id: int, obj: dict) -> bytes:
    return encode(type_, stream_id, json.dumps(obj, separators=(",", ":")).encode())


def data_frames(stream_id: int, body: bytes) -> list[bytes]:
    """A body of any size as DATA frames of at most MAX_DATA bytes each (none for an empty body)."""
    view = memoryview(body)
    return [encode(DATA, stream_id, bytes(view[i : i + MAX_DATA])) for i in range(0, len(body), MAX_DATA)]


def decode(message: bytes) -> Frame:
    """One binary WebSocket message → a Frame. Raises FrameError for anything malformed."""
    if len(message) < HEADER_SIZE:
        raise FrameError("frame shorter than its header")
    if len(message) > MAX_FRAME:
        raise FrameError("frame too large")
    version, type_, stream_id = HEADER.unpack_from(message)
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version}")
    if type_ not in NAMES:
        raise FrameError(f"unknown frame type {type_}")
    payload = memoryview(message)[HEADER_SIZE:]
    if type_ in TUNNEL_TYPES:
        if stream_id != 0:
            raise FrameError(f"{NAMES[type_]} must be sent on stream 0")
    elif stream_id == 0:
        raise FrameError(f"{NAMES[type_]} needs a stream id")
    if type_ in EMPTY_TYPES and len(payload):
        raise FrameError(f"{NAMES[type_]} carries no payload")
    if type_ in (REQUEST, RESPONSE) and len(payload) > MAX_HEAD_BYTES:
        raise FrameError("head too large")
    return Frame(type_, stream_id, payload)


def decode_json(payload: bytes | memoryview) -> dict:
    try:
        obj = json.loads(bytes(payload))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FrameError("payload is not JSON") from exc
    if not isinstance(obj, dict):
        raise FrameError("payload is not a JSON object")
    return obj


# --- heads ------------------------------------------------------------------------------------------------


def _headers_of(obj: dict) -> list[tuple[str, str]]:
    headers = obj.get("headers", [])
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise FrameError("bad headers")
    out = []
    for item in headers:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise FrameError("bad header")
        name, value = item
        # Header injection: a name or value with a line break (or NUL) must never reach an HTTP writer.
        if not name or any(c in name for c in "\r\n\0:") or any(c in value for c in "\r\n\0"):
            raise FrameError("bad header")
        out.append((name, value))
    return out


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: str
    headers: list[tuple[str, str]]

    def encode(self, stream_id: int) -> bytes:
        return encode_json(
            REQUEST, stream_id, {"method": self.method, "path": self.path, "headers": [list(h) for h in self.headers]}
        )

    @classmethod
    def parse(cls, payload) -> "RequestHead":
        obj = decode_json(payload)
        method, path = obj.get("method"), obj.get("path")
        if method not in ("GET", "POST", "OPTIONS"):
            raise FrameError("bad method")
        # Only an absolute path on the agent itself: never a URL, which would make the agent a proxy to elsewhere.
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//") or len(path) > 2048:
            raise FrameError("bad path")
        if any(c in path for c in "\r\n\0 \\") or "://" in path:
            raise FrameError("bad path")
        return cls(method, path, _headers_of(obj))


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: list[tuple[str, str]]

    def encode(self, stream_id: int) -> bytes:
        return encode_json(RESPONSE, stream_id, {"status": self.status, "headers": [list(h) for h in self.headers]})

    @classmethod
    def parse(cls, payload) -> "ResponseHead":
        obj = decode_json(payload)
        status = obj.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise FrameError("bad status")
        return cls(status, _headers_of(obj))

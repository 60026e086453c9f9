"""Frames written together, sent together: both ends of a relay tunnel write each frame as its own WebSocket
message, and with Nagle off (aiohttp's default) each goes out as its own TCP segment and wakes the peer on its own.
Where several are written at once (a response's head and first bytes at the agent, a request's head, body and END at
the relay), `corked` holds them in the kernel (Linux's TCP_CORK) until the last is written, so that the peer reads
them in one go. On a shared machine that made the relay's first token come 0.1-0.4 ms sooner (docs/benchmarks.md,
"The relay"). Without TCP_CORK (not Linux), or without a socket, it does nothing."""

import contextlib
import socket

CORK = getattr(socket, "TCP_CORK", None)


def _cork(sock, value: int) -> bool:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, CORK, value)
    except (OSError, AttributeError):  # not a TCP socket (a Unix socket in a test), or already closed
        return False
    return True


@contextlib.contextmanager
def corked(sock):
    """Hold what is written to `sock` inside the block, and send it as one when the block ends (or when a full
    segment is ready: the kernel never holds more, nor longer than 200 ms)."""
    held = CORK is not None and sock is not None and _cork(sock, 1)
    try:
        yield
    finally:
        if held:
            _cork(sock, 0)

"""The relay as a witness the rig cannot forge: per tasting it measures, from its own clock and the bytes it
carries, the time to the first content chunk, how many content chunks came and at what rate, the bytes, and how
the stream ended; then it reports that with the token's jti (relay/tracker_link.py).

It never parses a chunk as JSON and never keeps text: it counts the `"content":"` keys of the agent's compact
chunk encoding (an empty content, `"content":""`, is not a token), carrying the last few bytes across buffer
boundaries. Inside a JSON string a quote is escaped, so a prompt or answer that contains the same words cannot
be mistaken for a key."""

import time

CONTENT = b'"content":"'
EMPTY = b'"content":""'
TAIL = len(EMPTY) - 1
MIN_RATE_SPAN_SEC = 0.01


class Witness:
    __slots__ = (
        "jti",
        "node_id",
        "mode",
        "stream",
        "started",
        "started_wall",
        "status",
        "bytes",
        "content_chunks",
        "first_content_at",
        "last_content_at",
        "_tail",
    )

    def __init__(self, *, jti: str, node_id: str, mode: str, stream: bool):
        self.jti, self.node_id, self.mode, self.stream = jti, node_id, mode, stream
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.status = 0
        self.bytes = 0
        self.content_chunks = 0
        self.first_content_at: float | None = None
        self.last_content_at: float | None = None
        self._tail = b""

    def saw(self, data) -> None:
        self.bytes += len(data)
        if not self.stream:
            return
        window = self._tail + bytes(data)
        seen = window.count(CONTENT) - window.count(EMPTY)
        if self._tail:  # keys wholly inside the tail were counted with the previous buffer
            seen -= self._tail.count(CONTENT) - self._tail.count(EMPTY)
        self._tail = window[-TAIL:]
        self.content_chunks += seen  # negative when a key counted last time turns out empty: `"content":` + `""`
        if seen > 0:
            now = time.monotonic()
            if self.first_content_at is None:
                self.first_content_at = now
            self.last_content_at = now

    def entry(self, ended: str) -> dict:
        now = time.monotonic()
        ttft = self.first_content_at - self.started if self.first_content_at is not None else None
        rate = None
        # A rate over less than 10 ms says nothing (an answer that arrived in one or two reads): none is reported,
        # rather than a number the tracker would rightly find implausible (and drop the whole entry for).
        if self.content_chunks > 1 and self.last_content_at - self.first_content_at >= MIN_RATE_SPAN_SEC:
            rate = (self.content_chunks - 1) / (self.last_content_at - self.first_content_at)
        return {
            "jti": self.jti,
            "node_id": self.node_id,
            "status": self.status,
            "mode": self.mode,
            "stream": self.stream,
            "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
            "content_chunks": self.content_chunks,
            "chunks_per_sec": round(rate, 3) if rate is not None else None,
            "bytes": self.bytes,
            "ended": ended,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_wall)),
            "duration_ms": round((now - self.started) * 1000, 2),
        }

"""Floods of one log line, written once with a count. A hostile taster can make the agent fail the same way
hundreds of times a second (bad requests, a moderation hook that is down, a socket that cannot be accepted); a
line per event would fill the operator's disk. The first occurrence of a message is written; repeats of the same
message (logger, level and text) within `window` seconds are only counted; when the window is over, one line says
"(repeated N times in W s)". Distinct messages, such as per-request lines with their own ticket, are untouched."""

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp.http_exceptions import HttpProcessingError

# The logger aiohttp's server writes to in the agent (passed to the runner in node_agent/server.py).
HTTP_LOGGER = "luckrig.agent.http"


@dataclass
class _Seen:
    since: float
    where: tuple[str, int]  # the first record's pathname and line (not the record: it may hold a traceback)
    count: int = 0  # repeats not written


class RepeatFilter(logging.Filter):
    """A handler filter: attach it to the handlers that write the agent's log (`install`)."""

    def __init__(self, window: float, *, max_messages: int = 1024, clock=time.monotonic):
        super().__init__()
        self.window, self.max_messages, self.clock = window, max_messages, clock
        self.seen: dict[tuple, _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "luckrig_written", None)
        if decided is not None:  # the same record on a second handler
            return decided
        record.luckrig_written = self._decide(record)
        return record.luckrig_written

    def _decide(self, record: logging.LogRecord) -> bool:
        if getattr(record, "luckrig_repeats", None) is not None or self.window <= 0:
            return True  # a summary line of ours, or counting switched off
        key = (record.name, record.levelno, record.getMessage())
        now = self.clock()
        seen = self.seen.get(key)
        if seen is not None:
            if now - seen.since < self.window:
                seen.count += 1
                return False
            self._summarise(key, seen)
        if len(self.seen) >= self.max_messages:
            self.flush(force=True)  # a flood of distinct messages: forget, rather than grow without bound
        self.seen[key] = _Seen(since=now, where=(record.pathname, record.lineno))
        return True

    def flush(self, *, force: bool = False) -> None:
        """Write the count of every message whose window is over (all of them with `force`)."""
        now = self.clock()
        for key, seen in list(self.seen.items()):
            if force or now - seen.since >= self.window:
                self._summarise(key, seen)

    def _summarise(self, key: tuple, seen: _Seen) -> None:
        self.seen.pop(key, None)
        if not seen.count:
            return
        name, level, message = key
        summary = logging.LogRecord(
            name, level, *seen.where, "%s (repeated %d times in %g s)", (message, seen.count, self.window), None
        )
        summary.luckrig_repeats = seen.count
        logging.getLogger(name).handle(summary)


class MalformedRequests(logging.Filter):
    """aiohttp logs every request it cannot parse (a header over 8 KiB, a bad request line) with a traceback and
    the client's address: anyone can send those by the thousand. They become one line naming the error (no
    address: it is personal data), which RepeatFilter then counts. Real failures keep their tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a malformed request: %s", (type(exc).__name__,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install(window: float) -> RepeatFilter:
    """Attach one RepeatFilter to every handler of the root logger (where `luckrig-node` writes), and quieten
    aiohttp's reports of malformed requests."""
    repeat = RepeatFilter(window)
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeat)
    http = logging.getLogger(HTTP_LOGGER)
    if not any(isinstance(f, MalformedRequests) for f in http.filters):
        http.addFilter(MalformedRequests())
    return repeat


async def flush_forever(repeat: RepeatFilter) -> None:
    """Write the counts as windows end, even when the flood has stopped and no new line comes to trigger it."""
    while True:
        await asyncio.sleep(max(0.2, min(repeat.window / 2, 5.0)))
        repeat.flush()

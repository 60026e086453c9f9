"""Generation slots and the waiting line: `max_active` generations at once, at most `max_waiting` waiters,
friends first (a token issued through a circle this rig serves), then contributors, then limited tasters, first
come first served within each, and at most `max_per_key` requests
of one tasting token in the queue at once (generating plus waiting), so that one taster cannot fill the line.
Each waiter is told its position, and an ETA from measured service times (an exponential moving average of
how long answers that finished normally held their slot), whenever it changes."""

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from node_agent.errors import limited

DEFAULT_SERVICE_SEC = 10.0  # until the first request has finished
EWMA_WEIGHT = 0.3  # a new measurement's weight in the average


@dataclass
class _Slot:
    started: float = field(default_factory=time.monotonic)
    since: float = field(default_factory=time.time)
    measured: bool = False  # its service time is in the average already


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    ticket: str = field(compare=False)
    future: asyncio.Future = field(compare=False)
    since: float = field(compare=False, default_factory=time.time)
    last_position: int = field(compare=False, default=0)
    # (position, eta_sec) each time the position changes; the request handler turns them into SSE comments.
    updates: asyncio.Queue = field(compare=False, default_factory=asyncio.Queue)


class SlotQueue:
    def __init__(
        self,
        max_active: int,
        max_waiting: int,
        *,
        max_per_key: int = 2,
        on_change: Callable[[], None] | None = None,
    ):
        self.max_active, self.max_waiting = max(1, max_active), max(0, max_waiting)
        self.max_per_key = max(1, max_per_key)
        # ticket → when it took its slot: time.monotonic() for intervals (a clock step must not corrupt the average
        # or an ETA), and time.time() only for the `since` the public queue view shows.
        self.active: dict[str, _Slot] = {}
        self.waiters: list[_Waiter] = []
        self.keys: dict[str, str] = {}  # ticket → key (the token's jti), for every ticket active or waiting
        self._seq = itertools.count()
        # Exponential moving average of service time: how long a request holds its slot, measured. Until the first
        # request has finished, nothing is known; DEFAULT_SERVICE_SEC stands in.
        self.avg_service_sec = DEFAULT_SERVICE_SEC
        self.measured = 0
        self.on_change = on_change
        # What a 429 says would earn more, by tier (server.py fills it in with the tracker's URL).
        self.earn_more: Callable[[str], str] = lambda tier: ""

    # --- measurements -----------------------------------------------------------------------------------

    def record_service(self, seconds: float) -> None:
        """One answer's slot time (from taking the slot to the end of its generation), into the moving average.
        The first measurement replaces the stand-in outright: an ETA from a guess would be wrong by the guess."""
        seconds = max(0.05, seconds)
        if self.measured == 0:
            self.avg_service_sec = seconds
        else:
            self.avg_service_sec = (1 - EWMA_WEIGHT) * self.avg_service_sec + EWMA_WEIGHT * seconds
        self.measured += 1

    def finished(self, ticket: str, at: float | None = None) -> None:
        """The answer in `ticket`'s slot finished normally at `at` (time.monotonic()): its slot time so far is a
        measurement. Only a finished answer is: one whose taster hung up after 0.2 s, or whose upstream failed,
        says nothing about how long answers take, and would pull the ETA low. Whatever the slot is held for
        afterwards (a usage question, output moderation) is not generation and is left out too."""
        slot = self.active.get(ticket)
        if slot is None or slot.measured:
            return
        slot.measured = True
        self.record_service((time.monotonic() if at is None else at) - slot.started)

    def eta_seconds(self, position: int, now: float | None = None) -> float:
        """Expected wait of the waiter at `position` (1 = next): the slots free up as their requests finish (each
        active request has about `avg - elapsed` left, at least a tenth of the average), then every further round
        of `max_active` waiters takes one average service time."""
        if position <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        avg = self.avg_service_sec
        remaining = sorted(max(avg * 0.1, avg - (now - slot.started)) for slot in self.active.values())
        remaining += [0.0] * (self.max_active - len(remaining))  # a free slot frees now
        rounds, slot = divmod(position - 1, self.max_active)
        return remaining[slot] + rounds * avg

    def eta_sec(self, position: int) -> int:
        """What a waiter is told: whole seconds, at least one (it is waiting)."""
        return max(1, round(self.eta_seconds(position)))

    # --- admission --------------------------------------------------------------------------------------

    def enter(self, ticket: str, *, tier: str, key: str = "", friend: bool = False) -> "_Waiter | None":
        """Take a free slot at once (None), or join the line (a waiter to `wait` on). Raises 429 token_busy when
        `key` (the token's jti) already has `max_per_key` requests in the queue, 429 queue_full when the line is full.
        `friend`: the token was issued through a circle this rig serves, which goes ahead of every tier.

        Synchronous on purpose: a full queue must be refused before a streaming response has started."""
        if key and sum(1 for k in self.keys.values() if k == key) >= self.max_per_key:
            retry = max(1, round(self.avg_service_sec))
            raise limited(
                "token_busy",
                f"This tasting token already has {self.max_per_key} requests in the rig's queue; "
                f"try again when one has finished (in about {retry} s).",
                retry,
                self.earn_more(tier),
                tier=tier,
            )
        if len(self.active) < self.max_active and not self.waiters:
            self.active[ticket] = _Slot()
            self.keys[ticket] = key
            self._changed()
            return None
        if len(self.waiters) >= self.max_waiting:
            # A place opens when the first waiter gets its slot.
            retry = self.eta_sec(1)
            raise limited(
                "queue_full",
                f"The rig's queue is full ({self.max_waiting} waiting); try again in about {retry} s.",
                retry,
                self.earn_more(tier),
                tier=tier,
            )
        priority = 0 if friend else 1 if tier == "contributor" else 2
        waiter = _Waiter(priority, next(self._seq), ticket, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        self.waiters.sort()
        self.keys[ticket] = key
        self._changed()
        return waiter

    async def wait(self, waiter: "_Waiter") -> None:
        """Wait for the waiter's slot. Cancellation (the client went away) leaves the line at once."""
        try:
            await waiter.future
        except BaseException:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
                self.keys.pop(waiter.ticket, None)
                self._changed()
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.ticket)  # the slot was handed over just as the waiter left
            raise

    def release(self, ticket: str) -> None:
        """Give the slot back (the measurement, if any, was taken by `finished`)."""
        if self.active.pop(ticket, None) is None:
            return
        self.keys.pop(ticket, None)
        while self.waiters and len(self.active) < self.max_active:
            nxt = self.waiters.pop(0)
            if nxt.future.done():
                self.keys.pop(nxt.ticket, None)
                continue
            self.active[nxt.ticket] = _Slot()
            nxt.future.set_result(None)
        self._changed()

    def _changed(self) -> None:
        for position, waiter in enumerate(self.waiters, start=1):
            if waiter.last_position != position:
                waiter.last_position = position
                waiter.updates.put_nowait((position, self.eta_sec(position)))
        if self.on_change is not None:
            self.on_change()

    # --- views ------------------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {
            "active": len(self.active),
            "waiting": len(self.waiters),
            "max_active": self.max_active,
            "max_waiting": self.max_waiting,
        }

    def entries(self, limit: int = 256) -> list[dict]:
        """Opaque tickets, positions and states, for the public queue view (never a jti or an IP)."""
        out = [
            {"ticket": t, "position": 0, "state": "generating", "since": _iso(s.since)} for t, s in self.active.items()
        ]
        out += [
            {"ticket": w.ticket, "position": i, "state": "waiting", "since": _iso(w.since)}
            for i, w in enumerate(self.waiters, start=1)
        ]
        return out[:limit]

    def public_view(self) -> dict:
        """What the tracker shows of this queue: counts, entries, and the wait a new request would have (0 while a
        slot is free)."""
        wait = self.eta_seconds(len(self.waiters) + 1) if len(self.active) >= self.max_active else 0.0
        return {**self.snapshot(), "entries": self.entries(), "eta_sec": round(wait)}


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"

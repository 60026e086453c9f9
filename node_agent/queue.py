"""Generation slots and the waiting line: `max_active` generations at once, at most `max_waiting` waiters,
contributors ahead of limited tasters, first come first served within a tier, and at most `max_per_key` requests
of one tasting token in the queue at once (generating plus waiting), so that one taster cannot fill the line.
Each waiter is told its position (and an ETA from measured generation times) whenever it changes."""

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from node_agent.errors import AgentError


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
        self.active: dict[str, float] = {}  # ticket → started (time.time)
        self.waiters: list[_Waiter] = []
        self.keys: dict[str, str] = {}  # ticket → key (the token's jti), for every ticket active or waiting
        self._seq = itertools.count()
        self._avg_generation_sec = 10.0  # until measured
        self.on_change = on_change

    # --- measurements -----------------------------------------------------------------------------------

    def record_generation(self, seconds: float) -> None:
        """Exponential moving average of generation time: the basis of the ETAs."""
        self._avg_generation_sec = 0.7 * self._avg_generation_sec + 0.3 * max(0.05, seconds)

    def eta_sec(self, position: int) -> int:
        rounds = (position + self.max_active - 1) // self.max_active
        return max(1, round(rounds * self._avg_generation_sec))

    # --- admission --------------------------------------------------------------------------------------

    def enter(self, ticket: str, *, tier: str, key: str = "") -> "_Waiter | None":
        """Take a free slot at once (None), or join the line (a waiter to `wait` on). Raises 429 token_busy when
        `key` (the token's jti) already has `max_per_key` requests in the queue, 429 queue_full when the line is full.

        Synchronous on purpose: a full queue must be refused before a streaming response has started."""
        if key and sum(1 for k in self.keys.values() if k == key) >= self.max_per_key:
            retry = max(1, round(self._avg_generation_sec))
            raise AgentError(
                429,
                "token_busy",
                f"This tasting token already has {self.max_per_key} requests in the rig's queue; "
                f"try again when one has finished (in about {retry} s).",
                headers={"Retry-After": str(retry)},
            )
        if len(self.active) < self.max_active and not self.waiters:
            self.active[ticket] = time.time()
            self.keys[ticket] = key
            self._changed()
            return None
        if len(self.waiters) >= self.max_waiting:
            retry = self.eta_sec(len(self.waiters) + 1)
            raise AgentError(
                429,
                "queue_full",
                f"The rig's queue is full ({self.max_waiting} waiting); try again in about {retry} s.",
                headers={"Retry-After": str(retry)},
            )
        waiter = _Waiter(
            0 if tier == "contributor" else 1, next(self._seq), ticket, asyncio.get_running_loop().create_future()
        )
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
        if self.active.pop(ticket, None) is None:
            return
        self.keys.pop(ticket, None)
        while self.waiters and len(self.active) < self.max_active:
            nxt = self.waiters.pop(0)
            if nxt.future.done():
                self.keys.pop(nxt.ticket, None)
                continue
            self.active[nxt.ticket] = time.time()
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
        out = [{"ticket": t, "position": 0, "state": "generating", "since": _iso(s)} for t, s in self.active.items()]
        out += [
            {"ticket": w.ticket, "position": i, "state": "waiting", "since": _iso(w.since)}
            for i, w in enumerate(self.waiters, start=1)
        ]
        return out[:limit]

    def public_view(self) -> dict:
        """What the tracker shows of this queue: counts, entries, and the ETA a new waiter would get."""
        return {**self.snapshot(), "entries": self.entries(), "eta_sec": self.eta_sec(len(self.waiters) + 1)}


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"

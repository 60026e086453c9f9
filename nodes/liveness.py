"""Liveness rules (pure): a node's status from its agent's heartbeats and the monitor's probes.

- A heartbeat younger than 3 intervals means the agent is alive: `available`, or `busy` when every
  generation slot is taken (a new taster will wait in the queue).
- A node that used to heartbeat and stopped is `unavailable`.
- Probes of `health_url` can only lower that: N consecutive failures (default 3) make a heartbeating node
  `unavailable` (tasters could not reach it either); one failure is a blip and changes nothing.
- A node whose agent never sent a heartbeat is `unknown`, whatever answers at its URL: only the agent, which
  holds the node secret, can say that it is serving."""

from dataclasses import dataclass
from datetime import datetime, timedelta

AVAILABLE, BUSY, UNAVAILABLE, UNKNOWN = "available", "busy", "unavailable", "unknown"


@dataclass
class Observed:
    last_heartbeat_at: datetime | None
    last_probe_at: datetime | None
    consecutive_failures: int
    queue_active: int
    queue_max_active: int


def heartbeat_is_fresh(last_heartbeat_at: datetime | None, now: datetime, interval_sec: int) -> bool:
    return last_heartbeat_at is not None and now - last_heartbeat_at <= timedelta(seconds=3 * interval_sec)


def derive_status(obs: Observed, *, now: datetime, interval_sec: int, failures_before_down: int) -> str:
    if obs.last_heartbeat_at is None:
        return UNKNOWN
    if not heartbeat_is_fresh(obs.last_heartbeat_at, now, interval_sec):
        return UNAVAILABLE
    if obs.consecutive_failures >= failures_before_down:
        return UNAVAILABLE
    if obs.queue_max_active > 0 and obs.queue_active >= obs.queue_max_active:
        return BUSY
    return AVAILABLE


def is_alive(status: str) -> bool:
    return status in (AVAILABLE, BUSY)

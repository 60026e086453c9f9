"""Liveness rules (pure): a node's status from its heartbeats and the monitor's probes.

- A heartbeat younger than 3 intervals means the agent is alive: `available`, or `busy` when every
  generation slot is taken (a new taster will wait in the queue).
- A node that used to heartbeat and stopped is `unavailable`.
- The monitor's probes of `health_url` turn a node `unavailable` only after N consecutive failures (default 3),
  never on one blip; below that the previous status stands.
- Never heard from, never probed: `unknown`."""

from dataclasses import dataclass
from datetime import datetime, timedelta

AVAILABLE, BUSY, UNAVAILABLE, UNKNOWN = "available", "busy", "unavailable", "unknown"


@dataclass
class Observed:
    previous: str
    last_heartbeat_at: datetime | None
    last_probe_at: datetime | None
    consecutive_failures: int
    queue_active: int
    queue_max_active: int


def heartbeat_is_fresh(last_heartbeat_at: datetime | None, now: datetime, interval_sec: int) -> bool:
    return last_heartbeat_at is not None and now - last_heartbeat_at <= timedelta(seconds=3 * interval_sec)


def derive_status(obs: Observed, *, now: datetime, interval_sec: int, failures_before_down: int) -> str:
    probes_down = obs.consecutive_failures >= failures_before_down
    if heartbeat_is_fresh(obs.last_heartbeat_at, now, interval_sec):
        if probes_down:
            return UNAVAILABLE
        if obs.queue_max_active > 0 and obs.queue_active >= obs.queue_max_active:
            return BUSY
        return AVAILABLE
    if obs.last_heartbeat_at is not None:
        return UNAVAILABLE
    if obs.last_probe_at is None:
        return UNKNOWN
    if probes_down:
        return UNAVAILABLE
    if obs.consecutive_failures == 0:
        return AVAILABLE
    return obs.previous  # a blip: keep what we believed


def is_alive(status: str) -> bool:
    return status in (AVAILABLE, BUSY)

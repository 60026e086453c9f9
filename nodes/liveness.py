"""Liveness rules (pure): a node's status from its agent's heartbeats and the monitor's probes, or, for a
relayed node, from its agent's heartbeats and its relay's word about the tunnel.

- A heartbeat younger than 3 intervals means the agent is alive: `available`, or `busy` when every
  generation slot is taken (a new taster will wait in the queue).
- A node that used to heartbeat and stopped is `unavailable`.
- Direct nodes: probes of `health_url` can only lower that: N consecutive failures (default 3) make a
  heartbeating node `unavailable` (tasters could not reach it either); one failure is a blip and changes nothing.
- Relayed nodes have no public URL to probe: the relay is the witness. Such a node is alive only while its
  relay last reported its tunnel open within TUNNEL_FRESH_SEC; a relay heartbeat that no longer lists the
  tunnel clears `tunnel_seen_at`, so the node turns `unavailable` at once (tasters could not reach it).
- A node whose agent never sent a heartbeat is `unknown`, whatever answers at its URL: only the agent, which
  holds the node secret, can say that it is serving."""

from dataclasses import dataclass
from datetime import datetime, timedelta

AVAILABLE, BUSY, UNAVAILABLE, UNKNOWN = "available", "busy", "unavailable", "unknown"
DIRECT, RELAYED = "direct", "relayed"
# Relays heartbeat about every 10 s: three missed heartbeats, plus slack, before a tunnel counts as unseen.
TUNNEL_FRESH_SEC = 45


@dataclass
class Observed:
    last_heartbeat_at: datetime | None
    last_probe_at: datetime | None
    consecutive_failures: int
    queue_active: int
    queue_max_active: int
    reachability: str = DIRECT
    tunnel_seen_at: datetime | None = None


def heartbeat_is_fresh(last_heartbeat_at: datetime | None, now: datetime, interval_sec: int) -> bool:
    return last_heartbeat_at is not None and now - last_heartbeat_at <= timedelta(seconds=3 * interval_sec)


def tunnel_is_fresh(tunnel_seen_at: datetime | None, now: datetime) -> bool:
    return tunnel_seen_at is not None and now - tunnel_seen_at <= timedelta(seconds=TUNNEL_FRESH_SEC)


def derive_status(obs: Observed, *, now: datetime, interval_sec: int, failures_before_down: int) -> str:
    if obs.last_heartbeat_at is None:
        return UNKNOWN
    if not heartbeat_is_fresh(obs.last_heartbeat_at, now, interval_sec):
        return UNAVAILABLE
    if obs.reachability == RELAYED:
        if not tunnel_is_fresh(obs.tunnel_seen_at, now):
            return UNAVAILABLE
    elif obs.consecutive_failures >= failures_before_down:
        return UNAVAILABLE
    if obs.queue_max_active > 0 and obs.queue_active >= obs.queue_max_active:
        return BUSY
    return AVAILABLE


def is_alive(status: str) -> bool:
    return status in (AVAILABLE, BUSY)

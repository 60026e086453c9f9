"""Which relay serves which relayed node (pure): rendezvous, or highest-random-weight, hashing.

Every (relay, node) pair gets a score from SHA-256; a node goes to the eligible relay with the highest score.
A node therefore stays on its relay for as long as that relay is eligible, whatever other relays come and go,
and when its relay leaves, only that relay's nodes move, spread evenly over the others (Thaler and Ravishankar,
1996). Nothing needs to be stored or coordinated: any tracker process computes the same answer."""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

# A relay is eligible while its last heartbeat is younger than this and it is not draining.
LIVE_SEC = 60
# An agent that could not dial its relay names it; the relay is passed over when its last heartbeat is older
# than this (a relay killed without a goodbye would otherwise keep its nodes for up to LIVE_SEC). A relay that
# heartbeats on time is kept: the trouble is then more likely on the agent's side.
UNREACHABLE_STALE_SEC = 15


@dataclass(frozen=True)
class RelayState:
    id: str
    last_heartbeat_at: datetime | None
    draining: bool = False


def score(relay_id: str, node_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{relay_id}|{node_id}".encode()).digest(), "big")


def choose(relay_ids: Iterable[str], node_id: str) -> str | None:
    """The relay with the highest score for this node (ties, practically impossible, go to the larger id)."""
    best = None
    for relay_id in relay_ids:
        key = (score(relay_id, node_id), relay_id)
        if best is None or key > best:
            best = key
    return best[1] if best is not None else None


def is_live(relay: RelayState, now: datetime) -> bool:
    return (
        not relay.draining
        and relay.last_heartbeat_at is not None
        and relay.last_heartbeat_at >= now - timedelta(seconds=LIVE_SEC)
    )


def eligible(relays: Iterable[RelayState], now: datetime, *, unreachable_relay_id: str | None = None) -> list[str]:
    """Ids of the live relays, without the one the agent could not reach if that one has gone quiet."""
    stale = now - timedelta(seconds=UNREACHABLE_STALE_SEC)
    return [
        r.id for r in relays if is_live(r, now) and not (r.id == unreachable_relay_id and r.last_heartbeat_at < stale)
    ]

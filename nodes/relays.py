"""Relays as the nodes app sees them: which relay a relayed node is assigned (rendezvous hashing over the
relays' heartbeats), what a relay's heartbeat says about its tunnels, with the node statuses that follow, and the
timing samples a relay's report adds. Relay credentials, tickets and the reports' token side are the tracker's
(tracker.relays). Must not import tracker, moderation or showcase."""

from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.api_errors import ApiError
from nodes import liveness, queue_feed, rendezvous
from nodes.models import Node, Relay, TimingSample

# What deriving a relayed node's status reads (nodes.services.observed), and what a queue broadcast needs.
_STATUS_FIELDS = (
    "id",
    "status",
    "reachability",
    "last_heartbeat_at",
    "last_probe_at",
    "consecutive_failures",
    "queue_active",
    "queue_max_active",
    "tunnel_seen_at",
)
_CHUNK = 500


def pick_relay(
    node_id: str, now: datetime, *, unreachable_relay_id: str | None = None, any_if_none_live: bool = False
) -> Relay | None:
    """The relay rendezvous hashing gives this node among the live relays (None when none is live). With
    `any_if_none_live`, a registration made while every relay is quiet still gets one: the relays that are
    registered are the best guess of where the node's agent will find one."""
    relays = {r.id: r for r in Relay.objects.all()}  # a handful of rows: one per relay process
    chosen = rendezvous.choose(
        rendezvous.eligible([r.state for r in relays.values()], now, unreachable_relay_id=unreachable_relay_id),
        node_id,
    )
    if chosen is None and any_if_none_live:
        chosen = rendezvous.choose(relays, node_id)
    return relays.get(chosen) if chosen is not None else None


NO_RELAY_RETRY_AFTER_SEC = 10


@transaction.atomic
def assign_relay(node_id: str, now: datetime, *, unreachable_relay_id: str | None = None) -> tuple[Node, Relay]:
    """The relay this relayed node should dial now, stored on the node. Rendezvous hashing over the live relays
    keeps a node on its relay while that relay heartbeats; when it stops (or drains, or the agent could not
    reach it and it has gone quiet), the node moves to the next relay in its own order."""
    # A hidden node is gone from every surface where a node is named (its heartbeats still answer, so that
    # its agent learns the revoked jtis): no relay carries tasters to it.
    node = Node.objects.in_service().select_for_update().filter(pk=node_id).first()
    if node is None:
        raise ApiError(404, "node_not_found", f"No node {node_id!r}.")
    if not node.is_relayed:
        raise ApiError(
            409,
            "not_relayed",
            f"Node {node.id!r} is direct: tasters call its endpoint_url. Register it without one (or PATCH "
            "endpoint_url to null) to have it relayed.",
        )
    relay = pick_relay(node.id, now, unreachable_relay_id=unreachable_relay_id)
    if relay is None:
        raise ApiError(
            503,
            "no_relay_available",
            "No relay is up right now; try again shortly.",
            extra={"retry_after_sec": NO_RELAY_RETRY_AFTER_SEC},
            headers={"Retry-After": str(NO_RELAY_RETRY_AFTER_SEC)},
        )
    if node.relay_id != relay.id:
        Node.objects.filter(pk=node.pk).update(relay=relay)
    return node, relay


def _status(row: dict, tunnel_seen_at: datetime | None, now: datetime) -> str:
    return liveness.derive_status(
        liveness.Observed(
            last_heartbeat_at=row["last_heartbeat_at"],
            last_probe_at=row["last_probe_at"],
            consecutive_failures=row["consecutive_failures"],
            queue_active=row["queue_active"],
            queue_max_active=row["queue_max_active"],
            reachability=row["reachability"],
            tunnel_seen_at=tunnel_seen_at,
        ),
        now=now,
        interval_sec=settings.HEARTBEAT_INTERVAL_SEC,
        failures_before_down=settings.MONITOR_FAILURES_BEFORE_DOWN,
    )


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _broadcast_later(node_ids: list[str]) -> None:
    """A status change reaches the queue subscribers the way a heartbeat's does: a snapshot after commit."""
    if not node_ids:
        return

    def send():
        for chunk in _chunks(node_ids):
            for node in Node.objects.filter(pk__in=chunk).only(*queue_feed.MESSAGE_FIELDS):
                queue_feed.broadcast(node)

    transaction.on_commit(send)


@transaction.atomic
def record_relay_heartbeat(
    *,
    relay: Relay,
    version: str,
    tunnels: list[str],
    open_streams: int,
    draining: bool,
    now: datetime | None = None,
) -> list[dict]:
    """Store what the relay says about itself, then about its tunnels: a relayed node assigned to this relay
    whose tunnel is listed is seen now; one whose tunnel is not listed has lost it, and stops counting as
    reachable at once. Tunnels of nodes assigned to another relay (or to none) are ignored. Returns the live
    relays, for the relay's answer."""
    now = now or timezone.now()
    relay.last_heartbeat_at, relay.version, relay.draining = now, version, draining
    relay.tunnels, relay.open_streams = len(tunnels), open_streams
    relay.save(update_fields=["last_heartbeat_at", "version", "draining", "tunnels", "open_streams"])

    listed = set(tunnels)
    assigned = Node.objects.filter(relay=relay, reachability=Node.Reachability.RELAYED).values(*_STATUS_FIELDS)
    seen, gone, by_status = [], [], {}
    for row in assigned:
        open_now = row["id"] in listed
        tunnel_seen_at = now if open_now else None
        if open_now:
            seen.append(row["id"])
        elif row["tunnel_seen_at"] is not None:
            gone.append(row["id"])
        status = _status(row, tunnel_seen_at, now)
        if status != row["status"]:
            by_status.setdefault(status, []).append(row["id"])
    for chunk in _chunks(seen):
        Node.objects.filter(pk__in=chunk).update(tunnel_seen_at=now)
    for chunk in _chunks(gone):
        Node.objects.filter(pk__in=chunk).update(tunnel_seen_at=None)
    changed = []
    for status, ids in by_status.items():
        for chunk in _chunks(ids):
            Node.objects.filter(pk__in=chunk).update(status=status)
        changed.extend(ids)
    _broadcast_later(changed)
    return [
        {"relay_id": r.id, "public_url": r.public_url}
        for r in Relay.objects.live(now).order_by("id").only("id", "public_url")
    ]


@transaction.atomic
def register_relay(*, relay_id: str, public_url: str, secret_hash: str) -> tuple[Relay, bool]:
    """Add a relay row, or give an existing one a new URL and secret hash (tracker.relays makes the secret)."""
    relay, created = Relay.objects.select_for_update().get_or_create(
        pk=relay_id, defaults={"public_url": public_url, "secret_hash": secret_hash}
    )
    if not created:
        relay.public_url, relay.secret_hash = public_url, secret_hash
        relay.save(update_fields=["public_url", "secret_hash"])
    return relay, created


@transaction.atomic
def remove_relay(relay_id: str) -> int | None:
    """Remove a relay row after its nodes have let go of it (forget_relay); how many it served, or None when
    there was no such relay."""
    relay = Relay.objects.select_for_update().filter(pk=relay_id).first()
    if relay is None:
        return None
    moved = forget_relay(relay)
    relay.delete()
    return moved


@transaction.atomic
def forget_relay(relay: Relay, now: datetime | None = None) -> int:
    """Before a relay is removed: its nodes lose their tunnel (and their public URL) now; each is assigned
    another relay on its agent's next tunnel request. Returns how many nodes were assigned to it."""
    now = now or timezone.now()
    rows = list(Node.objects.filter(relay=relay).values(*_STATUS_FIELDS))
    by_status: dict[str, list[str]] = {}
    for row in rows:
        status = _status(row, None, now) if row["reachability"] == Node.Reachability.RELAYED else row["status"]
        if status != row["status"]:
            by_status.setdefault(status, []).append(row["id"])
    ids = [r["id"] for r in rows]
    for chunk in _chunks(ids):
        Node.objects.filter(pk__in=chunk).update(relay=None, tunnel_seen_at=None)
    changed = []
    for status, group in by_status.items():
        for chunk in _chunks(group):
            Node.objects.filter(pk__in=chunk).update(status=status)
        changed.extend(group)
    _broadcast_later(changed)
    return len(rows)


# --- relay timing samples ---------------------------------------------------------------------------


def makes_a_timing_sample(entry: dict) -> bool:
    """A stream that answered: a first content chunk was seen, so time to it and the rate mean something."""
    return entry["status"] == 200 and entry["stream"] and entry["content_chunks"] >= 1 and entry["ttft_ms"] is not None


def add_relay_samples(per_jti: dict[str, list[dict]], now: datetime) -> list[TimingSample]:
    """One relay sample per jti: the first streamed answer reported for it (a jti that already has one, from
    an earlier report, gets no other)."""
    taken = set(
        TimingSample.objects.filter(jti__in=list(per_jti), source=TimingSample.Source.RELAY).values_list(
            "jti", flat=True
        )
    )
    samples = []
    for jti, mine in per_jti.items():
        if jti in taken:
            continue
        entry = next((e for e in sorted(mine, key=lambda e: e["started_at"]) if makes_a_timing_sample(e)), None)
        if entry is None:
            continue
        samples.append(
            TimingSample(
                node_id=entry["node_id"],
                jti=jti,
                source=TimingSample.Source.RELAY,
                created_at=now,
                mode=entry["mode"],
                ttft_ms=entry["ttft_ms"],
                tok_per_sec=entry["chunks_per_sec"],
                output_tokens=entry["content_chunks"],
                generation_sec=round(entry["duration_ms"] / 1000, 3),
            )
        )
    # A concurrent report of the same jti (another report id) may have stored one meanwhile: keep that one.
    TimingSample.objects.bulk_create(samples, ignore_conflicts=True)
    return samples

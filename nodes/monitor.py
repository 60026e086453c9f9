"""The node side of a liveness-monitor cycle: probe every visible direct node's agent, update status and
failure counts, take a health sample when one is due, and keep the uptime counters and alive days. It writes
only Node and HealthSample; the cycle around it (bans, scores, pruning the tracker's tables) is
tracker.monitor's. Must not import tracker, moderation or showcase.

Relayed nodes have no public URL and are never probed: their relay is the witness. A relayed node's status
follows its agent's heartbeats and its relay's tunnel reports (nodes.liveness), and a tunnel its relay saw
open in the last TUNNEL_FRESH_SEC stands in for a successful probe (the tracker seeing the node alive)."""

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from core.urlguard import FetchResult
from nodes import liveness
from nodes import services as node_services
from nodes.models import HealthSample, Node
from nodes.probes import probe_all

ALIVE = [liveness.AVAILABLE, liveness.BUSY]

_FIELDS = [
    "status",
    "consecutive_failures",
    "latency_ms",
    "last_error",
    "last_probe_at",
    "alive_days",
    "last_alive_on",
    "last_sampled_at",
    "uptime_hours",
    "uptime_ratio_24h",
    "uptime_ratio_7d",
]
_READ = [
    "id",
    "owner_id",
    "health_url",
    "reachability",
    "tunnel_seen_at",
    "status",
    "last_heartbeat_at",
    "last_probe_at",
    "consecutive_failures",
    "queue_active",
    "queue_max_active",
    "latency_ms",
    "last_error",
    "alive_days",
    "last_alive_on",
    "last_sampled_at",
    "uptime_hours",
    "uptime_ratio_24h",
    "uptime_ratio_7d",
]


# A node whose agent never sent a heartbeat is not listed, and a probe cannot make it alive: it is probed only to
# tell its owner what the tracker sees at its URL, at most once an hour and at most UNREPORTED_PER_OWNER per owner
# and cycle, so that a thousand dead registrations cannot slow the cycle for the rigs that serve.
UNREPORTED_PROBE_EVERY = timedelta(hours=1)
UNREPORTED_PER_OWNER = 10


@dataclass
class Observed:
    """What one cycle saw, not yet stored: the nodes with their new values, the samples due, and tallies."""

    nodes: list[Node]
    samples: list[HealthSample] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # answered: last_seen_at = now
    new_days: list[str] = field(default_factory=list)  # counted an alive day: their existence score changes
    alive: int = 0
    changed: int = 0


def names_this_node(body: bytes, node_id: str) -> bool:
    """A probe counts only when the agent's /health names this node: any web page answering 200 is not a
    rig (and must not earn its owner contribution points)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("node_id") == node_id


def this_cycle(nodes: list[Node], now: datetime) -> list[Node]:
    """The nodes this cycle looks at: every node whose agent has reported in; of the others, the direct ones not
    probed for an hour, the longest unprobed first, at most UNREPORTED_PER_OWNER per owner. The rest are left
    alone (no probe, no write, no sample): they are `unknown` until their agent heartbeats."""
    chosen, waiting = [], []
    for node in nodes:
        if node.last_heartbeat_at is not None:
            chosen.append(node)
        elif not node.is_relayed and (node.last_probe_at is None or now - node.last_probe_at >= UNREPORTED_PROBE_EVERY):
            waiting.append(node)
    per_owner: dict[str, int] = {}
    for node in sorted(waiting, key=lambda n: (n.last_probe_at is not None, n.last_probe_at or now, n.id)):
        if per_owner.get(node.owner_id, 0) < UNREPORTED_PER_OWNER:
            per_owner[node.owner_id] = per_owner.get(node.owner_id, 0) + 1
            chosen.append(node)
    return chosen


def observe(now: datetime, *, jitter_sec: float | None = None) -> Observed:
    """Probe this cycle's nodes and work out their new values; nothing is written yet (see store())."""
    nodes = this_cycle(list(Node.objects.in_service().only(*_READ)), now)
    jitter = min(2.0, settings.MONITOR_INTERVAL_SEC * 0.1) if jitter_sec is None else jitter_sec
    results = asyncio.run(
        probe_all(
            [(n.id, n.health_url) for n in nodes if not n.is_relayed],
            concurrency=settings.MONITOR_CONCURRENCY,
            timeout_sec=settings.MONITOR_PROBE_TIMEOUT_SEC,
            jitter_sec=jitter,
            allow_private=settings.ALLOW_PRIVATE_NODE_URLS,
        )
    )

    sample_every = timedelta(seconds=settings.HEALTH_SAMPLE_INTERVAL_SEC)
    cycle = Observed(nodes)
    for node in nodes:
        before = node.status
        if node.is_relayed:
            result = _tunnel_witness(node, now)
            ok = result.ok
        else:
            result = results[node.id]
            node.last_probe_at = now
            ok = result.ok and names_this_node(result.body, node.id)
        if ok:
            node.consecutive_failures, node.latency_ms, node.last_error = 0, result.latency_ms, ""
            cycle.seen.append(node.id)
        elif node.is_relayed:
            node.consecutive_failures, node.latency_ms, node.last_error = 0, None, result.error
        else:
            node.consecutive_failures += 1
            node.last_error = (result.error or "the health document does not name this node")[:300]
        # An alive day comes from the agent's own heartbeats (which need the node secret), never from a probe alone:
        # a static file at a URL the owner chose can answer a probe, and must not earn existence points.
        heartbeating = liveness.heartbeat_is_fresh(node.last_heartbeat_at, now, settings.HEARTBEAT_INTERVAL_SEC)
        if heartbeating and ok and node_services.mark_alive_day(node, now):
            cycle.new_days.append(node.id)
        node.status = node_services.current_status(node, now)
        cycle.alive += liveness.is_alive(node.status)
        cycle.changed += node.status != before
        if node.last_sampled_at is None or now - node.last_sampled_at >= sample_every:
            node.last_sampled_at = now
            node_services.add_uptime_sample(node, liveness.is_alive(node.status), now)
            cycle.samples.append(
                HealthSample(
                    node=node,
                    at=now,
                    status=node.status,
                    latency_ms=result.latency_ms if ok else None,
                    error="" if ok else node.last_error,
                )
            )
    return cycle


@transaction.atomic
def store(cycle: Observed, now: datetime, *, cycle_started: datetime) -> None:
    """Write what observe() saw. Nodes whose agent or relay reported since `cycle_started` keep the status
    their fresher facts give."""
    Node.objects.bulk_update(cycle.nodes, _FIELDS, batch_size=500)
    for start in range(0, len(cycle.seen), 500):
        Node.objects.filter(pk__in=cycle.seen[start : start + 500]).update(last_seen_at=now)
    # A heartbeat that arrived while the probes ran set a status from fresher facts than this cycle read;
    # re-derive those nodes so that the bulk write above cannot turn a live agent unavailable. The same for
    # relayed nodes whose relay reported on their tunnel meanwhile, and for queue reports: a queue that drained
    # during the cycle was otherwise written back `busy` from the count read at its start, until the agent's
    # next heartbeat (issue 12).
    touched = Q(last_heartbeat_at__gte=cycle_started) | Q(tunnel_seen_at__gte=cycle_started)
    touched |= Q(queue_updated_at__gte=cycle_started)
    touched |= Q(reachability=Node.Reachability.RELAYED, tunnel_seen_at__isnull=True, status__in=ALIVE)
    for fresh in Node.objects.in_service().filter(touched):
        status = node_services.current_status(fresh, now)
        if status != fresh.status:
            Node.objects.filter(pk=fresh.pk).update(status=status)
    HealthSample.objects.bulk_create(cycle.samples, batch_size=500)


def _tunnel_witness(node: Node, now: datetime) -> FetchResult:
    """A relayed node's stand-in for a probe: did its relay see its tunnel open lately?"""
    if liveness.tunnel_is_fresh(node.tunnel_seen_at, now):
        return FetchResult(ok=True, status=None, latency_ms=None, body=b"", error="")
    return FetchResult(ok=False, status=None, latency_ms=None, body=b"", error="its relay reports no open tunnel")

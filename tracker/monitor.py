"""One cycle of the liveness monitor: probe every visible node, update status and failure counts, record one
health sample per node, refresh uptime ratios and existence scores, and prune old samples."""

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from nodes import liveness
from nodes import services as node_services
from nodes.models import HealthSample, Node
from nodes.probes import probe_all
from tracker.services import refresh_scores

log = logging.getLogger("luckrig.monitor")

_FIELDS = [
    "status",
    "consecutive_failures",
    "latency_ms",
    "last_error",
    "last_probe_at",
    "last_seen_at",
    "alive_days",
    "last_alive_on",
]


@dataclass
class CycleReport:
    probed: int
    alive: int
    changed: int
    pruned: int


def run_cycle(now: datetime, *, jitter_sec: float | None = None) -> CycleReport:
    cycle_started = timezone.now()
    nodes = list(
        Node.objects.visible().only(
            "id",
            "health_url",
            "status",
            "last_heartbeat_at",
            "last_probe_at",
            "consecutive_failures",
            "queue_active",
            "queue_max_active",
            "latency_ms",
            "last_error",
            "last_seen_at",
            "alive_days",
            "last_alive_on",
        )
    )
    jitter = min(2.0, settings.MONITOR_INTERVAL_SEC * 0.1) if jitter_sec is None else jitter_sec
    results = asyncio.run(
        probe_all(
            [(n.id, n.health_url) for n in nodes],
            concurrency=settings.MONITOR_CONCURRENCY,
            timeout_sec=settings.MONITOR_PROBE_TIMEOUT_SEC,
            jitter_sec=jitter,
            allow_private=settings.ALLOW_PRIVATE_NODE_URLS,
        )
    )

    samples, new_days, changed, alive = [], [], 0, 0
    for node in nodes:
        result = results[node.id]
        before = node.status
        node.last_probe_at = now
        if result.ok:
            node.consecutive_failures = 0
            node.latency_ms = result.latency_ms
            node.last_error = ""
            node.last_seen_at = now
        else:
            node.consecutive_failures += 1
            node.last_error = result.error[:300]
        node.status = node_services.current_status(node, now)
        if liveness.is_alive(node.status):
            alive += 1
            if node_services.mark_alive_day(node, now):
                new_days.append(node.id)
        changed += node.status != before
        samples.append(
            HealthSample(
                node=node,
                at=now,
                status=node.status,
                latency_ms=result.latency_ms if result.ok else None,
                error="" if result.ok else result.error[:300],
            )
        )
    with transaction.atomic():
        Node.objects.bulk_update(nodes, _FIELDS, batch_size=500)
        # A heartbeat that arrived while the probes ran set a status from fresher facts than this cycle read;
        # re-derive those nodes so that the bulk write above cannot turn a live agent unavailable.
        for fresh in Node.objects.visible().filter(last_heartbeat_at__gte=cycle_started):
            status = node_services.current_status(fresh, now)
            if status != fresh.status:
                Node.objects.filter(pk=fresh.pk).update(status=status)
        HealthSample.objects.bulk_create(samples, batch_size=500)
        node_services.refresh_uptime(None, now)
        refresh_scores(new_days)
        pruned = node_services.prune_samples(now)
    log.debug(
        "monitor: probed %d nodes, %d alive, %d changed status, pruned %d samples",
        len(nodes),
        alive,
        changed,
        pruned,
    )
    return CycleReport(len(nodes), alive, changed, pruned)

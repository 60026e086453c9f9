"""One cycle of the liveness monitor, around the node side of it (nodes.monitor: probes, statuses, health
samples, uptime, alive days): bring ban ends up to date first, refresh the existence scores of the nodes that
counted a new alive day, re-check rarity and the showcase (a safety net for concurrent registrations), and
prune old rows. It may import nodes; it must not import moderation or showcase."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from nodes import monitor as node_monitor
from nodes import services as node_services
from tracker import bans
from tracker.models import QuotaBucket, RelayReport, UsageReport
from tracker.scoring import refresh_scores

log = logging.getLogger("luckrig.monitor")


@dataclass
class CycleReport:
    probed: int
    alive: int
    changed: int
    pruned: int


def run_cycle(now: datetime, *, jitter_sec: float | None = None) -> CycleReport:
    cycle_started = timezone.now()
    # Lifted contributor bans (and any ban changed around the workflows) show within one cycle.
    bans.reconcile()
    cycle = node_monitor.observe(now, jitter_sec=jitter_sec)
    with transaction.atomic():
        node_monitor.store(cycle, now, cycle_started=cycle_started)
        refresh_scores(cycle.new_days)
    # Registrations in parallel transactions can each miss the other's row when counting rarity (READ
    # COMMITTED): every cycle recounts, and refreshes the showcase, so any such drift lasts one cycle.
    with transaction.atomic():
        refresh_scores(node_services.refresh_rarity(None))
        node_services.refresh_showcase()
    pruned = prune(now)
    log.debug(
        "monitor: probed %d nodes, %d alive, %d changed status, pruned %d rows",
        len(cycle.nodes),
        cycle.alive,
        cycle.changed,
        pruned,
    )
    return CycleReport(len(cycle.nodes), cycle.alive, cycle.changed, pruned)


def prune(now: datetime) -> int:
    """Old health samples, past days' quota buckets and old usage- and relay-report ids (retries come within
    hours)."""
    pruned = node_services.prune_samples(now)
    pruned += QuotaBucket.objects.filter(day__lt=(now - timedelta(days=2)).date()).delete()[0]
    pruned += UsageReport.objects.filter(received_at__lt=now - timedelta(days=30)).delete()[0]
    pruned += RelayReport.objects.filter(received_at__lt=now - timedelta(days=30)).delete()[0]
    return pruned

"""The tracker side of a liveness-monitor cycle (tracker.monitor): existence scores from alive days, pruning the
tracker's rows, the `monitor` command. Its node side (probes, statuses, samples): tests/nodes/test_monitor.py."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from nodes.models import Node
from tests import factories
from tests.factories import monitor_cycle
from tracker.models import QuotaBucket

pytestmark = pytest.mark.django_db


def test_existence_score_grows_with_days_seen_alive(monitored_node, api):
    node, secret = monitored_node
    start = timezone.now()
    for day in range(3):
        factories.heartbeat(api, node, secret)
        Node.objects.filter(pk=node.pk).update(last_heartbeat_at=start + timedelta(days=day))
        monitor_cycle(start + timedelta(days=day))
        monitor_cycle(start + timedelta(days=day, hours=1))
    node.refresh_from_db()
    assert node.alive_days == 3
    # Days alive earn existence points only once the node has served someone else (docs/scoring.md).
    assert node.contribution_components["existence"] == 0.0


def test_old_quota_rows_are_pruned(monitored_node):
    QuotaBucket.objects.create(key="ip:x", day=(timezone.now() - timedelta(days=5)).date(), used=3)
    QuotaBucket.objects.create(key="ip:y", day=timezone.now().date(), used=3)
    monitor_cycle()
    assert list(QuotaBucket.objects.values_list("key", flat=True)) == ["ip:y"]


def test_the_monitor_command_runs_a_cycle(monitored_node, capsys):
    call_command("monitor", "--once")
    assert "probed 1, alive 1" in capsys.readouterr().out

"""The node side of the liveness monitor (nodes.monitor: probes, statuses, samples, uptime, alive days), through
a whole cycle against real HTTP servers on 127.0.0.1. The cycle's tracker side: tests/tracker/test_monitor.py."""

import json
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from nodes.models import HealthSample, Node
from tests import factories
from tests.factories import monitor_cycle
from tests.httpserver import Route, agent_health

pytestmark = pytest.mark.django_db


def test_a_healthy_agent_is_available_with_history_and_uptime(monitored_node, server, api):
    node, _ = monitored_node
    report = monitor_cycle()
    assert report.probed == 1 and report.alive == 1
    node.refresh_from_db()
    assert node.status == "available" and node.latency_ms is not None and node.alive_days == 1
    assert node.uptime_ratio_24h == 1.0 and node.uptime_ratio_7d == 1.0
    assert server.hits == ["/health"]
    status, metrics = api.get(f"/api/nodes/{node.id}/metrics")
    assert status == 200 and metrics["samples"] == 1 and metrics["recent"][0]["status"] == "available"
    assert metrics["uptime_ratio_24h"] == 1.0


def test_three_consecutive_failures_not_one_make_a_node_unavailable(monitored_node, server, api):
    node, secret = monitored_node
    monitor_cycle()
    server.routes["/health"] = Route(503, b"loading")
    statuses = []
    for _ in range(3):
        monitor_cycle()
        node.refresh_from_db()
        statuses.append(node.status)
    assert statuses == ["available", "available", "unavailable"]
    assert node.last_error == "HTTP 503"
    assert node.uptime_ratio_24h == 0.75  # 3 of 4 samples alive
    server.routes["/health"] = agent_health(node)
    monitor_cycle()
    node.refresh_from_db()
    assert node.status == "available" and node.consecutive_failures == 0
    _, metrics = api.get(f"/api/nodes/{node.id}/metrics")
    assert [p["status"] for p in metrics["recent"]] == [
        "available",
        "unavailable",
        "available",
        "available",
        "available",
    ]


def test_a_page_that_does_not_name_the_node_is_not_its_agent(monitored_node, server):
    node, _ = monitored_node
    server.routes["/health"] = Route(200, b'{"ok": true}')
    monitor_cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "does not name this node" in node.last_error
    assert node.alive_days == 0


def test_without_a_heartbeat_a_node_stays_unknown_even_if_its_url_answers(probe_settings, server, owner):
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    server.routes["/health"] = agent_health(node)
    monitor_cycle()
    node.refresh_from_db()
    assert node.status == "unknown"
    # No alive day either: a URL that answers (a static JSON file would) is not an agent that runs (issue 11).
    assert node.alive_days == 0


def test_a_silent_agent_turns_unavailable(monitored_node):
    node, _ = monitored_node
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    monitor_cycle()
    node.refresh_from_db()
    assert node.status == "unavailable"


def test_a_slow_endpoint_times_out(monitored_node, server, settings):
    node, _ = monitored_node
    settings.MONITOR_PROBE_TIMEOUT_SEC = 0.3
    server.routes["/health"] = Route(200, delay=1.5)
    monitor_cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "timed out" in node.last_error


def test_probes_refuse_private_addresses_unless_allowed(server, owner, settings):
    settings.ALLOW_PRIVATE_NODE_URLS = False
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    server.routes["/health"] = agent_health(node)
    monitor_cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and node.last_error.startswith("blocked")
    assert server.hits == []


def test_redirects_are_not_followed(monitored_node, server):
    node, _ = monitored_node
    server.routes["/health"] = Route(302, headers={"Location": "http://169.254.169.254/latest"})
    monitor_cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "redirect" in node.last_error


def test_samples_are_taken_at_the_sample_interval_and_pruned(monitored_node, settings):
    node, _ = monitored_node
    settings.HEALTH_SAMPLE_INTERVAL_SEC = 300
    settings.HEALTH_RETENTION_DAYS = 8
    HealthSample.objects.create(node=node, at=timezone.now() - timedelta(days=9), status="unavailable")
    now = timezone.now()
    monitor_cycle(now)
    monitor_cycle(now + timedelta(seconds=30))
    assert HealthSample.objects.filter(node=node, at__gte=now - timedelta(days=1)).count() == 1
    monitor_cycle(now + timedelta(seconds=301))
    assert HealthSample.objects.filter(node=node).count() == 2  # the 9-day-old one was pruned


def test_uptime_ratios_come_from_hourly_counters_over_a_week(monitored_node, server):
    node, secret = monitored_node
    start = timezone.now()
    monitor_cycle(start - timedelta(days=3))  # outside 24 h, inside 7 d
    server.routes["/health"] = Route(500)
    for i in range(3):
        monitor_cycle(start + timedelta(seconds=i))
    node.refresh_from_db()
    # 24 h: 2 alive (blips) of 3; 7 d: 3 alive of 4.
    assert node.uptime_ratio_24h == round(2 / 3, 4) and node.uptime_ratio_7d == 0.75


def test_alive_days_come_from_heartbeats_not_from_probes(monitored_node, api):
    node, _ = monitored_node
    start = timezone.now()
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=start - timedelta(days=1))
    for day in range(3):  # the URL keeps answering, the agent never heartbeats again
        monitor_cycle(start + timedelta(days=day))
    node.refresh_from_db()
    assert node.alive_days == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_heartbeat_during_the_probes_is_not_overwritten(probe_settings, server, owner, api):
    """The monitor reads every node, probes for a while, then writes: an agent that came back in between
    must stay available."""
    node, secret = factories.make_node(owner, endpoint_url=server.base + "/v1")
    factories.heartbeat(api, node, secret)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    # The health endpoint answers slowly; meanwhile the agent sends a heartbeat from another thread.
    server.routes["/health"] = Route(200, json.dumps({"node_id": node.id}).encode(), delay=0.5)
    beat = threading.Timer(0.2, lambda: factories.heartbeat(api, node, secret))
    beat.start()
    monitor_cycle()
    beat.join()
    node.refresh_from_db()
    assert node.status == "available"

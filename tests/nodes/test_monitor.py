"""The liveness monitor against real HTTP servers on 127.0.0.1."""

import json
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from nodes.models import HealthSample, Node
from tests import factories
from tests.httpserver import Route, ScriptedServer
from tracker.models import QuotaBucket
from tracker.monitor import run_cycle

pytestmark = pytest.mark.django_db


@pytest.fixture
def server():
    with ScriptedServer() as s:
        yield s


@pytest.fixture
def local(settings):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    settings.MONITOR_PROBE_TIMEOUT_SEC = 1.0
    settings.HEALTH_SAMPLE_INTERVAL_SEC = 0  # a sample every cycle, so that tests can count them


def agent_health(node, **extra) -> Route:
    """What the node agent's /health answers."""
    return Route(200, json.dumps({"ok": True, "node_id": node.id, **extra}).encode())


def cycle(at=None):
    return run_cycle(at or timezone.now(), jitter_sec=0)


@pytest.fixture
def online(local, server, owner, api):
    """A node whose agent heartbeats and answers its /health."""
    node, secret = factories.make_node(owner, endpoint_url=server.base + "/v1")
    server.routes["/health"] = agent_health(node)
    factories.heartbeat(api, node, secret)
    return node, secret


def test_a_healthy_agent_is_available_with_history_and_uptime(online, server, api):
    node, _ = online
    report = cycle()
    assert report.probed == 1 and report.alive == 1
    node.refresh_from_db()
    assert node.status == "available" and node.latency_ms is not None and node.alive_days == 1
    assert node.uptime_ratio_24h == 1.0 and node.uptime_ratio_7d == 1.0
    assert server.hits == ["/health"]
    status, metrics = api.get(f"/api/nodes/{node.id}/metrics")
    assert status == 200 and metrics["samples"] == 1 and metrics["recent"][0]["status"] == "available"
    assert metrics["uptime_ratio_24h"] == 1.0


def test_three_consecutive_failures_not_one_make_a_node_unavailable(online, server, api):
    node, secret = online
    cycle()
    server.routes["/health"] = Route(503, b"loading")
    statuses = []
    for _ in range(3):
        cycle()
        node.refresh_from_db()
        statuses.append(node.status)
    assert statuses == ["available", "available", "unavailable"]
    assert node.last_error == "HTTP 503"
    assert node.uptime_ratio_24h == 0.75  # 3 of 4 samples alive
    server.routes["/health"] = agent_health(node)
    cycle()
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


def test_a_page_that_does_not_name_the_node_is_not_its_agent(online, server):
    node, _ = online
    server.routes["/health"] = Route(200, b'{"ok": true}')
    cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "does not name this node" in node.last_error
    assert node.alive_days == 0


def test_without_a_heartbeat_a_node_stays_unknown_even_if_its_url_answers(local, server, owner):
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    server.routes["/health"] = agent_health(node)
    cycle()
    node.refresh_from_db()
    assert node.status == "unknown"
    # No alive day either: a URL that answers (a static JSON file would) is not an agent that runs (issue 11).
    assert node.alive_days == 0


def test_a_silent_agent_turns_unavailable(online):
    node, _ = online
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    cycle()
    node.refresh_from_db()
    assert node.status == "unavailable"


def test_a_slow_endpoint_times_out(online, server, settings):
    node, _ = online
    settings.MONITOR_PROBE_TIMEOUT_SEC = 0.3
    server.routes["/health"] = Route(200, delay=1.5)
    cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "timed out" in node.last_error


def test_probes_refuse_private_addresses_unless_allowed(server, owner, settings):
    settings.ALLOW_PRIVATE_NODE_URLS = False
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    server.routes["/health"] = agent_health(node)
    cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and node.last_error.startswith("blocked")
    assert server.hits == []


def test_redirects_are_not_followed(online, server):
    node, _ = online
    server.routes["/health"] = Route(302, headers={"Location": "http://169.254.169.254/latest"})
    cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "redirect" in node.last_error


def test_samples_are_taken_at_the_sample_interval_and_pruned(online, settings):
    node, _ = online
    settings.HEALTH_SAMPLE_INTERVAL_SEC = 300
    settings.HEALTH_RETENTION_DAYS = 8
    HealthSample.objects.create(node=node, at=timezone.now() - timedelta(days=9), status="unavailable")
    now = timezone.now()
    cycle(now)
    cycle(now + timedelta(seconds=30))
    assert HealthSample.objects.filter(node=node, at__gte=now - timedelta(days=1)).count() == 1
    cycle(now + timedelta(seconds=301))
    assert HealthSample.objects.filter(node=node).count() == 2  # the 9-day-old one was pruned


def test_uptime_ratios_come_from_hourly_counters_over_a_week(online, server):
    node, secret = online
    start = timezone.now()
    cycle(start - timedelta(days=3))  # outside 24 h, inside 7 d
    server.routes["/health"] = Route(500)
    for i in range(3):
        cycle(start + timedelta(seconds=i))
    node.refresh_from_db()
    # 24 h: 2 alive (blips) of 3; 7 d: 3 alive of 4.
    assert node.uptime_ratio_24h == round(2 / 3, 4) and node.uptime_ratio_7d == 0.75


def test_existence_score_grows_with_days_seen_alive(online, api):
    node, secret = online
    start = timezone.now()
    for day in range(3):
        factories.heartbeat(api, node, secret)
        Node.objects.filter(pk=node.pk).update(last_heartbeat_at=start + timedelta(days=day))
        cycle(start + timedelta(days=day))
        cycle(start + timedelta(days=day, hours=1))
    node.refresh_from_db()
    assert node.alive_days == 3
    # Days alive earn existence points only once the node has served someone else (docs/scoring.md).
    assert node.contribution_components["existence"] == 0.0


def test_alive_days_come_from_heartbeats_not_from_probes(online, api):
    node, _ = online
    start = timezone.now()
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=start - timedelta(days=1))
    for day in range(3):  # the URL keeps answering, the agent never heartbeats again
        cycle(start + timedelta(days=day))
    node.refresh_from_db()
    assert node.alive_days == 0


def test_old_quota_rows_are_pruned(online):
    QuotaBucket.objects.create(key="ip:x", day=(timezone.now() - timedelta(days=5)).date(), used=3)
    QuotaBucket.objects.create(key="ip:y", day=timezone.now().date(), used=3)
    cycle()
    assert list(QuotaBucket.objects.values_list("key", flat=True)) == ["ip:y"]


def test_the_monitor_command_runs_a_cycle(online, capsys):
    call_command("monitor", "--once")
    assert "probed 1, alive 1" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_heartbeat_during_the_probes_is_not_overwritten(local, server, owner, api):
    """The monitor reads every node, probes for a while, then writes: an agent that came back in between
    must stay available."""
    node, secret = factories.make_node(owner, endpoint_url=server.base + "/v1")
    factories.heartbeat(api, node, secret)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    # The health endpoint answers slowly; meanwhile the agent sends a heartbeat from another thread.
    server.routes["/health"] = Route(200, json.dumps({"node_id": node.id}).encode(), delay=0.5)
    beat = threading.Timer(0.2, lambda: factories.heartbeat(api, node, secret))
    beat.start()
    cycle()
    beat.join()
    node.refresh_from_db()
    assert node.status == "available"

"""The liveness monitor against real HTTP servers on 127.0.0.1."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from nodes.models import HealthSample, Node
from tests import factories
from tests.httpserver import Route, ScriptedServer
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


def cycle(at=None):
    return run_cycle(at or timezone.now(), jitter_sec=0)


def test_a_healthy_endpoint_is_available_with_history_and_uptime(local, server, owner, api):
    server.routes["/health"] = Route(200, b'{"ok": true}')
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    report = cycle()
    assert report.probed == 1 and report.alive == 1
    node.refresh_from_db()
    assert node.status == "available" and node.latency_ms is not None and node.alive_days == 1
    assert node.uptime_ratio_24h == 1.0 and node.uptime_ratio_7d == 1.0
    assert server.hits == ["/health"]
    status, metrics = api.get(f"/api/nodes/{node.id}/metrics")
    assert status == 200 and metrics["samples"] == 1 and metrics["recent"][0]["status"] == "available"
    assert metrics["uptime_ratio_24h"] == 1.0


def test_three_consecutive_failures_not_one_make_a_node_unavailable(local, server, owner, api):
    server.routes["/health"] = Route(200)
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    cycle()
    server.routes["/health"] = Route(503, b"loading")
    statuses = []
    for _ in range(3):
        cycle()
        node.refresh_from_db()
        statuses.append(node.status)
    assert statuses == ["available", "available", "unavailable"]
    assert node.last_error == "HTTP 503"
    node.refresh_from_db()
    assert node.uptime_ratio_24h == 0.75  # 3 of 4 samples alive
    server.routes["/health"] = Route(200)
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


def test_a_silent_agent_turns_unavailable_without_waiting_for_probes(local, server, owner, api):
    server.routes["/health"] = Route(200)
    node, secret = factories.make_node(owner, endpoint_url=server.base + "/v1")
    factories.heartbeat(api, node, secret)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    cycle()
    node.refresh_from_db()
    assert node.status == "unavailable"


def test_a_slow_endpoint_times_out(local, server, owner, settings):
    settings.MONITOR_PROBE_TIMEOUT_SEC = 0.3
    server.routes["/health"] = Route(200, delay=1.5)
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "timed out" in node.last_error


def test_probes_refuse_private_addresses_unless_allowed(server, owner, settings):
    settings.ALLOW_PRIVATE_NODE_URLS = False
    server.routes["/health"] = Route(200)
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and node.last_error.startswith("blocked")
    assert server.hits == []


def test_redirects_are_not_followed(local, server, owner):
    server.routes["/health"] = Route(302, headers={"Location": "http://169.254.169.254/latest"})
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    cycle()
    node.refresh_from_db()
    assert node.consecutive_failures == 1 and "redirect" in node.last_error


def test_old_samples_are_pruned(local, server, owner, settings):
    settings.HEALTH_RETENTION_DAYS = 8
    server.routes["/health"] = Route(200)
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    old = timezone.now() - timedelta(days=9)
    HealthSample.objects.create(node=node, at=old, status="unavailable")
    report = cycle()
    assert report.pruned == 1
    assert not HealthSample.objects.filter(at__lt=timezone.now() - timedelta(days=8)).exists()


def test_existence_score_grows_with_days_seen_alive(local, server, owner):
    server.routes["/health"] = Route(200)
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    start = timezone.now()
    for day in range(3):
        cycle(start + timedelta(days=day))
        cycle(start + timedelta(days=day, hours=1))
    node.refresh_from_db()
    assert node.alive_days == 3 and node.contribution_components["existence"] == 0.6


def test_the_monitor_command_runs_a_cycle(local, server, owner, capsys):
    server.routes["/health"] = Route(200)
    factories.make_node(owner, endpoint_url=server.base + "/v1")
    call_command("monitor", "--once")
    assert "probed 1, alive 1" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_during_the_probes_is_not_overwritten(local, server, owner, api):
    """The monitor reads every node, probes for a while, then writes: an agent that came back in between
    must stay available."""
    import threading

    node, secret = factories.make_node(owner, endpoint_url=server.base + "/v1")
    factories.heartbeat(api, node, secret)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    # The health endpoint answers slowly; meanwhile the agent sends a heartbeat from another thread.
    server.routes["/health"] = Route(200, delay=0.5)
    beat = threading.Timer(0.2, lambda: factories.heartbeat(api, node, secret))
    beat.start()
    cycle()
    beat.join()
    node.refresh_from_db()
    assert node.status == "available"

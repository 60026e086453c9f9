"""Relays as the nodes app sees them (nodes.relays, nodes.registry, nodes.monitor): a node registered without
an endpoint_url is relayed and published through its relay, rendezvous picks and keeps its relay, relay heartbeats
drive relayed nodes' statuses, the monitor never probes them, the admin shows relays. The tracker's side
(tickets, relay reports, `manage.py relay`): tests/tracker/test_relays.py."""

from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils import timezone

from nodes.models import Node, Relay
from tests import factories
from tests.factories import add_relay, age_relay, node_status, register_relayed, relay_heartbeat, tunnel

pytestmark = pytest.mark.django_db


# --- registration: direct or relayed ------------------------------------------------------------------------


def test_a_node_without_endpoint_url_is_relayed_and_published_through_its_relay(api, owner, relay_a):
    node, _ = register_relayed(api, owner)
    assert node["reachability"] == "relayed"
    # The relay's public URL, without its trailing slash, then /n/<id>/v1.
    assert node["endpoint_url"] == f"https://relay-a.example.org/n/{node['id']}/v1"
    stored = Node.objects.get(pk=node["id"])
    assert stored.relay_id == "relay-a" and stored.health_url == "" and stored.endpoint_url == ""
    assert api.get(f"/api/nodes/{node['id']}")[1]["node"]["endpoint_url"] == node["endpoint_url"]


def test_a_node_with_endpoint_url_stays_direct(api, owner, relay_a):
    fields = factories.node_fields(endpoint_url="https://rig.example.net/v1")
    status, body = api.post("/api/nodes", fields, auth=owner.key)
    assert status == 201
    assert body["node"]["reachability"] == "direct" and body["node"]["endpoint_url"] == "https://rig.example.net/v1"
    stored = Node.objects.get(pk=body["node"]["id"])
    assert stored.health_url == "https://rig.example.net/health" and stored.relay_id is None


def test_a_relayed_node_registered_while_no_relay_is_live_gets_a_registered_one_or_none(api, owner):
    node, _ = register_relayed(api, owner)
    assert node["reachability"] == "relayed" and node["endpoint_url"] is None  # no relay at all
    add_relay("relay-quiet", "http://relay-quiet.example.org")  # registered, never heartbeated
    node, _ = register_relayed(api, owner, gpu="RTX 2070")
    assert node["endpoint_url"] == f"http://relay-quiet.example.org/n/{node['id']}/v1"


def test_the_node_list_shows_reachability_and_relay_endpoints(api, owner, relayed):
    node_id, _ = relayed
    direct, secret = factories.make_node(owner, gpu="RTX 4090", endpoint_url="https://direct.example.net/v1")
    factories.heartbeat(api, direct, secret)  # listed once its agent has reported in
    nodes = {n["id"]: n for n in api.get("/api/nodes")[1]["nodes"]}
    assert nodes[node_id]["reachability"] == "relayed"
    assert nodes[node_id]["endpoint_url"] == f"https://relay-a.example.org/n/{node_id}/v1"
    direct = next(n for n in nodes.values() if n["id"] != node_id)
    assert direct["reachability"] == "direct" and direct["endpoint_url"] == "https://direct.example.net/v1"
    assert all("health_url" not in n for n in nodes.values())  # never public


def test_a_health_url_without_endpoint_is_refused(api, owner, relay_a):
    body = factories.node_fields(health_url="https://x.example.org/health")
    body.pop("endpoint_url")
    status, err = api.post("/api/nodes", body, auth=owner.key)
    assert status == 400 and err["field"] == "health_url"


def test_patch_endpoint_url_switches_reachability_both_ways(api, owner, relayed):
    node_id, _ = relayed
    status, err = api.patch(f"/api/nodes/{node_id}", {"health_url": "https://x.example.org/health"}, auth=owner.key)
    assert status == 400 and err["field"] == "health_url"  # a relayed node has nothing to probe
    status, body = api.patch(f"/api/nodes/{node_id}", {"endpoint_url": "https://home.example.net/v1"}, auth=owner.key)
    assert status == 200 and body["node"]["reachability"] == "direct"
    assert body["node"]["endpoint_url"] == "https://home.example.net/v1"
    stored = Node.objects.get(pk=node_id)
    assert stored.health_url == "https://home.example.net/health" and stored.relay_id is None
    status, body = api.patch(f"/api/nodes/{node_id}", {"endpoint_url": None}, auth=owner.key)
    assert status == 200 and body["node"]["reachability"] == "relayed"
    assert body["node"]["endpoint_url"] == f"https://relay-a.example.org/n/{node_id}/v1"
    assert body["node"]["health"]["status"] == "unavailable"  # until its relay reports the tunnel
    stored.refresh_from_db()
    assert stored.endpoint_url == stored.health_url == "" and stored.relay_id == "relay-a"


# --- rendezvous: which relay a node dials -------------------------------------------------------------------


def test_a_node_stays_on_its_relay_and_moves_when_it_stops_heartbeating(api, owner, two_relays):
    node, secret = register_relayed(api, owner)
    first = tunnel(api, node["id"], secret)[1]["relay_id"]
    other = ({"relay-a", "relay-b"} - {first}).pop()
    for _ in range(3):
        assert tunnel(api, node["id"], secret)[1]["relay_id"] == first
    relay_heartbeat(api, other, two_relays[other])  # other relays coming and going change nothing
    assert tunnel(api, node["id"], secret)[1]["relay_id"] == first
    age_relay(first, 61)
    assert tunnel(api, node["id"], secret)[1]["relay_id"] == other
    assert Node.objects.get(pk=node["id"]).relay_id == other
    assert api.get(f"/api/nodes/{node['id']}")[1]["node"]["endpoint_url"].startswith(f"https://{other}.")
    relay_heartbeat(api, first, two_relays[first])  # back: rendezvous sends the node home
    assert tunnel(api, node["id"], secret)[1]["relay_id"] == first


def test_a_draining_relay_leaves_rendezvous_at_once(api, owner, two_relays):
    node, secret = register_relayed(api, owner)
    first = tunnel(api, node["id"], secret)[1]["relay_id"]
    other = ({"relay-a", "relay-b"} - {first}).pop()
    answer = relay_heartbeat(api, first, two_relays[first], draining=True)
    assert [r["relay_id"] for r in answer["relays"]] == [other]  # itself no longer offered
    assert tunnel(api, node["id"], secret)[1]["relay_id"] == other


def test_an_unreachable_relay_is_passed_over_only_once_it_has_gone_quiet(api, owner, two_relays):
    node, secret = register_relayed(api, owner)
    first = tunnel(api, node["id"], secret)[1]["relay_id"]
    other = ({"relay-a", "relay-b"} - {first}).pop()
    # The relay heartbeats on time: the agent's trouble is its own, and the node stays.
    age_relay(first, 5)
    assert tunnel(api, node["id"], secret, {"unreachable_relay_id": first})[1]["relay_id"] == first
    # Killed without a goodbye: 20 s of silence, well inside the minute, and the agent cannot reach it.
    age_relay(first, 20)
    assert tunnel(api, node["id"], secret)[1]["relay_id"] == first  # nobody said so: still live
    assert tunnel(api, node["id"], secret, {"unreachable_relay_id": first})[1]["relay_id"] == other
    age_relay(other, 20)  # the only relay left is never passed over for naming another one
    assert tunnel(api, node["id"], secret, {"unreachable_relay_id": "ghost"})[0] == 200


def test_nodes_spread_across_two_relays(api, owner, two_relays):
    counts = {"relay-a": 0, "relay-b": 0}
    for i in range(24):
        node, secret = register_relayed(api, owner, gpu=f"RTX {3000 + i}")
        counts[tunnel(api, node["id"], secret)[1]["relay_id"]] += 1
    assert min(counts.values()) >= 4, counts


# --- relay heartbeats and node status -----------------------------------------------------------------------


def test_a_relay_heartbeat_is_recorded_and_answers_with_the_live_relays(api, two_relays):
    age_relay("relay-b", 61)
    answer = relay_heartbeat(api, "relay-a", two_relays["relay-a"], open_streams=3)
    assert answer["schema_version"] == 1 and answer["relay_id"] == "relay-a" and answer["now"].endswith("Z")
    assert answer["relays"] == [{"relay_id": "relay-a", "public_url": "https://relay-a.example.org"}]
    relay_heartbeat(api, "relay-b", two_relays["relay-b"])
    stored = Relay.objects.get(pk="relay-a")
    assert stored.open_streams == 3 and stored.tunnels == 0 and stored.version == "0.1.0"
    ids = [r["relay_id"] for r in relay_heartbeat(api, "relay-a", two_relays["relay-a"])["relays"]]
    assert ids == ["relay-a", "relay-b"]


def test_a_relayed_node_is_available_only_while_its_tunnel_is_open(api, owner, relay_a):
    node, secret = register_relayed(api, owner)
    assert tunnel(api, node["id"], secret)[0] == 200
    row = Node.objects.get(pk=node["id"])
    # Its agent heartbeats, but no relay has seen its tunnel yet: tasters could not reach it.
    assert factories.heartbeat(api, row, secret)["status"] == "unavailable"
    relay_heartbeat(api, "relay-a", relay_a, [node["id"]])
    assert node_status(api, node["id"]) == "available"
    assert Relay.objects.get(pk="relay-a").tunnels == 1
    assert factories.heartbeat(api, row, secret, active=1, max_active=1)["status"] == "busy"
    # The tunnel is gone: unavailable at once, and the agent's own heartbeats do not bring it back.
    relay_heartbeat(api, "relay-a", relay_a, [])
    assert node_status(api, node["id"]) == "unavailable"
    assert factories.heartbeat(api, row, secret)["status"] == "unavailable"
    assert api.post("/api/tokens", {"node_id": node["id"]})[1]["code"] == "node_unavailable"
    # Back, with a fresh agent heartbeat: available again.
    relay_heartbeat(api, "relay-a", relay_a, [node["id"]])
    assert node_status(api, node["id"]) == "available"
    assert api.post("/api/tokens", {"node_id": node["id"]})[0] == 201


def test_a_tunnel_not_reported_for_45_seconds_no_longer_counts(api, relayed):
    node_id, secret = relayed
    Node.objects.filter(pk=node_id).update(tunnel_seen_at=timezone.now() - timedelta(seconds=46))
    assert factories.heartbeat(api, Node.objects.get(pk=node_id), secret)["status"] == "unavailable"


def test_a_tunnel_without_agent_heartbeats_is_not_enough(api, owner, relay_a):
    node, secret = register_relayed(api, owner)
    tunnel(api, node["id"], secret)
    relay_heartbeat(api, "relay-a", relay_a, [node["id"]])
    assert node_status(api, node["id"]) == "unknown"  # its agent never reported in
    Node.objects.filter(pk=node["id"]).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    relay_heartbeat(api, "relay-a", relay_a, [node["id"]])
    assert node_status(api, node["id"]) == "unavailable"


def test_a_relay_cannot_speak_for_nodes_assigned_elsewhere(api, owner, two_relays):
    node, secret = register_relayed(api, owner)
    mine = tunnel(api, node["id"], secret)[1]["relay_id"]
    other = ({"relay-a", "relay-b"} - {mine}).pop()
    factories.heartbeat(api, Node.objects.get(pk=node["id"]), secret)
    direct, direct_secret = factories.make_node(owner, gpu="RTX 2060")
    factories.heartbeat(api, direct, direct_secret)
    relay_heartbeat(api, other, two_relays[other], [node["id"], direct.id])
    assert node_status(api, node["id"]) == "unavailable"  # the other relay's claim is ignored
    assert node_status(api, direct.id) == "available"  # and a direct node is none of its business
    relay_heartbeat(api, mine, two_relays[mine], [node["id"]])
    assert node_status(api, node["id"]) == "available"
    relay_heartbeat(api, other, two_relays[other], [])  # nor can it take the node down
    assert node_status(api, node["id"]) == "available"


def test_a_relay_heartbeat_with_ten_thousand_tunnels_is_accepted(api, relay_a):
    answer = relay_heartbeat(api, "relay-a", relay_a, [f"node-{i}" for i in range(10_000)])
    assert answer["relay_id"] == "relay-a" and Relay.objects.get(pk="relay-a").tunnels == 10_000


# --- monitor and admin --------------------------------------------------------------------------------------


def test_the_monitor_never_probes_relayed_nodes(api, owner, relayed, monkeypatch, settings):
    from nodes import monitor as node_monitor
    from tracker import monitor

    node_id, _ = relayed
    settings.HEALTH_SAMPLE_INTERVAL_SEC = 0
    probed = []

    async def fake_probe_all(targets, **kwargs):
        probed.extend(targets)
        return {}

    monkeypatch.setattr(node_monitor, "probe_all", fake_probe_all)
    report_ = monitor.run_cycle(timezone.now(), jitter_sec=0)
    assert probed == [] and report_.alive == 1
    node = Node.objects.get(pk=node_id)
    # The relay saw the tunnel: that is the tracker seeing the node alive.
    assert node.status == "available" and node.last_probe_at is None and node.alive_days == 1
    assert node.uptime_ratio_24h == 1.0
    Node.objects.filter(pk=node_id).update(tunnel_seen_at=timezone.now() - timedelta(seconds=50))
    monitor.run_cycle(timezone.now(), jitter_sec=0)
    node.refresh_from_db()
    assert node.status == "unavailable" and node.consecutive_failures == 0
    assert "tunnel" in node.last_error


def test_the_admin_shows_relays_without_secrets_and_each_nodes_reachability(admin_client, relayed):
    node_id, _ = relayed
    page = admin_client.get(reverse("admin:nodes_relay_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "relay-a" in html and "https://relay-a.example.org/" in html
    digest = Relay.objects.get(pk="relay-a").secret_hash
    assert digest not in html
    detail = admin_client.get(reverse("admin:nodes_relay_change", args=[quote("relay-a")])).content.decode()
    assert digest not in detail and "assigned nodes" in detail.lower()
    node_page = admin_client.get(reverse("admin:nodes_node_change", args=[quote(node_id)]))
    assert node_page.status_code == 200
    html = node_page.content.decode()
    assert "Reachability:" in html and "Relayed" in html and "Tunnel seen at:" in html and "relay-a" in html


def test_moderators_see_relays_read_only(client, moderator, relayed):
    client.force_login(moderator)
    page = client.get(reverse("admin:nodes_relay_changelist"))
    assert page.status_code == 200 and "relay-a" in page.content.decode()
    assert client.get(reverse("admin:nodes_relay_add")).status_code == 403

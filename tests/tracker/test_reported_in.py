"""Nodes whose agent never reported in (issue 11): they earn no place in the contributions, the node list, the
showcase or the website, their link cannot put them on the public queue stream before a heartbeat, and the monitor
probes them rarely and under a per-owner budget, so that a thousand dead registrations cannot slow the probe cycle
for everyone."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from luckrig_site.asgi import application
from moderation import services as moderation
from nodes import monitor
from nodes.models import Node
from tests import factories
from tracker.monitor import run_cycle


@pytest.fixture
def local(settings):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    settings.MONITOR_PROBE_TIMEOUT_SEC = 1.0


@pytest.mark.django_db
def test_contributions_leave_out_nodes_that_never_reported_in(api, owner):
    silent, _ = factories.make_node(owner, tuning_note="A long note " * 50)
    live, secret = factories.make_node(owner, gpu="Intel Arc A770")
    factories.heartbeat(api, live, secret)
    listed = [s["node_id"] for s in api.get("/api/contributions")[1]["scores"]]
    assert live.pk in listed and silent.pk not in listed


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_link_cannot_put_a_node_on_the_queue_stream_before_its_first_heartbeat(api, owner):
    node, secret = factories.make_node(owner)
    queue = {"active": 1, "waiting": 3, "max_active": 1}

    async def scenario():
        everyone = WebsocketCommunicator(application, "/ws/queue/")
        await everyone.connect()
        assert await everyone.receive_nothing(timeout=0.3)  # not in the snapshot
        link = WebsocketCommunicator(
            application, "/ws/agent/", headers=[(b"authorization", f"Bearer {secret}".encode())]
        )
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        await link.send_json_to({"type": "queue", "queue": queue})
        refused = await link.receive_json_from(timeout=5)
        assert await everyone.receive_nothing(timeout=0.5)  # nothing broadcast
        await link.send_json_to({"type": "heartbeat", "queue": queue})
        assert (await link.receive_json_from(timeout=5))["type"] == "heartbeat_ack"
        shown = await everyone.receive_json_from(timeout=5)  # reported in: now it is public
        await link.disconnect()
        await everyone.disconnect()
        return refused, shown

    refused, shown = async_to_sync(scenario)()
    assert refused["type"] == "error" and refused["code"] == "heartbeat_first"
    assert shown["node_id"] == node.pk and shown["waiting"] == 3


@pytest.mark.django_db
def test_the_monitor_probes_never_reported_nodes_rarely_and_ten_per_owner_per_cycle(api, local, server, owner):
    """The attack: a thousand registrations pointing at nothing made every cycle wait for a thousand probes."""
    dead = {factories.make_node(owner, endpoint_url=f"{server.base}/dead{i}/v1")[0].pk for i in range(25)}
    someone = factories.make_contributor(handle="someone")
    live, secret = factories.make_node(someone, endpoint_url=f"{server.base}/live/v1", gpu="Intel Arc A770")
    factories.heartbeat(api, live, secret)
    now = timezone.now()

    def probed(at) -> set[str]:
        """The nodes the cycle at `at` probed (whether or not the little test server answered them all)."""
        run_cycle(at, jitter_sec=0)
        return set(Node.objects.filter(last_probe_at=at).values_list("pk", flat=True))

    first = probed(now)
    assert live.pk in first and len(first & dead) == monitor.UNREPORTED_PER_OWNER
    second = probed(now + timedelta(seconds=30))
    assert live.pk in second and len(second & dead) == monitor.UNREPORTED_PER_OWNER
    assert not first & second & dead  # the next ten, not the same ones again
    third = probed(now + timedelta(seconds=60))
    assert third & dead == dead - first - second and len(third & dead) == 5
    assert probed(now + timedelta(minutes=30)) == {live.pk}  # each at most once an hour
    assert len(probed(now + timedelta(hours=1, minutes=1)) & dead) == monitor.UNREPORTED_PER_OWNER
    assert {n.status for n in Node.objects.filter(pk__in=dead)} == {"unknown"}


@pytest.mark.django_db
def test_a_lifted_contributor_ban_shows_within_one_monitor_cycle(api, local, owner, live_node):
    node, _ = live_node
    mod = moderation.Moderator(None, "monitor-test")
    moderation.ban(kind="contributor", value=owner.id, moderator=mod, reason="fake rigs")
    assert api.get(f"/api/nodes/{node.pk}")[0] == 404
    moderation.unban(kind="contributor", value=owner.id, moderator=mod, reason="appeal accepted")
    run_cycle(timezone.now(), jitter_sec=0)
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200


@pytest.fixture
def silent_and_live(api, owner):
    silent, _ = factories.make_node(owner, gpu="Raspberry Pi 5", vram_gb=0, context_length=10**6)
    live, secret = factories.make_node(owner, gpu="Intel Arc A770")
    factories.heartbeat(api, live, secret)
    return silent, live


@pytest.mark.django_db
def test_the_node_list_leaves_out_nodes_that_never_reported_in(api, silent_and_live):
    silent, live = silent_and_live
    listed = [n["id"] for n in api.get("/api/nodes")[1]["nodes"]]
    assert live.pk in listed and silent.pk not in listed


@pytest.mark.django_db
def test_the_showcase_leaves_out_nodes_that_never_reported_in(api, silent_and_live):
    silent, _ = silent_and_live
    assert silent.pk not in [c["node_id"] for c in api.get("/api/showcase")[1]["categories"]]


@pytest.mark.django_db
def test_the_websites_list_leaves_out_nodes_that_never_reported_in(api, silent_and_live):
    silent, live = silent_and_live
    page = api.client.get("/", HTTP_ACCEPT="text/html").content.decode()
    assert live.pk in page and silent.pk not in page


@pytest.mark.django_db
def test_rarity_counts_leave_out_nodes_that_never_reported_in(api, owner, taster):
    live, secret = factories.make_node(owner, gpu="Intel Arc A770")
    factories.heartbeat(api, live, secret)
    factories.make_node(taster, gpu="Intel Arc A770")  # the same combination, never reported in
    listed = {n["id"]: n for n in api.get("/api/nodes")[1]["nodes"]}
    assert listed[live.pk]["rarity_score"] == 1.0  # still the only rig with this combination

"""Throttled agent paths (issue 11): heartbeats, usage reports and flags are limited per node over HTTP (429 with
Retry-After) and over the agent link (an `error` reply, the message dropped); a flood of link messages costs a
bounded number of database writes and replies, and the process stays responsive; while the channel layer is down
an agent link stays up and quiet. The same flood against a real Daphne: test_agent_flood_daphne.py."""

import logging
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import InMemoryChannelLayer
from channels.testing import WebsocketCommunicator

from luckrig_site.asgi import application
from nodes.models import Node
from tests import factories
from tracker import services

BEAT = {"queue": {"active": 0, "waiting": 0, "max_active": 1}}


def heartbeats(api, node, secret, n: int) -> list:
    return [api.post(f"/api/nodes/{node.pk}/heartbeat", BEAT, auth=secret) for _ in range(n)]


# --- HTTP ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_heartbeats_over_http_are_limited_per_node(api, owner):
    """The attack: a node secret that heartbeats as fast as it can makes one database write per request."""
    node, secret = factories.make_node(owner)
    other, other_secret = factories.make_node(owner, gpu="Intel Arc A770")
    answers = heartbeats(api, node, secret, 12)  # 5 per 5 s window: at most 10 pass, whatever the timing
    codes = [status for status, _ in answers]
    assert set(codes) == {200, 429} and codes.count(200) <= 10, codes
    status, body = next(a for a in answers if a[0] == 429)
    assert body["code"] == "rate_limited" and 1 <= body["retry_after_sec"] <= 5
    refused_at = codes.index(429)
    assert all(code == 429 for code in codes[refused_at:])
    assert heartbeats(api, other, other_secret, 1)[0][0] == 200  # another node's budget is its own


@pytest.mark.django_db
def test_a_refused_heartbeat_writes_nothing_and_says_when_to_retry(api, owner, settings):
    settings.RATE_AGENT_HEARTBEAT = "1/m"
    node, secret = factories.make_node(owner)
    assert heartbeats(api, node, secret, 1)[0][0] == 200
    written = Node.objects.get(pk=node.pk).last_heartbeat_at
    status, body = api.post(f"/api/nodes/{node.pk}/heartbeat", {"queue": {"active": 1, "max_active": 1}}, auth=secret)
    assert status == 429 and 1 <= int(api.last["Retry-After"]) <= 60
    assert Node.objects.get(pk=node.pk).last_heartbeat_at == written
    assert Node.objects.get(pk=node.pk).queue_active == 0


@pytest.mark.django_db
def test_usage_reports_and_flags_are_limited_per_node(api, live_node, settings):
    settings.RATE_AGENT_USAGE = "3/m"
    settings.RATE_AGENT_FLAG = "2/m"
    node, secret = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk})
    usage = [
        api.post(
            f"/api/nodes/{node.pk}/usage",
            {"report_id": f"r-{i}", "entries": [{"jti": issued["jti"], "requests": 1}]},
            auth=secret,
        )[0]
        for i in range(5)
    ]
    assert usage == [202, 202, 202, 429, 429]
    flag = {"jti": issued["jti"], "stage": "input", "categories": ["x"]}
    flags = [api.post("/api/moderation/flags", flag, auth=secret)[0] for _ in range(4)]
    assert flags == [202, 202, 429, 429]


@pytest.mark.django_db
def test_a_stranger_cannot_spend_a_nodes_budget(api, owner, settings):
    settings.RATE_AGENT_HEARTBEAT = "2/m"
    node, secret = factories.make_node(owner)
    for _ in range(10):
        assert api.post(f"/api/nodes/{node.pk}/heartbeat", BEAT, auth="lrn_" + "x" * 43)[0] == 401
    assert heartbeats(api, node, secret, 1)[0][0] == 200


# --- the agent link -------------------------------------------------------------------------------------

link_db = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def agent_socket(secret):
    return WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {secret}".encode())])


async def replies_until_quiet(link, quiet: float = 1.0, limit: float = 30.0) -> list[dict]:
    """Every reply until the link says nothing for `quiet` seconds (receive_nothing, which unlike a timed-out
    receive does not cancel the application)."""
    import json

    seen, deadline = [], time.monotonic() + limit
    while not await link.receive_nothing(timeout=quiet, interval=0.02):
        out = await link.receive_output(timeout=5)
        seen.append(json.loads(out["text"]) if out["type"] == "websocket.send" else out)
        assert time.monotonic() < deadline, "the link never went quiet"
    return seen


@link_db
def test_a_flood_of_link_heartbeats_costs_a_bounded_number_of_writes_and_replies(api, owner, monkeypatch):
    """The attack: 2,000 heartbeats as fast as the socket takes them. Each used to be one database write and
    one reply, queued without bound; now at most the node's heartbeat budget is written, the rest is dropped
    with a few `rate_limited` errors, and the process serves others meanwhile."""
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    writes = []
    record = services.record_heartbeat
    monkeypatch.setattr(services, "record_heartbeat", lambda **kw: writes.append(1) or record(**kw))

    async def scenario():
        link = agent_socket(secret)
        assert (await link.connect())[0]
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        started = time.monotonic()
        for _ in range(2000):
            await link.send_json_to({"type": "heartbeat", **BEAT})
        # Meanwhile a visitor's queue page connects and gets its snapshot at once.
        sub = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        t0 = time.monotonic()
        await sub.connect()
        assert (await sub.receive_json_from(timeout=5))["node_id"] == node.pk
        snapshot_sec = time.monotonic() - t0
        replies = await replies_until_quiet(link)
        await sub.disconnect()
        await link.disconnect()
        return replies, snapshot_sec, time.monotonic() - started

    replies, snapshot_sec, took = async_to_sync(scenario)()
    acks = [r for r in replies if r.get("type") == "heartbeat_ack"]
    errors = [r for r in replies if r.get("type") == "error"]
    assert len(writes) <= 10 and len(acks) == len(writes), (len(writes), len(acks))
    assert errors and {e["code"] for e in errors} == {"rate_limited"}
    assert len(replies) <= 150, len(replies)  # not one reply per message
    # Frames dropped unread are counted, not answered one by one; the others each got their answer.
    assert len(acks) + sum(e.get("dropped", 1) for e in errors) == 2000
    assert snapshot_sec < 2 and took < 20


@link_db
def test_link_heartbeats_share_the_nodes_budget_with_http(api, owner, settings):
    settings.RATE_AGENT_HEARTBEAT = "2/m"
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)

    async def scenario():
        link = agent_socket(secret)
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        answers = []
        for _ in range(2):
            await link.send_json_to({"type": "heartbeat", **BEAT})
            answers.append(await link.receive_json_from(timeout=5))
        await link.disconnect()
        return answers

    ack, refused = async_to_sync(scenario)()
    assert ack["type"] == "heartbeat_ack"
    assert refused["type"] == "error" and refused["code"] == "rate_limited" and refused["retry_after_sec"] >= 1


@link_db
def test_a_burst_of_queue_snapshots_holds_one_inbox_slot(api, owner):
    """Snapshots replace the one still waiting: the latest is recorded, an invalid one is still answered."""
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)

    async def scenario():
        link = agent_socket(secret)
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        for n in range(1, 81):
            await link.send_json_to({"type": "queue", "queue": {"active": 1, "waiting": n, "max_active": 1}})
            if n == 40:
                await link.send_json_to({"type": "queue", "queue": {"active": -1}})
        replies = await replies_until_quiet(link)
        await link.disconnect()
        return replies

    replies = async_to_sync(scenario)()
    assert [r["code"] for r in replies] == ["invalid_field"]
    assert Node.objects.get(pk=node.pk).queue_waiting == 80


# --- the channel layer is down ------------------------------------------------------------------------------


class DownLayer(InMemoryChannelLayer):
    """A channel layer whose server is unreachable (Redis restarting)."""

    async def group_add(self, group, channel):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def receive(self, channel):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def group_send(self, group, message):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@link_db
def test_while_the_channel_layer_is_down_an_agent_link_stays_up_and_quiet(api, owner, settings, caplog):
    """It used to fail on connecting, with a traceback in the log, and its agent reconnected every 2 s."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.tracker.test_agent_throttle.DownLayer"}}
    node, secret = factories.make_node(owner)
    caplog.set_level(logging.INFO)

    async def scenario():
        link = agent_socket(secret)
        assert (await link.connect())[0]
        assert (await link.receive_json_from(timeout=5))["type"] == "tracker_keys"
        assert (await link.receive_json_from(timeout=5))["type"] == "filter_rules"
        await link.send_json_to({"type": "heartbeat", **BEAT})
        ack = await link.receive_json_from(timeout=5)
        assert ack["type"] == "heartbeat_ack" and ack["status"] == "available"  # recorded in the database
        assert await link.receive_nothing(timeout=3)  # not closed, nothing else said
        await link.disconnect()

    async_to_sync(scenario)()
    assert Node.objects.get(pk=node.pk).last_heartbeat_at is not None
    about_link = [r for r in caplog.records if "agent link" in r.getMessage()]
    assert len(about_link) == 1 and about_link[0].levelno == logging.WARNING, [r.getMessage() for r in about_link]
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]


@link_db
def test_pushes_resume_when_the_channel_layer_is_back(api, owner, settings, monkeypatch):
    """The link joins its groups again by itself (with backoff) once the layer answers."""
    from tracker import agent_link, consumers

    monkeypatch.setattr(consumers, "JOIN_BACKOFF_MAX_SEC", 0.2)
    node, secret = factories.make_node(owner)
    failing = {"on": True}
    real_group_add = InMemoryChannelLayer.group_add

    async def flaky_group_add(self, group, channel):
        if failing["on"]:
            raise ConnectionError("down")
        return await real_group_add(self, group, channel)

    monkeypatch.setattr(InMemoryChannelLayer, "group_add", flaky_group_add)

    async def scenario():
        link = agent_socket(secret)
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        failing["on"] = False
        for _ in range(50):  # the link rejoins within its backoff
            await sync_to_async(agent_link.push)(node.pk, {"type": "revoke", "jtis": ["j1"]})
            if not await link.receive_nothing(timeout=0.2):
                return await link.receive_json_from(timeout=5)
        raise AssertionError("pushes never resumed")

    assert async_to_sync(scenario)() == {"type": "revoke", "jtis": ["j1"]}

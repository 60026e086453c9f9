"""The queue websockets and the agent link, with Channels' WebsocketCommunicator against the real ASGI app."""

import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from luckrig_site.asgi import application
from moderation import services as moderation
from nodes.models import Node
from tests import factories

# serialized_rollback: the data migrations (filter rules, the Moderators group) survive the flush that
# transactional tests end with, for the tests that run after these.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
MOD = moderation.Moderator(None, "ws-test")
QUEUE = {
    "active": 1,
    "waiting": 1,
    "max_active": 1,
    "eta_sec": 12,
    "entries": [
        {"ticket": "t_aaaa", "position": 0, "state": "generating", "since": "2026-11-24T06:00:00Z"},
        {"ticket": "t_bbbb", "position": 1, "state": "waiting", "since": "2026-11-24T06:00:05Z"},
    ],
}


def run(coro):
    return async_to_sync(coro)()


def agent_socket(secret):
    return WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {secret}".encode())])


@pytest.fixture
def online(api, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    return node, secret


def test_a_subscriber_gets_a_snapshot_then_every_change(api, online):
    node, secret = online

    async def scenario():
        sub = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        assert (await sub.connect())[0]
        snapshot = await sub.receive_json_from(timeout=5)
        assert snapshot["type"] == "queue" and snapshot["node_id"] == node.pk and snapshot["active"] == 0
        await sync_to_async(api.post)(f"/api/nodes/{node.pk}/heartbeat", {"queue": QUEUE}, auth=secret)
        update = await sub.receive_json_from(timeout=5)
        assert (update["active"], update["waiting"], update["eta_sec"]) == (1, 1, 12)
        assert [e["ticket"] for e in update["entries"]] == ["t_aaaa", "t_bbbb"]
        assert set(update["entries"][0]) == {"ticket", "position", "state", "since"}
        await sub.disconnect()

    run(scenario)
    # REST says the same as the websocket.
    _, body = api.get(f"/api/nodes/{node.pk}")
    assert body["node"]["queue"]["active"] == 1 and body["node"]["queue"]["waiting"] == 1


def test_unknown_and_taken_down_nodes_close_with_4404(online):
    node, _ = online

    async def scenario():
        sub = WebsocketCommunicator(application, "/ws/queue/no-such-node/")
        await sub.connect()
        assert (await sub.receive_output(timeout=5))["code"] == 4404
        live = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        await live.connect()
        await live.receive_json_from(timeout=5)
        await sync_to_async(moderation.take_down)(
            node=await sync_to_async(Node.objects.get)(pk=node.pk), moderator=MOD, reason="reported"
        )
        assert (await live.receive_output(timeout=5))["code"] == 4404
        again = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        await again.connect()
        assert (await again.receive_output(timeout=5))["code"] == 4404

    run(scenario)


def test_the_all_nodes_stream_covers_listed_nodes_only(api, owner, online):
    node, secret = online
    hidden, hidden_secret = factories.make_node(owner, visibility="unlisted", gpu="Unlisted GPU")
    factories.heartbeat(api, hidden, hidden_secret)

    async def scenario():
        sub = WebsocketCommunicator(application, "/ws/queue/")
        await sub.connect()
        first = await sub.receive_json_from(timeout=5)
        assert first["node_id"] == node.pk and await sub.receive_nothing(timeout=0.2)
        await sync_to_async(api.post)(f"/api/nodes/{hidden.pk}/heartbeat", {"queue": QUEUE}, auth=hidden_secret)
        assert await sub.receive_nothing(timeout=0.3)  # an unlisted node's queue is not broadcast to everyone
        await sync_to_async(api.post)(f"/api/nodes/{node.pk}/heartbeat", {"queue": QUEUE}, auth=secret)
        assert (await sub.receive_json_from(timeout=5))["active"] == 1
        await sub.disconnect()

    run(scenario)


def test_subscribers_cannot_send_big_messages(online):
    node, _ = online

    async def scenario():
        sub = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        await sub.connect()
        await sub.receive_json_from(timeout=5)
        await sub.send_to(text_data="x" * 10000)
        assert (await sub.receive_output(timeout=5))["code"] == 1009

    run(scenario)


@pytest.mark.parametrize("secret", ["", "lrn_wrong", "lrk_a-contributor-key", "garbage"])
def test_a_refused_agent_is_accepted_then_closed_with_4401(online, secret):
    async def scenario():
        link = agent_socket(secret)
        connected, _ = await link.connect()
        assert connected  # accepted first, so that "refused" differs from "down"
        assert (await link.receive_output(timeout=5))["code"] == 4401

    run(scenario)


def test_the_agent_link_carries_heartbeats_queue_usage_and_flags(api, online, taster):
    node, secret = online
    _, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)

    async def scenario():
        sub = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        await sub.connect()
        await sub.receive_json_from(timeout=5)
        link = agent_socket(secret)
        assert (await link.connect())[0]
        assert (await link.receive_json_from(timeout=5))["type"] == "tracker_keys"
        rules = await link.receive_json_from(timeout=5)
        assert rules["type"] == "filter_rules" and rules["version"] >= 1

        await link.send_json_to({"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 2}})
        ack = await link.receive_json_from(timeout=5)
        assert ack["type"] == "heartbeat_ack" and ack["status"] == "available"
        await sub.receive_json_from(timeout=5)

        await link.send_json_to({"type": "queue", "queue": QUEUE})
        update = await sub.receive_json_from(timeout=5)
        assert update["waiting"] == 1 and update["entries"][1]["ticket"] == "t_bbbb"

        await link.send_json_to(
            {"type": "usage", "report_id": "ws-1", "entries": [{"jti": issued["jti"], "requests": 1}]}
        )
        usage = await link.receive_json_from(timeout=5)
        assert usage == {"type": "usage_ack", "report_id": "ws-1", "accepted": 1, "ignored": 0, "duplicate": False}

        await link.send_json_to({"type": "flag", "jti": issued["jti"], "stage": "output", "categories": ["x"]})
        assert (await link.receive_json_from(timeout=5))["type"] == "flag_ack"
        await link.disconnect()
        await sub.disconnect()

    run(scenario)
    from moderation.models import ModerationFlag

    assert ModerationFlag.objects.get().contributor_id == taster.id


def test_malformed_agent_messages_get_an_error_and_change_nothing(online):
    node, secret = online

    async def scenario():
        link = agent_socket(secret)
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        for message, code in (
            ("{nope", "invalid_json"),
            ("[1]", "unknown_type"),
            (json.dumps({"type": "reboot"}), "unknown_type"),
            (json.dumps({"type": "heartbeat", "queue": {"active": -1}}), "invalid_field"),
            (json.dumps({"type": "queue", "queue": "full"}), "invalid_field"),
        ):
            await link.send_to(text_data=message)
            reply = await link.receive_json_from(timeout=5)
            assert reply["type"] == "error" and reply["code"] == code, (message, reply)
        # Still connected and working.
        await link.send_json_to({"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 1}})
        assert (await link.receive_json_from(timeout=5))["type"] == "heartbeat_ack"
        await link.send_to(text_data="x" * (300 * 1024))
        assert (await link.receive_output(timeout=5))["code"] == 1009

    run(scenario)
    assert Node.objects.get(pk=node.pk).queue_active == 0


def test_moderators_decisions_reach_the_connected_agent(online, api, settings):
    node, secret = online
    _, issued = api.post("/api/tokens", {"node_id": node.pk})

    async def scenario():
        link = agent_socket(secret)
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        current = await sync_to_async(Node.objects.get)(pk=node.pk)
        await sync_to_async(moderation.revoke_tokens)(node=current, moderator=MOD, reason="precaution")
        assert await link.receive_json_from(timeout=5) == {"type": "revoke", "jtis": [issued["jti"]]}
        await sync_to_async(moderation.publish_filter_rules)()
        pushed = await link.receive_json_from(timeout=5)
        assert pushed["type"] == "filter_rules" and pushed["version"] >= 2
        await link.disconnect()

    run(scenario)


def test_a_dropped_link_leaves_one_heartbeat_interval_of_grace(online, settings):
    node, secret = online
    settings.HEARTBEAT_INTERVAL_SEC = 15

    async def scenario():
        link = agent_socket(secret)
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        await link.send_json_to({"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 1}})
        await link.receive_json_from(timeout=5)
        await link.disconnect()

    run(scenario)
    last = Node.objects.get(pk=node.pk).last_heartbeat_at
    age = (timezone.now() - last).total_seconds()
    assert 29 <= age <= 31  # fresh for 45 s in all: unavailable one interval (15 s) from now


def test_every_subscriber_of_a_node_gets_every_change(api, online):
    """Subscribers share one channel-layer membership per process; each still gets each change (here every
    change is waited for before the next: see the burst test for changes that supersede each other)."""
    node, secret = online

    async def scenario():
        subs = [WebsocketCommunicator(application, f"/ws/queue/{node.pk}/") for _ in range(5)]
        for sub in subs:
            await sub.connect()
            await sub.receive_json_from(timeout=5)
        for waiting in (1, 2, 3):
            queue = {"active": 1, "waiting": waiting, "max_active": 1}
            await sync_to_async(api.post)(f"/api/nodes/{node.pk}/heartbeat", {"queue": queue}, auth=secret)
            for sub in subs:
                assert (await sub.receive_json_from(timeout=5))["waiting"] == waiting
        await subs[0].disconnect()  # one leaving does not stop the others
        await sync_to_async(api.post)(
            f"/api/nodes/{node.pk}/heartbeat", {"queue": {"active": 0, "waiting": 0, "max_active": 1}}, auth=secret
        )
        for sub in subs[1:]:
            assert (await sub.receive_json_from(timeout=5))["active"] == 0
            await sub.disconnect()

    run(scenario)


def burst_queue(n: int) -> dict:
    entry = {"ticket": f"t_burst_{n:04d}", "position": 0, "state": "generating", "since": "2026-11-24T06:00:00Z"}
    return {"active": 1, "waiting": n % 7, "max_active": 1, "eta_sec": 5, "entries": [entry]}


async def changes_until(sub, last: int) -> list[int]:
    """The burst numbers a subscriber receives, until it holds the last one (bounded wait)."""
    seen = []
    while not seen or seen[-1] != last:
        message = await sub.receive_json_from(timeout=10)
        entries = message.get("entries") or [{"ticket": "t_burst_0000"}]
        seen.append(int(entries[0]["ticket"].removeprefix("t_burst_")))
    return seen


def test_a_burst_of_changes_ends_with_every_subscriber_holding_the_last_one_in_order(online):
    """Each queue message is a whole snapshot, so the fan-out sends the newest one at a bounded pace (one per
    INTERVAL_SEC on average, two in a row at most) and skips the ones superseded meanwhile: nobody gets an
    older state after a newer one, and everybody (a subscriber that joins mid-burst included) ends with the
    agent's last state."""
    import time

    from nodes import fanout

    node, secret = online
    last = 60

    async def scenario():
        subs = [WebsocketCommunicator(application, f"/ws/queue/{node.pk}/") for _ in range(4)]
        for sub in subs:
            await sub.connect()
            await sub.receive_json_from(timeout=5)
        link = agent_socket(secret)
        await link.connect()
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        started = time.monotonic()
        for n in range(1, last + 1):
            await link.send_json_to({"type": "queue", "queue": burst_queue(n)})
            if n == 10:  # an invalid snapshot in the burst is answered, even though a valid one follows it
                await link.send_json_to({"type": "queue", "queue": {"active": -1}})
            if n == last // 2:
                late = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
                await late.connect()
                subs.append(late)
        seen = [await changes_until(sub, last) for sub in subs]
        elapsed = time.monotonic() - started
        error = await link.receive_json_from(timeout=5)
        assert error["type"] == "error" and error["code"] == "invalid_field"
        for sub in subs:
            assert await sub.receive_nothing(timeout=0.3)  # the last state is sent once, then nothing
            await sub.disconnect()
        await link.disconnect()
        return seen, elapsed

    seen, elapsed = run(scenario)
    for numbers in seen:
        assert numbers == sorted(set(numbers)), numbers  # never out of order, never twice
        assert numbers[-1] == last
    # Latest state wins: no more sends than one per interval (plus the first two), however fast the agent was.
    assert all(len(numbers) <= elapsed / fanout.INTERVAL_SEC + 3 for numbers in seen[:4])
    # The tracker stored the last state too: REST and the websockets agree.
    assert Node.objects.get(pk=node.pk).queue_entries[0]["ticket"] == f"t_burst_{last:04d}"

"""Bans on the websockets (issue 11): a banned or taken-down node's agent link is accepted, then closed with
4403 (4401 stays "wrong secret"); a link open when the ban comes is closed at its next message; a contributor
ban reaches the connected agents of the nodes whose tokens it revokes, and the contributor's nodes leave the
public queue streams."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from luckrig_site.asgi import application
from moderation import services as moderation
from nodes.models import Node
from tests import factories

# As in tests/site/test_websockets.py: the data migrations survive the flush that transactional tests end with.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
MOD = moderation.Moderator(None, "ban-link-test")
BEAT = {"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 1}}

HIDE = {
    "node ban": lambda node, owner: moderation.ban(kind="node", value=node.pk, moderator=MOD, reason="spam rig"),
    "owner ban": lambda node, owner: moderation.ban(kind="contributor", value=owner.id, moderator=MOD, reason="x"),
    "takedown": lambda node, owner: moderation.take_down(node=node, moderator=MOD, reason="reported"),
}


def run(coro):
    return async_to_sync(coro)()


def agent_socket(secret):
    return WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {secret}".encode())])


async def opened(secret):
    link = agent_socket(secret)
    assert (await link.connect())[0]
    assert (await link.receive_json_from(timeout=5))["type"] == "tracker_keys"
    assert (await link.receive_json_from(timeout=5))["type"] == "filter_rules"
    return link


@pytest.fixture
def online(api, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    return node, secret


@pytest.mark.parametrize("how", sorted(HIDE))
def test_a_hidden_nodes_agent_link_is_accepted_then_closed_with_4403(online, owner, how):
    node, secret = online
    HIDE[how](node, owner)

    async def scenario():
        link = agent_socket(secret)
        assert (await link.connect())[0]  # accepted first, so that "refused" differs from "down"
        assert (await link.receive_output(timeout=5))["code"] == 4403

    run(scenario)


@pytest.mark.parametrize("how", sorted(HIDE))
def test_a_link_open_when_its_node_is_hidden_is_closed_at_its_next_message(online, owner, how):
    node, secret = online

    async def scenario():
        link = await opened(secret)
        await sync_to_async(HIDE[how])(await sync_to_async(Node.objects.get)(pk=node.pk), owner)
        while True:  # a revoke push may come first
            await link.send_json_to(BEAT)
            out = await link.receive_output(timeout=5)
            if out["type"] == "websocket.close":
                assert out["code"] == 4403
                break
            assert '"heartbeat_ack"' not in out.get("text", ""), out

    before = Node.objects.get(pk=node.pk).last_heartbeat_at
    run(scenario)
    assert Node.objects.get(pk=node.pk).last_heartbeat_at <= before


def test_a_contributor_ban_pushes_the_revoked_jtis_to_the_connected_agent(api, owner, taster):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    _, held = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)

    async def scenario():
        link = await opened(secret)
        await sync_to_async(moderation.ban)(kind="contributor", value=taster.id, moderator=MOD, reason="abuse")
        assert await link.receive_json_from(timeout=5) == {"type": "revoke", "jtis": [held["jti"]]}
        await link.disconnect()

    run(scenario)


def test_a_banned_contributors_nodes_leave_the_queue_streams(api, owner, online):
    node, secret = online

    async def scenario():
        one = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        await one.connect()
        assert (await one.receive_json_from(timeout=5))["node_id"] == node.pk
        every = WebsocketCommunicator(application, "/ws/queue/")
        await every.connect()
        assert (await every.receive_json_from(timeout=5))["node_id"] == node.pk
        await sync_to_async(moderation.ban)(kind="contributor", value=owner.id, moderator=MOD, reason="fake rigs")
        assert (await one.receive_output(timeout=5))["code"] == 4404
        assert await every.receive_json_from(timeout=5) == {"type": "removed", "node_id": node.pk}
        again = WebsocketCommunicator(application, f"/ws/queue/{node.pk}/")
        await again.connect()
        assert (await again.receive_output(timeout=5))["code"] == 4404
        fresh = WebsocketCommunicator(application, "/ws/queue/")
        await fresh.connect()
        assert await fresh.receive_nothing(timeout=0.3)  # not in the all-nodes snapshot
        await every.disconnect()
        await fresh.disconnect()

    run(scenario)

"""Circle rigs over the websockets (issue 15), against the real ASGI app: the agent link hears of a change of
visibility, circles or circle-only hours at once and its heartbeat answer carries them; the public queue streams
never carry a circle rig, and the subscribers of a rig that becomes one are closed."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from luckrig_site.asgi import application
from tests import factories
from tests.circle_rigs.cast import circle_rig, make_circle

# As tests/site/test_websockets.py: transactions commit (pushes go out on commit), and the data migrations survive.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
QUEUE = {"active": 0, "waiting": 0, "max_active": 1}


def run(coro):
    return async_to_sync(coro)()


async def agent_link(secret):
    link = WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {secret}".encode())])
    assert (await link.connect())[0]
    assert (await link.receive_json_from(timeout=5))["type"] == "tracker_keys"
    assert (await link.receive_json_from(timeout=5))["type"] == "filter_rules"
    return link


def test_the_agent_link_is_told_of_a_change_at_once_and_its_heartbeat_answer_agrees(api, owner):
    circle = make_circle(owner)
    node, secret = circle_rig(api, owner, [circle])
    band = make_circle(owner, name="band")

    async def scenario():
        link = await agent_link(secret)
        await link.send_json_to({"type": "heartbeat", "queue": QUEUE})
        ack = await link.receive_json_from(timeout=5)
        assert ack["type"] == "heartbeat_ack"
        assert (ack["visibility"], ack["circles"], ack["circle_only_hours"]) == ("circle", [circle.id], [])

        body = {"circles": [circle.id, band.id]}
        status, _ = await sync_to_async(api.patch)(f"/api/nodes/{node.id}", body, auth=owner.key)
        assert status == 200
        pushed = await link.receive_json_from(timeout=5)
        assert pushed == {
            "type": "circles",
            "visibility": "circle",
            "owner_id": node.owner_id,
            "circles": sorted([circle.id, band.id]),
            "circle_only_hours": [],
        }
        # An edit that changes nothing the agent acts on is not pushed.
        await sync_to_async(api.patch)(f"/api/nodes/{node.id}", {"display_name": "den"}, auth=owner.key)
        assert await link.receive_nothing(timeout=0.3)

        body = {"visibility": "public"}
        status, _ = await sync_to_async(api.post)(f"/api/nodes/{node.id}/publish", body, auth=owner.key)
        assert status == 200
        pushed = await link.receive_json_from(timeout=5)
        assert pushed["type"] == "circles" and pushed["visibility"] == "public"

        await link.send_json_to({"type": "heartbeat", "queue": QUEUE})
        ack = await link.receive_json_from(timeout=5)
        assert {k: ack[k] for k in ("visibility", "owner_id", "circles", "circle_only_hours")} == {
            k: pushed[k] for k in ("visibility", "owner_id", "circles", "circle_only_hours")
        }
        await link.disconnect()

    run(scenario)


def test_a_circle_rig_has_no_public_queue_stream(api, owner):
    circle = make_circle(owner)
    node, secret = circle_rig(api, owner, [circle])
    public, _ = circle_rig(api, owner, [], visibility="public")

    async def scenario():
        sub = WebsocketCommunicator(application, f"/ws/queue/{node.id}/")
        await sub.connect()
        assert (await sub.receive_output(timeout=5))["code"] == 4404
        everyone = WebsocketCommunicator(application, "/ws/queue/")
        await everyone.connect()
        assert (await everyone.receive_json_from(timeout=5))["node_id"] == public.id
        assert await everyone.receive_nothing(timeout=0.2)
        await sync_to_async(factories.heartbeat)(api, node, secret, active=1)
        assert await everyone.receive_nothing(timeout=0.3)
        await everyone.disconnect()

    run(scenario)


def test_the_subscribers_of_a_rig_that_becomes_a_circle_rig_are_closed(api, owner):
    circle = make_circle(owner)
    node, secret = circle_rig(api, owner, [], visibility="public")

    async def scenario():
        sub = WebsocketCommunicator(application, f"/ws/queue/{node.id}/")
        await sub.connect()
        await sub.receive_json_from(timeout=5)
        everyone = WebsocketCommunicator(application, "/ws/queue/")
        await everyone.connect()
        assert (await everyone.receive_json_from(timeout=5))["node_id"] == node.id
        body = {"visibility": "circle", "circles": [circle.id]}
        assert (await sync_to_async(api.patch)(f"/api/nodes/{node.id}", body, auth=owner.key))[0] == 200
        assert (await sub.receive_output(timeout=5))["code"] == 4404
        assert await everyone.receive_json_from(timeout=5) == {"type": "removed", "node_id": node.id}
        await sync_to_async(factories.heartbeat)(api, node, secret, active=1)
        assert await everyone.receive_nothing(timeout=0.3)
        await everyone.disconnect()

    run(scenario)

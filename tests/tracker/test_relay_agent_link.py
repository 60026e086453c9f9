"""A relayed node's agent link (`/ws/agent/`) follows the same liveness rule as its HTTP heartbeats: alive
only while its relay reports the tunnel open."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from luckrig_site.asgi import application
from tests.tracker.test_relays import add_relay, register_relayed, relay_heartbeat, tunnel

# As in tests/site/test_websockets.py: the data migrations survive the flush that transactional tests end with.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
QUEUE = {"active": 0, "waiting": 0, "max_active": 1}


def test_websocket_heartbeats_of_a_relayed_node_follow_its_tunnel(api, owner):
    relay_secret = add_relay("relay-a", "https://relay-a.example.org")
    relay_heartbeat(api, "relay-a", relay_secret)
    node, secret = register_relayed(api, owner)
    assert tunnel(api, node["id"], secret)[0] == 200

    async def scenario():
        auth = [(b"authorization", f"Bearer {secret}".encode())]
        link = WebsocketCommunicator(application, "/ws/agent/", headers=auth)
        assert (await link.connect())[0]
        await link.receive_json_from(timeout=5)  # tracker_keys
        await link.receive_json_from(timeout=5)  # filter_rules
        await link.send_json_to({"type": "heartbeat", "queue": QUEUE})
        assert (await link.receive_json_from(timeout=5))["status"] == "unavailable"  # no tunnel seen yet
        await sync_to_async(relay_heartbeat)(api, "relay-a", relay_secret, [node["id"]])
        await link.send_json_to({"type": "heartbeat", "queue": QUEUE})
        assert (await link.receive_json_from(timeout=5))["status"] == "available"
        await sync_to_async(relay_heartbeat)(api, "relay-a", relay_secret, [])
        await link.send_json_to({"type": "heartbeat", "queue": QUEUE})
        assert (await link.receive_json_from(timeout=5))["status"] == "unavailable"
        await link.disconnect()

    async_to_sync(scenario)()


def test_a_status_change_from_a_relay_heartbeat_reaches_queue_subscribers(api, owner):
    relay_secret = add_relay("relay-a", "https://relay-a.example.org")
    relay_heartbeat(api, "relay-a", relay_secret)
    node, secret = register_relayed(api, owner)
    tunnel(api, node["id"], secret)
    api.post(f"/api/nodes/{node['id']}/heartbeat", {"queue": QUEUE}, auth=secret)

    async def scenario():
        everything = WebsocketCommunicator(application, "/ws/queue/")
        assert (await everything.connect())[0]
        assert await everything.receive_nothing(timeout=0.3)  # not taking tasters: not in the snapshot
        await sync_to_async(relay_heartbeat)(api, "relay-a", relay_secret, [node["id"]])
        message = await everything.receive_json_from(timeout=5)
        assert message["type"] == "queue" and message["node_id"] == node["id"]
        await sync_to_async(relay_heartbeat)(api, "relay-a", relay_secret, [node["id"]])  # no change: no message
        assert await everything.receive_nothing(timeout=0.3)
        await everything.disconnect()

    async_to_sync(scenario)()

"""A node ban reaches the node's connected agent at once, as a takedown or a revocation does: the jtis of its
outstanding tokens arrive as a `revoke` push (the heartbeat answer carries them too: see test_bans)."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from luckrig_site.asgi import application
from moderation import services
from tests import factories

# As in tests/site/test_websockets.py: the data migrations survive the flush that transactional tests end with.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
MOD = services.Moderator(None, "ws-test")


def test_a_node_ban_pushes_the_revoked_jtis_to_the_connected_agent(api, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    _, issued = api.post("/api/tokens", {"node_id": node.pk})

    async def scenario():
        auth = [(b"authorization", f"Bearer {secret}".encode())]
        link = WebsocketCommunicator(application, "/ws/agent/", headers=auth)
        assert (await link.connect())[0]
        await link.receive_json_from(timeout=5)  # the keys and filter rules it is sent on connecting
        await link.receive_json_from(timeout=5)
        await sync_to_async(services.ban)(kind="node", value=node.pk, moderator=MOD, reason="malware links", days=7)
        assert await link.receive_json_from(timeout=5) == {"type": "revoke", "jtis": [issued["jti"]]}
        await link.disconnect()

    async_to_sync(scenario)()

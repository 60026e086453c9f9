"""What a circle change tells the rigs' agents at once, over their links (issue 15): a removed or paused member's
circle tokens arrive as a `revoke` push (the heartbeat answer carries them too), and a deleted circle tells each rig
it was shared with its new circles (`{"type": "circles", ...}`, the heartbeat answer's three fields)."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from luckrig_site.asgi import application
from nodes.models import Node
from tests import factories
from tracker.circle_push import push_circle_policy
from tracker.models import TastingToken

# As in tests/site/test_websockets.py: the data migrations survive the flush that transactional tests end with.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


async def opened(secret):
    link = WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {secret}".encode())])
    assert (await link.connect())[0]
    assert (await link.receive_json_from(timeout=5))["type"] == "tracker_keys"
    assert (await link.receive_json_from(timeout=5))["type"] == "filter_rules"
    return link


def shared_rig(api, owner, taster):
    """A rig of owner's shared with owner's circle, which taster joined, and taster's circle token for it."""
    _, made = api.post("/api/circles", {"name": "Friends"}, auth=owner.key)
    circle_id = made["circle"]["id"]
    _, invite = api.post(f"/api/circles/{circle_id}/invites", {}, auth=owner.key)
    assert api.post(f"/api/circles/invites/{invite['code']}/join", {}, auth=taster.key)[0] == 201
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    node.circles.add(circle_id)
    _, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)
    # As POST /api/tokens issues it to a member of a circle the rig is shared with.
    TastingToken.objects.filter(jti=issued["jti"]).update(circle_id=circle_id)
    return circle_id, node, secret, issued["jti"]


@pytest.mark.parametrize("act", ["remove", "pause"])
def test_a_removed_or_paused_members_circle_tokens_are_pushed_to_the_rigs_agent(api, owner, taster, act):
    circle_id, node, secret, jti = shared_rig(api, owner, taster)
    path = f"/api/circles/{circle_id}/members/{taster.id}"

    async def scenario():
        link = await opened(secret)
        if act == "remove":
            status, _ = await sync_to_async(api.delete)(path, auth=owner.key)
        else:
            status, _ = await sync_to_async(api.patch)(path, {"status": "paused"}, auth=owner.key)
        assert status in (200, 204)
        assert await link.receive_json_from(timeout=5) == {"type": "revoke", "jtis": [jti]}
        await link.disconnect()

    async_to_sync(scenario)()
    # The heartbeat answer carries it too, for an agent whose link was down.
    assert jti in factories.heartbeat(api, node, secret)["revoked_jtis"]


def test_deleting_a_circle_revokes_and_tells_the_rig_its_circles(api, owner, taster):
    circle_id, node, secret, jti = shared_rig(api, owner, taster)
    Node.objects.filter(pk=node.pk).update(visibility="circle", circle_only_hours=[22, 3])

    async def scenario():
        link = await opened(secret)
        assert (await sync_to_async(api.delete)(f"/api/circles/{circle_id}", auth=owner.key))[0] == 204
        got = [await link.receive_json_from(timeout=5), await link.receive_json_from(timeout=5)]
        await link.disconnect()
        return got

    got = async_to_sync(scenario)()
    assert {"type": "revoke", "jtis": [jti]} in got
    # The rig stays a circle rig, now shared with no circle: only its owner may taste it.
    assert {
        "type": "circles",
        "visibility": "circle",
        "owner_id": node.owner_id,
        "circles": [],
        "circle_only_hours": [3, 22],
    } in got


def test_a_policy_push_says_what_was_committed(api, owner):
    node, secret = factories.make_node(owner)
    _, made = api.post("/api/circles", {"name": "Friends"}, auth=owner.key)

    async def scenario():
        link = await opened(secret)

        def change():
            from django.db import transaction

            with transaction.atomic():
                push_circle_policy(node)  # asked before the change, in the same transaction
                node.circles.add(made["circle"]["id"])
                Node.objects.filter(pk=node.pk).update(visibility="unlisted")

        await sync_to_async(change)()
        message = await link.receive_json_from(timeout=5)
        await link.disconnect()
        return message

    assert async_to_sync(scenario)() == {
        "type": "circles",
        "visibility": "unlisted",
        "owner_id": node.owner_id,
        "circles": [made["circle"]["id"]],
        "circle_only_hours": [],
    }

"""Review of issue 15: a rig is shared with a circle only while its owner is in it, and unsharing takes the
circle's tokens for the rig with it.

A rig may be shared only with circles its owner is an active member of (CIRCLES.md); a member who leaves, or is
removed, takes their rigs out of the circle, or the circle's other members (its owner first) would go on seeing
and tasting a friends-only rig whose owner is no longer their friend. Tokens issued through a circle the rig is
no longer shared with are revoked, as a removed member's own are: an agent whose operator pinned that circle would
otherwise go on taking them."""

import pytest

from nodes.models import Node
from tests import factories
from tests.circle_rigs.cast import circle_rig, join, make_circle
from tests.circle_rigs.test_tokens import token
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def friends_rig(api, friend, circle):
    """The friend's own circle rig, shared with the owner's circle."""
    return circle_rig(api, friend, [circle], gpu="Friend's GPU")


@pytest.mark.parametrize("how", ["removed", "left"])
def test_a_member_who_leaves_takes_their_rigs_out_of_the_circle(api, owner, friend, taster, circle, friends_rig, how):
    node, secret = friends_rig
    join(circle, taster)
    owners_token = token(api, node, owner)[1]
    assert owners_token["circle"]["id"] == circle.id
    path = f"/api/circles/{circle.id}/members/" + (friend.id if how == "removed" else "me")
    assert api.delete(path, auth=owner.key if how == "removed" else friend.key)[0] == 204
    assert not Node.objects.get(pk=node.pk).circles.exists()
    # The circle's owner and its other members no longer see or taste it; its owner still does.
    for person in (owner, taster):
        assert api.get(f"/api/nodes/{node.id}", auth=person.key)[1]["code"] == "not_in_circle"
        assert token(api, node, person)[1]["code"] == "not_in_circle"
    assert api.get(f"/api/nodes/{node.id}", auth=friend.key)[0] == 200
    _, detail = api.get(f"/api/circles/{circle.id}", auth=owner.key)
    assert detail["nodes"] == [] and detail["circle"]["nodes_count"] == 0
    # The owner's live token through the circle is revoked, and the rig's agent hears its new radius.
    assert TastingToken.objects.get(jti=owners_token["jti"]).revoked_at is not None
    answer = factories.heartbeat(api, node, secret)
    assert owners_token["jti"] in answer["revoked_jtis"] and answer["circles"] == []


def test_a_member_who_leaves_keeps_their_rig_in_their_other_circles(api, owner, friend, circle, friends_rig):
    node, _ = friends_rig
    theirs = factories.make_contributor(handle="theirs")
    band = make_circle(theirs, name="band")
    join(band, friend)
    assert api.patch(f"/api/nodes/{node.id}", {"circles": [circle.id, band.id]}, auth=friend.key)[0] == 200
    assert api.delete(f"/api/circles/{circle.id}/members/me", auth=friend.key)[0] == 204
    assert list(Node.objects.get(pk=node.pk).circles.values_list("id", flat=True)) == [band.id]


def test_unsharing_a_rig_from_a_circle_revokes_the_tokens_issued_through_it(api, owner, friend, circle, rig):
    issued = token(api, rig, friend)[1]
    assert issued["circle"]["id"] == circle.id
    kept = token(api, rig, owner)[1]
    assert api.patch(f"/api/nodes/{rig.id}", {"circles": []}, auth=owner.key)[0] == 200
    assert TastingToken.objects.get(jti=issued["jti"]).revoked_at is not None
    # The owner's own token went through the circle too; the owner may still taste the rig, with a new one.
    assert TastingToken.objects.get(jti=kept["jti"]).revoked_at is not None
    assert token(api, rig, owner)[0] == 201


def test_a_banned_owners_circle_gives_no_circle_tokens(api, owner, friend, taster, circle, friends_rig):
    """A circle whose owner is banned is gone for everyone (404 `circle_not_found`); its members do not go on
    tasting each other's rigs through it."""
    from moderation import services as moderation

    node, _ = friends_rig
    join(circle, taster)
    assert token(api, node, taster)[1]["circle"]["id"] == circle.id
    moderation.ban(kind="contributor", value=owner.id, moderator=moderation.Moderator(None, "review"), reason="abuse")
    assert api.get(f"/api/circles/{circle.id}", auth=taster.key)[1]["code"] == "circle_not_found"
    status, body = token(api, node, taster)
    assert (status, body["code"]) == (403, "not_in_circle")
    status, body = token(api, node, taster, circle_id=circle.id)
    assert (status, body["code"]) == (403, "not_in_circle")
    # The rig's own owner still tastes it (with no circle: their own token, which their agent takes by its sub).
    status, body = token(api, node, friend)
    assert status == 201 and body["circle"] is None

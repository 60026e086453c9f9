"""Circle members through the API (issue 15): joining (and who may not: bans), what the owner and a member see of
each other's usage, the owner's changes to a member's limits and role, pausing, removing and leaving (each revoking
that member's circle tokens), and an inviter's live links going with them. The helpers are test_circles_api.py's."""

import pytest
from django.utils import timezone

from moderation import services as moderation
from nodes import circles as circle_rows
from nodes.models import CircleInvite, CircleMember
from tests import factories
from tests.tracker.test_circles_api import (
    GONE,
    MOD,
    circle_token,
    join,
    make_circle,
    make_invite,
    member_of,
    revoked,
)
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db


def test_joining_makes_a_member_on_the_invites_terms(api, owner, taster):
    circle = make_circle(api, owner, "Roommates")
    made = make_invite(api, owner, circle["id"], role="inviter", limits={"requests_per_day": 7, "tokens_per_day": 70})
    status, body = join(api, taster, made["code"])
    assert status == 201
    assert body["circle"]["id"] == circle["id"] and body["circle"]["my_role"] == "inviter"
    assert body["circle"]["members_count"] == 2
    membership = body["membership"]
    assert membership == {
        "contributor": {"id": taster.id, "handle": "taster"},
        "role": "inviter",
        "status": "active",
        "joined_at": membership["joined_at"],
        "limits": {"requests_per_day": 7, "tokens_per_day": 70},
        "limits_source": "member",
        "usage_today": {"requests": 0, "tokens": 0},
        "resets_at": membership["resets_at"],
    }
    assert membership["resets_at"].endswith("T00:00:00.000Z")
    assert CircleInvite.objects.get(pk=made["invite"]["id"]).uses == 1
    assert CircleMember.objects.get(contributor=taster.contributor).invite_id == made["invite"]["id"]


def test_joining_twice_is_409_and_takes_no_use(api, owner, taster):
    circle = make_circle(api, owner)
    made = make_invite(api, owner, circle["id"], max_uses=3)
    assert join(api, taster, made["code"])[0] == 201
    status, body = join(api, taster, made["code"])
    assert status == 409 and body["code"] == "already_member"
    # The owner is a member too.
    status, body = join(api, owner, made["code"])
    assert status == 409 and body["code"] == "already_member"
    assert CircleInvite.objects.get(pk=made["invite"]["id"]).uses == 1


def test_joining_needs_a_key_and_takes_no_body_fields(api, owner, taster):
    made = make_invite(api, owner, make_circle(api, owner)["id"])
    status, body = api.post(f"/api/circles/invites/{made['code']}/join", {})
    assert status == 401 and body["code"] == "unauthorized"
    status, body = api.post(f"/api/circles/invites/{made['code']}/join", {"role": "owner"}, auth=taster.key)
    assert status == 400 and body["code"] == "unknown_field"
    assert CircleInvite.objects.get(pk=made["invite"]["id"]).uses == 0


def test_of_two_joiners_of_a_single_use_invite_only_the_first_gets_in(api, owner, taster):
    """The second joiner had read the invite while it still had its use: the conditional UPDATE refuses them."""
    made = make_invite(api, owner, make_circle(api, owner)["id"])
    seen_by_second = CircleInvite.objects.get(pk=made["invite"]["id"])  # uses 0: live, as it was read
    assert join(api, taster, made["code"])[0] == 201
    second = factories.make_contributor()
    with pytest.raises(circle_rows.InviteGone):
        circle_rows.join(invite=seen_by_second, contributor=second.contributor, now=timezone.now())
    assert CircleInvite.objects.get(pk=made["invite"]["id"]).uses == 1
    assert not CircleMember.objects.filter(contributor=second.contributor).exists()


# --- bans --------------------------------------------------------------------------------------------------------


def test_a_banned_contributor_cannot_create_circles_or_invites_or_join(api, owner, taster):
    circle = make_circle(api, owner)
    made = make_invite(api, owner, circle["id"])
    for person in (owner, taster):
        moderation.ban(kind="contributor", value=person.id, moderator=MOD, reason="spam")
    for status, body in (
        api.post("/api/circles", {"name": "Another"}, auth=taster.key),
        join(api, taster, made["code"]),
        api.post(f"/api/circles/{circle['id']}/invites", {}, auth=owner.key),
    ):
        assert status == 403 and body["code"] == "banned", body
    assert CircleInvite.objects.get(pk=made["invite"]["id"]).uses == 0


def test_the_circle_of_a_banned_owner_is_gone_for_everyone(api, owner, taster):
    circle = member_of(api, owner, taster)
    made = make_invite(api, owner, circle["id"], max_uses=None)
    moderation.ban(kind="contributor", value=owner.id, moderator=MOD, reason="abuse", days=3)
    for person in (taster, owner):
        status, body = api.get(f"/api/circles/{circle['id']}", auth=person.key)
        assert status == 404 and body["code"] == "circle_not_found"
        assert api.get("/api/circles", auth=person.key)[1]["circles"] == []
    newcomer = factories.make_contributor()
    assert api.get(f"/api/circles/invites/{made['code']}")[0:2] == (
        410,
        {"schema_version": 1, "error": GONE, "code": "invite_gone"},
    )
    assert join(api, newcomer, made["code"])[1]["code"] == "invite_gone"
    # Lifted: back as it was.
    moderation.unban(kind="contributor", value=owner.id, moderator=MOD, reason="appeal")
    assert api.get(f"/api/circles/{circle['id']}", auth=taster.key)[0] == 200
    assert join(api, newcomer, made["code"])[0] == 201


# --- members -----------------------------------------------------------------------------------------------------


def test_the_owner_sees_every_member_with_todays_usage_and_a_member_only_their_own(api, owner, taster):
    circle = member_of(api, owner, taster)
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    jti = circle_token(api, taster, node, circle["id"])
    TastingToken.objects.filter(jti=jti).update(
        max_requests=3, max_output_tokens=500, prompt_tokens=100, completion_tokens=20
    )
    path = f"/api/circles/{circle['id']}/members"
    status, body = api.get(path, auth=owner.key)
    assert status == 200 and body["resets_at"].endswith("T00:00:00.000Z")
    assert [(m["contributor"]["id"], m["role"]) for m in body["members"]] == [
        (owner.id, "owner"),
        (taster.id, "member"),
    ]
    theirs = body["members"][1]
    # A live token reserves its whole max_requests and output budget: its prompt tokens plus its 500 of output.
    assert theirs["usage_today"] == {"requests": 3, "tokens": 600}
    assert theirs["limits"] == {"requests_per_day": 200, "tokens_per_day": 200_000}
    assert theirs["limits_source"] == "circle"
    status, body = api.get(path, auth=taster.key)
    assert status == 200 and [m["contributor"]["id"] for m in body["members"]] == [taster.id]
    stranger = factories.make_contributor()
    assert api.get(path, auth=stranger.key)[1]["code"] == "not_in_circle"


def test_the_owner_sets_a_members_limits_and_role_and_puts_them_back(api, owner, taster):
    circle = member_of(api, owner, taster)
    path = f"/api/circles/{circle['id']}/members/{taster.id}"
    status, body = api.patch(
        path, {"limits": {"requests_per_day": 9, "tokens_per_day": 99}, "role": "inviter"}, auth=owner.key
    )
    assert status == 200
    assert body["member"]["limits"] == {"requests_per_day": 9, "tokens_per_day": 99}
    assert body["member"]["limits_source"] == "member" and body["member"]["role"] == "inviter"
    status, body = api.patch(path, {"limits": None}, auth=owner.key)
    assert status == 200 and body["member"]["limits_source"] == "circle"
    assert body["member"]["limits"] == {"requests_per_day": 200, "tokens_per_day": 200_000}
    assert body["member"]["role"] == "inviter"


@pytest.mark.parametrize(
    "body, code",
    [
        ({"status": "banned"}, "invalid_field"),
        ({"role": "owner"}, "invalid_field"),
        ({"limits": {"requests_per_day": -1, "tokens_per_day": 5}}, "invalid_field"),
        ({"limits": "none"}, "invalid_field"),
        ({"nickname": "x"}, "unknown_field"),
    ],
)
def test_bad_member_changes_are_400(api, owner, taster, body, code):
    circle = member_of(api, owner, taster)
    status, answer = api.patch(f"/api/circles/{circle['id']}/members/{taster.id}", body, auth=owner.key)
    assert status == 400 and answer["code"] == code, answer


def test_only_the_owner_changes_members_and_never_their_own_role(api, owner, taster):
    circle = member_of(api, owner, taster)
    base = f"/api/circles/{circle['id']}/members"
    status, body = api.patch(f"{base}/{owner.id}", {"status": "paused"}, auth=taster.key)
    assert status == 403 and body["code"] == "not_circle_owner"
    for change in ({"status": "paused"}, {"role": "member"}):
        status, body = api.patch(f"{base}/{owner.id}", change, auth=owner.key)
        assert status == 409 and body["code"] == "owner_role_fixed"
    status, body = api.patch(f"{base}/c_nobody", {"status": "paused"}, auth=owner.key)
    assert status == 404 and body["code"] == "member_not_found"


def test_pausing_a_member_revokes_their_circle_tokens_only(api, owner, taster):
    circle = member_of(api, owner, taster)
    other = member_of(api, owner, taster, "Other circle")
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    in_circle = circle_token(api, taster, node, circle["id"])
    in_other = circle_token(api, taster, node, other["id"])
    plain = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)[1]["jti"]
    status, body = api.patch(f"/api/circles/{circle['id']}/members/{taster.id}", {"status": "paused"}, auth=owner.key)
    assert status == 200 and body["member"]["status"] == "paused"
    assert revoked(in_circle) and not revoked(in_other) and not revoked(plain)
    # Paused, they still see their circle.
    assert api.get(f"/api/circles/{circle['id']}", auth=taster.key)[1]["circle"]["my_status"] == "paused"
    status, body = api.patch(f"/api/circles/{circle['id']}/members/{taster.id}", {"status": "active"}, auth=owner.key)
    assert status == 200 and body["member"]["status"] == "active"


def test_removing_a_member_revokes_their_circle_tokens(api, owner, taster):
    circle = member_of(api, owner, taster)
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    jti = circle_token(api, taster, node, circle["id"])
    plain = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)[1]["jti"]
    assert api.delete(f"/api/circles/{circle['id']}/members/{taster.id}", auth=owner.key)[0] == 204
    assert revoked(jti) and not revoked(plain)
    assert api.get(f"/api/circles/{circle['id']}", auth=taster.key)[1]["code"] == "not_in_circle"


def test_a_member_leaves_with_me_and_the_owner_cannot(api, owner, taster):
    circle = member_of(api, owner, taster)
    base = f"/api/circles/{circle['id']}/members"
    for who in ("me", owner.id):
        status, body = api.delete(f"{base}/{who}", auth=owner.key)
        assert status == 409 and body["code"] == "owner_cannot_leave"
        assert "delete the circle" in body["error"]
    other = factories.make_contributor()
    assert join(api, other, make_invite(api, owner, circle["id"])["code"])[0] == 201
    status, body = api.delete(f"{base}/{other.id}", auth=taster.key)
    assert status == 403 and body["code"] == "not_circle_owner"
    assert api.delete(f"{base}/me", auth=taster.key)[0] == 204
    assert not CircleMember.objects.filter(circle_id=circle["id"], contributor=taster.contributor).exists()
    status, body = api.delete(f"{base}/c_nobody", auth=owner.key)
    assert status == 404 and body["code"] == "member_not_found"


@pytest.mark.parametrize(
    "act",
    [("patch", {"status": "paused"}), ("patch", {"role": "member"}), ("delete", None)],
    ids=["paused", "demoted", "removed"],
)
def test_an_inviter_who_is_paused_demoted_or_removed_takes_their_live_links_along(api, owner, taster, act):
    circle = member_of(api, owner, taster)
    inviter = factories.make_contributor()
    assert join(api, inviter, make_invite(api, owner, circle["id"], role="inviter")["code"])[0] == 201
    theirs = make_invite(api, inviter, circle["id"], max_uses=None)["code"]
    owners = make_invite(api, owner, circle["id"])["code"]
    method, body = act
    path = f"/api/circles/{circle['id']}/members/{inviter.id}"
    done = api.patch(path, body, auth=owner.key) if method == "patch" else api.delete(path, auth=owner.key)
    assert done[0] in (200, 204), done
    newcomer = factories.make_contributor()
    status, answer = join(api, newcomer, theirs)
    assert (status, answer["code"]) == (410, "invite_gone")
    assert join(api, newcomer, owners)[0] == 201  # the owner's own links still work

"""The circles API (issue 15; docs/api.md "Circles"): circles, invites, the public preview, and every refusal on the
way: dead and forged codes, bad input, the invite rate. (Joining, members and bans are in test_circle_members.py;
what reaches the agents when a member is removed or paused in test_circle_pushes.py; two joiners racing for one use
over real HTTP in test_circle_join_race.py.)"""

import json
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.utils import timezone

from moderation import services as moderation
from nodes.models import CircleInvite, CircleMember, Node
from tests import factories
from tracker import circle_services
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "circles-test")
GONE = "This invite link no longer works. Ask the circle's owner for a new one."


def make_circle(api, person, name="Friends", **body):
    status, answer = api.post("/api/circles", {"schema_version": 1, "name": name, **body}, auth=person.key)
    assert status == 201, answer
    return answer["circle"]


def make_invite(api, person, circle_id, **body):
    status, answer = api.post(f"/api/circles/{circle_id}/invites", {"schema_version": 1, **body}, auth=person.key)
    assert status == 201, answer
    return answer


def join(api, person, code):
    return api.post(f"/api/circles/invites/{code}/join", {"schema_version": 1}, auth=person.key)


def member_of(api, owner, person, name="Friends", **invite):
    """A circle of `owner`'s that `person` joined; returns the circle."""
    circle = make_circle(api, owner, name)
    status, body = join(api, person, make_invite(api, owner, circle["id"], **invite)["code"])
    assert status == 201, body
    return circle


def circle_token(api, person, node, circle_id) -> str:
    """A token the person holds for the node, issued through the circle (as POST /api/tokens does for a member of
    a circle the rig is shared with): its jti."""
    status, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=person.key)
    assert status == 201, issued
    TastingToken.objects.filter(jti=issued["jti"]).update(circle_id=circle_id)
    return issued["jti"]


def revoked(jti) -> bool:
    return TastingToken.objects.get(jti=jti).revoked_at is not None


# --- circles -----------------------------------------------------------------------------------------------------


def test_a_contributor_creates_a_circle_and_finds_it_in_their_list(api, owner):
    circle = make_circle(api, owner, "Roommates", default_limits={"requests_per_day": 50, "tokens_per_day": 9000})
    assert circle["id"].startswith("c_")
    assert circle == {
        "id": circle["id"],
        "name": "Roommates",
        "owner": {"id": owner.id, "handle": "owner"},
        "created_at": circle["created_at"],
        "default_limits": {"requests_per_day": 50, "tokens_per_day": 9000},
        "my_role": "owner",
        "my_status": "active",
        "members_count": 1,
        "nodes_count": 0,
    }
    assert CircleMember.objects.get(circle_id=circle["id"]).role == "owner"
    status, listed = api.get("/api/circles", auth=owner.key)
    assert status == 200 and listed == {"schema_version": 1, "circles": [circle]}


def test_a_circle_without_limits_gets_the_defaults(api, owner):
    assert make_circle(api, owner)["default_limits"] == {"requests_per_day": 200, "tokens_per_day": 200_000}


def test_the_same_name_twice_is_409_but_another_owner_may_use_it(api, owner, taster):
    make_circle(api, owner, "Friends")
    status, body = api.post("/api/circles", {"name": "Friends"}, auth=owner.key)
    assert status == 409 and body["code"] == "circle_exists"
    make_circle(api, taster, "Friends")


def test_the_list_holds_the_circles_i_own_and_the_ones_i_joined(api, owner, taster):
    joined = member_of(api, owner, taster, "Owner's")
    mine = make_circle(api, taster, "Taster's")
    _, listed = api.get("/api/circles", auth=taster.key)
    assert [(c["id"], c["my_role"], c["members_count"]) for c in listed["circles"]] == [
        (joined["id"], "member", 2),
        (mine["id"], "owner", 1),
    ]


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"name": "x", "colour": "red"}, "unknown_field", "colour"),
        ({"name": 5}, "invalid_field", "name"),
        ({"name": ["x"]}, "invalid_field", "name"),
        ({"name": "x" * 81}, "invalid_field", "name"),
        ({"name": "   "}, "invalid_field", "name"),
        ({}, "invalid_field", "name"),
        ({"name": "x", "default_limits": 100}, "invalid_field", "default_limits"),
        ({"name": "x", "default_limits": {"requests_per_day": 1}}, "invalid_field", "default_limits.tokens_per_day"),
        (
            {"name": "x", "default_limits": {"requests_per_day": "9", "tokens_per_day": 9}},
            "invalid_field",
            "default_limits.requests_per_day",
        ),
        (
            {"name": "x", "default_limits": {"requests_per_day": 0, "tokens_per_day": 9}},
            "invalid_field",
            "default_limits.requests_per_day",
        ),
        (
            {"name": "x", "default_limits": {"requests_per_day": 9, "tokens_per_day": 10**12}},
            "invalid_field",
            "default_limits.tokens_per_day",
        ),
        (
            {"name": "x", "default_limits": {"requests_per_day": 9, "tokens_per_day": 9, "x": 1}},
            "unknown_field",
            "default_limits.x",
        ),
        ({"name": "x", "schema_version": 2}, "invalid_field", "schema_version"),
    ],
)
def test_bad_circle_bodies_are_400_with_the_field_named(api, owner, body, code, field):
    status, answer = api.post("/api/circles", body, auth=owner.key)
    assert status == 400 and answer["code"] == code and answer["field"] == field, answer
    assert not CircleMember.objects.exists()


def test_a_body_that_is_not_json_is_400(api, owner):
    status, answer = api.post("/api/circles", raw=b"{name", auth=owner.key)
    assert status == 400 and answer["code"] == "invalid_json"


def test_circles_need_a_contributor_key(api):
    assert api.get("/api/circles")[1]["code"] == "unauthorized"
    assert api.post("/api/circles", {"name": "x"})[0] == 401
    assert api.post("/api/circles", {"name": "x"}, auth="lrk_not-a-real-key")[0] == 401


def test_a_circle_is_seen_by_its_members_only_and_its_existence_does_not_leak(api, owner, taster):
    circle = member_of(api, owner, taster)
    stranger = factories.make_contributor()
    path = f"/api/circles/{circle['id']}"
    status, body = api.get(path, auth=taster.key)
    assert status == 200 and body["circle"]["my_role"] == "member" and body["nodes"] == []
    assert api.get(path)[0:2] == (
        404,
        {"schema_version": 1, "error": f"No circle {circle['id']!r}.", "code": "circle_not_found"},
    )
    status, body = api.get(path, auth=stranger.key)
    assert status == 403 and body["code"] == "not_in_circle"
    for unknown in ("c_nope", "c_" + "x" * 500, "c_%00"):
        status, body = api.get(f"/api/circles/{unknown}", auth=owner.key)
        assert status == 404 and body["code"] == "circle_not_found", unknown


def test_the_circle_shows_the_rigs_shared_with_it_but_not_a_taken_down_one(api, owner, taster):
    circle = member_of(api, owner, taster)
    shared, _ = factories.make_node(owner)
    gone, _ = factories.make_node(owner)
    other, _ = factories.make_node(owner)
    shared.circles.add(circle["id"])
    gone.circles.add(circle["id"])
    moderation.take_down(node=gone, moderator=MOD, reason="reported")
    status, body = api.get(f"/api/circles/{circle['id']}", auth=taster.key)
    assert status == 200 and [n["id"] for n in body["nodes"]] == [shared.pk]
    assert body["nodes"][0]["circles"] == [{"id": circle["id"], "name": circle["name"]}]  # the member's badge
    assert body["circle"]["nodes_count"] == 1 and body["circle"]["members_count"] == 2
    assert other.pk not in json.dumps(body)


def test_the_owner_renames_a_circle_and_changes_its_defaults(api, owner, taster):
    circle = member_of(api, owner, taster)
    make_circle(api, owner, "Taken")
    path = f"/api/circles/{circle['id']}"
    status, body = api.patch(path, {"name": "Flatmates"}, auth=owner.key)
    assert status == 200 and body["circle"]["name"] == "Flatmates"
    status, body = api.patch(path, {"default_limits": {"requests_per_day": 3, "tokens_per_day": 4}}, auth=owner.key)
    assert status == 200 and body["circle"]["default_limits"] == {"requests_per_day": 3, "tokens_per_day": 4}
    assert body["circle"]["name"] == "Flatmates"
    status, body = api.patch(path, {"name": "Taken"}, auth=owner.key)
    assert status == 409 and body["code"] == "circle_exists"
    status, body = api.patch(path, {"name": "Mine now"}, auth=taster.key)
    assert status == 403 and body["code"] == "not_circle_owner"
    status, body = api.patch(path, {"owner": taster.id}, auth=owner.key)
    assert status == 400 and body["code"] == "unknown_field"
    assert api.get(path, auth=owner.key)[1]["circle"]["name"] == "Flatmates"


def test_deleting_a_circle_revokes_its_tokens_and_unshares_its_rigs(api, owner, taster):
    circle = member_of(api, owner, taster)
    node, secret = factories.make_node(owner, visibility="public")
    factories.heartbeat(api, node, secret)
    node.circles.add(circle["id"])
    jti = circle_token(api, taster, node, circle["id"])
    # An ordinary token: a non-member's (a member of a circle the rig is shared with gets a circle token).
    plain = api.post("/api/tokens", {"node_id": node.pk})[1]["jti"]
    path = f"/api/circles/{circle['id']}"
    status, body = api.delete(path, auth=taster.key)
    assert status == 403 and body["code"] == "not_circle_owner"
    assert api.delete(path, auth=owner.key)[0] == 204
    assert revoked(jti) and not revoked(plain)
    assert Node.objects.filter(pk=node.pk).exists() and not node.circles.exists()
    assert api.get(path, auth=owner.key)[1]["code"] == "circle_not_found"
    assert api.get("/api/circles", auth=taster.key)[1]["circles"] == []


# --- invites -----------------------------------------------------------------------------------------------------


def test_an_invite_is_a_code_a_link_and_a_qr_code_of_the_link(api, owner):
    circle = make_circle(api, owner)
    made = make_invite(api, owner, circle["id"])
    code, url = made["code"], made["url"]
    assert code.startswith("lri_") and len(code) > 40
    assert url == f"http://testserver/join/{code}"
    invite = made["invite"]
    assert invite == {
        "id": invite["id"],
        "circle_id": circle["id"],
        "role": "member",
        "created_at": invite["created_at"],
        "expires_at": invite["expires_at"],
        "max_uses": 1,
        "uses": 0,
        "state": "active",
        "revoked_at": None,
        "limits": None,
    }
    lifetime = CircleInvite.objects.get(pk=invite["id"]).expires_at - timezone.now()
    assert timedelta(days=7) - timedelta(minutes=1) < lifetime <= timedelta(days=7)
    # An SVG document of the link: the same link always gives the same drawing, another link another one.
    svg = ET.fromstring(made["qr_svg"])  # noqa: S314 - the tracker's own drawing, in a test
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert made["qr_svg"] == circle_services.qr_svg(url)
    assert made["qr_svg"] != circle_services.qr_svg(url[:-1] + ("A" if url[-1] != "A" else "B"))
    # Only the hash is kept.
    assert CircleInvite.objects.get(pk=invite["id"]).code_hash != code and code not in made["invite"].values()


def test_the_owner_chooses_uses_role_expiry_and_limits(api, owner):
    circle = make_circle(api, owner)
    made = make_invite(
        api,
        owner,
        circle["id"],
        expires_in_sec=3600,
        max_uses=None,
        role="inviter",
        limits={"requests_per_day": 5, "tokens_per_day": 600},
    )["invite"]
    assert made["max_uses"] is None and made["role"] == "inviter"
    assert made["limits"] == {"requests_per_day": 5, "tokens_per_day": 600}
    lifetime = CircleInvite.objects.get(pk=made["id"]).expires_at - timezone.now()
    assert timedelta(minutes=59) < lifetime <= timedelta(hours=1)
    assert make_invite(api, owner, circle["id"], max_uses=1000)["invite"]["max_uses"] == 1000


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"expires_in_sec": 3599}, "invalid_field", "expires_in_sec"),
        ({"expires_in_sec": 30 * 86400 + 1}, "invalid_field", "expires_in_sec"),
        ({"expires_in_sec": "3600"}, "invalid_field", "expires_in_sec"),
        ({"max_uses": 0}, "invalid_field", "max_uses"),
        ({"max_uses": 1001}, "invalid_field", "max_uses"),
        ({"max_uses": True}, "invalid_field", "max_uses"),
        ({"role": "owner"}, "invalid_field", "role"),
        ({"role": ["member"]}, "invalid_field", "role"),
        ({"limits": {"requests_per_day": 5}}, "invalid_field", "limits.tokens_per_day"),
        ({"code": "lri_mine"}, "unknown_field", "code"),
    ],
)
def test_bad_invite_bodies_are_400(api, owner, body, code, field):
    circle = make_circle(api, owner)
    status, answer = api.post(f"/api/circles/{circle['id']}/invites", body, auth=owner.key)
    assert status == 400 and answer["code"] == code and answer["field"] == field, answer
    assert not CircleInvite.objects.exists()


def test_a_member_cannot_invite_and_an_inviter_invites_on_the_owners_terms(api, owner, taster):
    circle = member_of(api, owner, taster)
    path = f"/api/circles/{circle['id']}/invites"
    status, body = api.post(path, {}, auth=taster.key)
    assert status == 403 and body["code"] == "not_circle_owner"
    assert api.get(path, auth=taster.key)[1]["code"] == "not_circle_owner"

    inviter = factories.make_contributor()
    assert join(api, inviter, make_invite(api, owner, circle["id"], role="inviter")["code"])[0] == 201
    mine = make_invite(api, inviter, circle["id"])["invite"]
    for body in ({"role": "inviter"}, {"limits": {"requests_per_day": 999, "tokens_per_day": 999}}):
        status, answer = api.post(path, body, auth=inviter.key)
        assert status == 403 and answer["code"] == "not_circle_owner", body
    # An inviter sees and revokes the invites they made, not the owner's.
    _, listed = api.get(path, auth=inviter.key)
    assert [i["id"] for i in listed["invites"]] == [mine["id"]]
    owners = CircleInvite.objects.filter(created_by=owner.contributor).first()
    assert api.delete(f"{path}/{owners.pk}", auth=inviter.key)[1]["code"] == "invite_not_found"
    assert api.delete(f"{path}/{mine['id']}", auth=inviter.key)[0] == 204

    # A paused inviter invites no one.
    assert (
        api.patch(f"/api/circles/{circle['id']}/members/{inviter.id}", {"status": "paused"}, auth=owner.key)[0] == 200
    )
    status, answer = api.post(path, {}, auth=inviter.key)
    assert status == 403 and answer["code"] == "membership_paused"


def test_codes_never_appear_in_what_is_read_back(api, owner, taster):
    circle = make_circle(api, owner)
    made = make_invite(api, owner, circle["id"], max_uses=5)
    code = made["code"]
    code_hash = CircleInvite.objects.get(pk=made["invite"]["id"]).code_hash
    assert join(api, taster, code)[0] == 201
    reads = [
        api.get(f"/api/circles/{circle['id']}/invites", auth=owner.key),
        api.get(f"/api/circles/{circle['id']}", auth=owner.key),
        api.get(f"/api/circles/{circle['id']}/members", auth=owner.key),
        api.get("/api/circles", auth=taster.key),
        api.get(f"/api/circles/invites/{code}"),
    ]
    for status, body in reads:
        text = json.dumps(body)
        assert status == 200 and code not in text and code[4:] not in text and code_hash not in text
    _, listed = reads[0]
    assert listed["invites"][0]["uses"] == 1 and listed["invites"][0]["state"] == "active"


def test_revoking_an_invite_is_idempotent_and_kills_the_link(api, owner, taster):
    circle = make_circle(api, owner)
    made = make_invite(api, owner, circle["id"])
    path = f"/api/circles/{circle['id']}/invites/{made['invite']['id']}"
    assert api.delete(path, auth=owner.key)[0] == 204
    first = CircleInvite.objects.get(pk=made["invite"]["id"]).revoked_at
    assert api.delete(path, auth=owner.key)[0] == 204
    assert CircleInvite.objects.get(pk=made["invite"]["id"]).revoked_at == first
    _, listed = api.get(f"/api/circles/{circle['id']}/invites", auth=owner.key)
    assert listed["invites"][0]["state"] == "revoked" and listed["invites"][0]["revoked_at"]
    assert join(api, taster, made["code"])[1]["code"] == "invite_gone"
    status, body = api.delete(f"/api/circles/{circle['id']}/invites/inv_nope", auth=owner.key)
    assert status == 404 and body["code"] == "invite_not_found"


def test_invite_creation_is_rate_limited_per_contributor(api, owner, settings):
    settings.RATE_CIRCLE_INVITE = "2/h"
    circle = make_circle(api, owner)
    other = factories.make_contributor()
    theirs = make_circle(api, other)
    path = f"/api/circles/{circle['id']}/invites"
    assert api.post(path, {}, auth=owner.key, REMOTE_ADDR="198.51.100.1")[0] == 201
    assert api.post(path, {}, auth=owner.key, REMOTE_ADDR="198.51.100.2")[0] == 201
    # A third from yet another address: the limit follows the key.
    status, body = api.post(path, {}, auth=owner.key, REMOTE_ADDR="198.51.100.3")
    assert status == 429 and body["code"] == "rate_limited"
    retry = int(api.last["Retry-After"])
    assert 1 <= retry <= 3600 and body["retry_after_sec"] == retry and body["resets_at"]
    assert "this key" in body["error"]
    assert CircleInvite.objects.filter(circle_id=circle["id"]).count() == 2
    # Another contributor, from the same address, is not held back.
    assert api.post(f"/api/circles/{theirs['id']}/invites", {}, auth=other.key, REMOTE_ADDR="198.51.100.3")[0] == 201


# --- the preview and joining -------------------------------------------------------------------------------------


def test_anyone_with_the_link_sees_what_it_opens(api, owner):
    circle = make_circle(api, owner, "Roommates")
    made = make_invite(api, owner, circle["id"], max_uses=3, role="inviter")
    status, body = api.get(f"/api/circles/invites/{made['code']}")
    assert status == 200
    assert body == {
        "schema_version": 1,
        "invite": {
            "circle": {"id": circle["id"], "name": "Roommates", "owner": {"id": owner.id, "handle": "owner"}},
            "role": "inviter",
            "expires_at": made["invite"]["expires_at"],
            "uses_left": 3,
        },
    }
    unlimited = make_invite(api, owner, circle["id"], max_uses=None)
    assert api.get(f"/api/circles/invites/{unlimited['code']}")[1]["invite"]["uses_left"] is None


@pytest.mark.parametrize(
    "code", ["lri_" + "A" * 43, "lri_", "not-a-code", "lrk_" + "A" * 43, "lri_" + "A" * 500, "lri_%00"]
)
def test_a_forged_code_is_404_invite_not_found(api, owner, taster, code):
    make_invite(api, owner, make_circle(api, owner)["id"])
    for status, body in (api.get(f"/api/circles/invites/{code}"), join(api, taster, code)):
        assert status == 404 and body["code"] == "invite_not_found"
    assert not CircleMember.objects.filter(contributor=taster.contributor).exists()


def _expired(invite_id):
    CircleInvite.objects.filter(pk=invite_id).update(expires_at=timezone.now() - timedelta(seconds=1))


def _used_up(invite_id):
    CircleInvite.objects.filter(pk=invite_id).update(uses=1)


def _revoked(invite_id):
    CircleInvite.objects.filter(pk=invite_id).update(revoked_at=timezone.now())


def test_expired_used_up_and_revoked_codes_are_all_410_with_one_message(api, owner, taster):
    circle = make_circle(api, owner)
    answers = []
    for kill in (_expired, _used_up, _revoked):
        made = make_invite(api, owner, circle["id"])
        kill(made["invite"]["id"])
        preview = api.get(f"/api/circles/invites/{made['code']}")
        joined = join(api, taster, made["code"])
        answers += [preview, joined]
        assert CircleInvite.objects.get(pk=made["invite"]["id"]).uses == (1 if kill is _used_up else 0)
    assert all(a == (410, {"schema_version": 1, "error": GONE, "code": "invite_gone"}) for a in answers), answers
    assert not CircleMember.objects.filter(contributor=taster.contributor).exists()
    _, listed = api.get(f"/api/circles/{circle['id']}/invites", auth=owner.key)
    assert sorted(i["state"] for i in listed["invites"]) == ["expired", "revoked", "used_up"]

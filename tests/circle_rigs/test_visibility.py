"""Circle rigs on the tracker (issue 15): who sees one (its owner and its circles' members; 403 `not_in_circle` to
another contributor, 404 to anyone without a key, the lookup failing closed), registering and changing one
(`circles`, `circle_only_hours`, 409 `publish_required` and the publish act), PublicNode's `circles`, the heartbeat
answer, and a circle rig's absence from every public surface, one test each."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.api_errors import ApiError
from moderation import services as moderation
from nodes import catalog, queue_feed
from nodes.access import get_visible_node
from nodes.models import CircleMember, Node
from showcase.models import Replay
from tests import factories
from tests.circle_rigs.cast import circle_rig, join, make_circle
from tests.showcase.conftest import replay_file

pytestmark = pytest.mark.django_db


# --- the lookup fails closed ------------------------------------------------------------------------------


def test_without_a_viewer_a_circle_rig_is_an_unknown_id(rig):
    assert Node.objects.visible_by_id(rig.id) is None
    assert list(Node.objects.visible_by_ids([rig.id])) == []
    with pytest.raises(ApiError) as caught:
        get_visible_node(rig.id)
    assert (caught.value.status_code, caught.value.code) == (404, "node_not_found")
    assert caught.value.message == f"No node {rig.id!r}."  # word for word what an unknown id gets


def test_its_owner_and_members_active_or_paused_see_it_and_another_contributor_is_told_why_not(
    rig, owner, friend, taster, circle
):
    assert get_visible_node(rig.id, owner.contributor) == rig
    assert get_visible_node(rig.id, friend.contributor) == rig
    CircleMember.objects.filter(contributor=friend.contributor).update(status=CircleMember.Status.PAUSED)
    assert get_visible_node(rig.id, friend.contributor) == rig
    with pytest.raises(ApiError) as caught:
        get_visible_node(rig.id, taster.contributor)
    assert (caught.value.status_code, caught.value.code) == (403, "not_in_circle")
    # An unknown id stays a 404 for a contributor too.
    with pytest.raises(ApiError) as caught:
        get_visible_node("no-such-rig", taster.contributor)
    assert caught.value.code == "node_not_found"


def test_visible_to_keeps_public_and_unlisted_rigs_for_everyone(api, owner, taster, rig):
    public, _ = factories.make_node(owner)
    unlisted, _ = factories.make_node(owner, visibility="unlisted")
    assert set(Node.objects.visible_to(taster.contributor)) == {public, unlisted}
    assert set(Node.objects.visible_to(None)) == {public, unlisted}
    assert set(Node.objects.visible_to(owner.contributor)) == {public, unlisted, rig}


def test_a_member_of_another_circle_of_the_same_owner_does_not_see_it(api, owner, taster, rig):
    other = make_circle(owner, name="colleagues")
    join(other, taster)
    assert Node.objects.visible_by_id(rig.id, taster.contributor) is None


def test_a_taken_down_or_banned_circle_rig_is_hidden_from_its_members_too(api, rig, friend):
    Node.objects.filter(pk=rig.pk).update(banned_until=timezone.now() + timedelta(days=1))
    assert api.get(f"/api/nodes/{rig.id}", auth=friend.key)[0] == 404
    Node.objects.filter(pk=rig.pk).update(banned_until=None, taken_down_at=timezone.now())
    assert api.get(f"/api/nodes/{rig.id}", auth=friend.key)[0] == 404


# --- GET /api/nodes/<id> and PublicNode.circles -----------------------------------------------------------


def test_the_detail_is_404_anonymous_403_to_a_stranger_and_200_to_members_with_their_circles(
    api, rig, owner, friend, taster, circle
):
    status, body = api.get(f"/api/nodes/{rig.id}")
    assert (status, body["code"]) == (404, "node_not_found")
    assert body["error"] == api.get("/api/nodes/no-such-rig")[1]["error"].replace("no-such-rig", rig.id)
    status, body = api.get(f"/api/nodes/{rig.id}", auth=taster.key)
    assert (status, body["code"]) == (403, "not_in_circle")
    status, body = api.get(f"/api/nodes/{rig.id}", auth=friend.key)
    assert status == 200 and body["node"]["visibility"] == "circle"
    assert body["node"]["circles"] == [{"id": circle.id, "name": "flatmates"}]


def test_a_member_sees_only_their_own_circles_and_the_owner_all(api, owner, friend, circle):
    other = make_circle(owner, name="band")
    node, _ = circle_rig(api, owner, [circle, other])
    _, body = api.get(f"/api/nodes/{node.id}", auth=friend.key)
    assert body["node"]["circles"] == [{"id": circle.id, "name": "flatmates"}]
    _, body = api.get(f"/api/nodes/{node.id}", auth=owner.key)
    assert body["node"]["circles"] == [{"id": other.id, "name": "band"}, {"id": circle.id, "name": "flatmates"}]


def test_a_public_shared_rig_says_its_circles_to_members_only(api, owner, friend, taster, circle):
    node, _ = circle_rig(api, owner, [circle], visibility="public")
    assert api.get(f"/api/nodes/{node.id}")[1]["node"]["circles"] == []
    assert api.get(f"/api/nodes/{node.id}", auth=taster.key)[1]["node"]["circles"] == []
    assert api.get(f"/api/nodes/{node.id}", auth=friend.key)[1]["node"]["circles"] == [
        {"id": circle.id, "name": "flatmates"}
    ]
    listed = {n["id"]: n for n in api.get("/api/nodes", auth=friend.key)[1]["nodes"]}
    assert listed[node.id]["circles"] == []  # a list never says whom a rig is shared with


def test_the_owners_own_list_has_circle_rigs_and_all_their_circles_in_constant_queries(api, owner, circle):
    circle_rig(api, owner, [circle])
    public, _ = factories.make_node(owner)

    def count() -> tuple[int, dict]:
        with CaptureQueriesContext(connection) as ctx:
            status, body = api.get("/api/contributors/me", auth=owner.key)
        assert status == 200
        return len(ctx.captured_queries), body

    few, body = count()
    by_id = {n["id"]: n for n in body["nodes"]}
    assert len(by_id) == 2 and by_id[public.id]["circles"] == []
    shared = next(n for n in body["nodes"] if n["visibility"] == "circle")
    assert shared["circles"] == [{"id": circle.id, "name": "flatmates"}]
    for _ in range(5):
        circle_rig(api, owner, [circle])
    assert count()[0] == few


def test_the_node_list_costs_the_same_queries_with_circle_rigs_around(api, owner, circle):
    circle_rig(api, owner, [], visibility="public")

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            status, body = api.get("/api/nodes", auth=owner.key)
        assert status == 200 and body["nodes"]
        return len(ctx.captured_queries)

    before = count()
    for _ in range(3):
        circle_rig(api, owner, [circle], visibility="public")
    assert count() == before


# --- registering and changing: circles, hours, publish ----------------------------------------------------


def test_a_rig_may_be_shared_only_with_circles_its_owner_is_an_active_member_of(api, owner, taster, friend, circle):
    theirs = make_circle(friend, name="friend's own")
    for circles in ([theirs.id], ["c_unknown"], [circle.id, theirs.id]):
        status, body = api.post(
            "/api/nodes", factories.node_fields(visibility="circle", circles=circles), auth=owner.key
        )
        assert (status, body["code"], body["field"]) == (403, "not_in_circle", "circles"), circles
    assert not Node.objects.exists()
    # A circle the owner joined (not owns) is fine: a member may share a rig with it.
    status, body = api.post("/api/nodes", factories.node_fields(circles=[theirs.id]), auth=taster.key)
    assert body["code"] == "not_in_circle"
    join(theirs, owner)
    status, body = api.post("/api/nodes", factories.node_fields(circles=[theirs.id, theirs.id]), auth=owner.key)
    assert status == 201, body
    assert list(Node.objects.get(pk=body["node"]["id"]).circles.values_list("id", flat=True)) == [theirs.id]
    # Paused in it: no more sharing with it.
    CircleMember.objects.filter(circle=theirs, contributor=owner.contributor).update(status="paused")
    node_id = body["node"]["id"]
    status, body = api.patch(f"/api/nodes/{node_id}", {"circles": [theirs.id]}, auth=owner.key)
    assert (status, body["code"]) == (403, "not_in_circle")


def test_visibility_circle_with_no_circles_is_allowed(api, owner, taster):
    node, _ = circle_rig(api, owner, [])
    assert node.visibility == "circle" and not node.circles.exists()
    assert api.get(f"/api/nodes/{node.id}", auth=owner.key)[0] == 200
    assert api.get(f"/api/nodes/{node.id}", auth=taster.key)[0] == 403


@pytest.mark.parametrize(
    "hours",
    [[24], [-1], [1, 1], "9", [9.0], [True], [None], {"9": 1}],
)
def test_circle_only_hours_are_distinct_whole_hours_0_to_23(api, owner, hours):
    status, body = api.post("/api/nodes", factories.node_fields(circle_only_hours=hours), auth=owner.key)
    assert (status, body["code"], body["field"]) == (400, "invalid_field", "circle_only_hours"), hours


def test_circle_only_hours_are_stored_sorted(api, owner):
    status, body = api.post("/api/nodes", factories.node_fields(circle_only_hours=[23, 0, 7]), auth=owner.key)
    assert status == 201, body
    assert Node.objects.get(pk=body["node"]["id"]).circle_only_hours == [0, 7, 23]
    # Tasters see them (when to expect circle_only_now), on the rig and in lists; never with whom it is shared.
    assert body["node"]["circle_only_hours"] == [0, 7, 23] and body["node"]["circles"] == []
    status, page = api.get(f"/api/nodes/{body['node']['id']}")
    assert status == 200 and page["node"]["circle_only_hours"] == [0, 7, 23]


def test_an_unknown_visibility_is_refused(api, owner):
    status, body = api.post("/api/nodes", factories.node_fields(visibility="friends"), auth=owner.key)
    assert (status, body["code"], body["field"]) == (400, "invalid_field", "visibility")


@pytest.mark.parametrize("to", ["public", "unlisted"])
def test_a_patch_cannot_make_a_circle_rig_public_or_unlisted(api, rig, owner, to):
    status, body = api.patch(f"/api/nodes/{rig.id}", {"visibility": to, "display_name": "x"}, auth=owner.key)
    assert (status, body["code"], body["field"]) == (409, "publish_required", "visibility")
    assert f"POST /api/nodes/{rig.id}/publish" in body["error"]
    rig.refresh_from_db()
    assert rig.visibility == "circle" and rig.display_name != "x"  # nothing changed
    # Staying a circle rig, or other fields alone, is an ordinary edit.
    assert api.patch(f"/api/nodes/{rig.id}", {"visibility": "circle", "display_name": "y"}, auth=owner.key)[0] == 200


def test_publish_makes_it_public_and_keeps_its_circles(api, rig, owner, circle):
    body = {"schema_version": 1, "visibility": "public"}
    status, body = api.post(f"/api/nodes/{rig.id}/publish", body, auth=owner.key)
    assert status == 200, body
    assert body["node"]["visibility"] == "public"
    assert body["node"]["circles"] == [{"id": circle.id, "name": "flatmates"}]
    assert rig.id in {n["id"] for n in api.get("/api/nodes")[1]["nodes"]}
    assert api.get(f"/api/nodes/{rig.id}")[0] == 200


def test_publish_is_for_the_owner_with_a_known_visibility(api, rig, owner, friend, taster):
    path = f"/api/nodes/{rig.id}/publish"
    assert api.post(path, {"visibility": "public"})[0] == 401
    assert api.post(path, {"visibility": "public"}, auth=friend.key)[1]["code"] == "not_owner"
    assert api.post(path, {"visibility": "public"}, auth=taster.key)[1]["code"] == "not_in_circle"
    status, body = api.post(path, {"visibility": "circle"}, auth=owner.key)
    assert (status, body["code"], body["field"]) == (400, "invalid_field", "visibility")
    status, body = api.post(path, {"visibility": "public", "circles": []}, auth=owner.key)
    assert (status, body["code"]) == (400, "unknown_field")
    assert api.post(path, {}, auth=owner.key)[1]["field"] == "visibility"
    assert api.post("/api/nodes/no-such-rig/publish", {"visibility": "public"}, auth=owner.key)[0] == 404
    rig.refresh_from_db()
    assert rig.visibility == "circle"


def test_a_public_rig_becomes_a_circle_rig_with_a_patch_and_leaves_the_lists(api, owner, circle):
    node, _ = circle_rig(api, owner, [], visibility="public")
    assert node.id in {n["id"] for n in api.get("/api/nodes")[1]["nodes"]}
    status, body = api.patch(f"/api/nodes/{node.id}", {"visibility": "circle", "circles": [circle.id]}, auth=owner.key)
    assert status == 200, body
    assert node.id not in {n["id"] for n in api.get("/api/nodes")[1]["nodes"]}
    assert api.get(f"/api/nodes/{node.id}")[0] == 404


# --- the agent is told: heartbeat answer and push ---------------------------------------------------------


def test_the_heartbeat_answer_carries_visibility_circles_and_hours(api, owner, circle):
    other = make_circle(owner, name="band")
    node, secret = circle_rig(api, owner, [circle, other], visibility="public", circle_only_hours=[22, 3])
    answer = factories.heartbeat(api, node, secret)
    assert answer["visibility"] == "public"
    assert answer["circles"] == sorted([circle.id, other.id]) and answer["circle_only_hours"] == [3, 22]
    plain, plain_secret = factories.make_node(owner)
    answer = factories.heartbeat(api, plain, plain_secret)
    assert (answer["visibility"], answer["circles"], answer["circle_only_hours"]) == ("public", [], [])


# The push down the agent link on a change: tests/circle_rigs/test_links.py, over the real websocket.


# --- absent from every public surface, one test each ------------------------------------------------------


@pytest.fixture
def public_twin(api, owner):
    """A listed public rig of the same GPU, model and quantization as `rig`."""
    node, secret = factories.make_node(owner, gpu="Friends-only GPU", model_name="Hidden-Model-7B")
    factories.heartbeat(api, node, secret)
    return factories.seen_alive(node)


def test_absent_from_the_node_list_and_its_search(api, rig, public_twin, friend):
    for query in ("", "?model=hidden", "?gpu=friends-only", "?tag=home", "?order=recent"):
        ids = {n["id"] for n in api.get("/api/nodes" + query, auth=friend.key)[1]["nodes"]}
        assert ids == {public_twin.id}, query


def test_absent_from_the_showcase(api, owner, circle):
    # Both Apple silicon; the circle rig, older and as rare, would win every category it could.
    hidden, _ = circle_rig(api, owner, [circle], gpu="Apple M1", context_length=1_000_000)
    public, _ = circle_rig(api, owner, [], visibility="public", gpu="Apple M2")
    body = api.get("/api/showcase")[1]
    assert "apple_silicon" in {c["id"] for c in body["categories"]}
    assert {c["node_id"] for c in body["categories"]} == {public.id}
    hidden.refresh_from_db()
    assert hidden.showcase == [] and hidden.showcase_ids == ""


def test_absent_from_contributions(api, rig, public_twin):
    Node.objects.filter(pk=rig.pk).update(contribution_total=99.0)
    ids = {s["node_id"] for s in api.get("/api/contributions")[1]["scores"]}
    assert ids == {public_twin.id}


def test_not_counted_in_the_rarity_of_a_public_rig_of_the_same_combination(api, rig, public_twin):
    public_twin.refresh_from_db()
    assert public_twin.rarity_score == pytest.approx(1.0 + 0.0)  # alone among listed rigs: 1 / 1
    rig.refresh_from_db()
    assert rig.rarity_score == pytest.approx(0.5)  # its own counts itself as one more member, like an unlisted one


def test_absent_from_model_pages(api, client, owner, circle):
    circle_rig(api, owner, [circle], model_name="Only-In-Circle-3B")
    assert client.get("/models/only-in-circle-3b/").status_code == 404
    public, _ = circle_rig(api, owner, [], visibility="public", model_name="Shared-Model-1B")
    hidden, _ = circle_rig(api, owner, [circle], model_name="Shared-Model-1B", gpu="Secret GPU")
    page = client.get("/models/shared-model-1b/")
    assert page.status_code == 200
    html = page.content.decode()
    assert public.id in html and hidden.id not in html and "Secret GPU" not in html


def test_absent_from_the_website_lists_and_its_rig_page_is_the_ordinary_404(api, client, rig, public_twin):
    for path in ("/", "/queue/", f"/compare/?ids={rig.id},{public_twin.id}"):
        html = client.get(path).content.decode()
        assert f"/nodes/{public_twin.id}/" in html, path
        assert f"/nodes/{rig.id}/" not in html and f'"{rig.id}"' not in html and "Friends-only" in html, path
    assert client.get(f"/nodes/{rig.id}/").status_code == 404
    assert client.get(f"/nodes/{rig.id}/").content == client.get("/nodes/no-such-rig/").content


def test_absent_from_the_gateway_catalog(api, rig, public_twin, relay_a):
    status, body = api.get("/api/relays/relay-a/catalog", auth=relay_a)
    assert status == 200
    assert {r["node_id"] for r in body["rigs"]} == {public_twin.id}
    assert {r["node_id"] for r in catalog.routable_rigs(timezone.now())} == {public_twin.id}


def test_absent_from_the_public_queue_snapshots_and_never_broadcast(rig, public_twin, monkeypatch):
    assert [node_id for node_id, _ in queue_feed.snapshots(queue_feed.ALL_GROUP)] == [public_twin.id]
    assert queue_feed.snapshots(queue_feed.node_group(rig.id)) == []
    sent = []

    class Layer:
        async def group_send(self, group, payload):
            sent.append(group)

    monkeypatch.setattr(queue_feed, "get_channel_layer", lambda: Layer())
    queue_feed.broadcast(Node.objects.get(pk=rig.pk))
    assert sent == []
    queue_feed.broadcast(Node.objects.get(pk=public_twin.pk))
    assert sent == [queue_feed.node_group(public_twin.id), queue_feed.ALL_GROUP]


def test_metrics_follow_the_detail_rule(api, rig, friend, taster):
    assert api.get(f"/api/nodes/{rig.id}/metrics")[1]["code"] == "node_not_found"
    assert api.get(f"/api/nodes/{rig.id}/metrics", auth=taster.key)[1]["code"] == "not_in_circle"
    status, body = api.get(f"/api/nodes/{rig.id}/metrics", auth=friend.key)
    assert status == 200 and body["node_id"] == rig.id


def test_the_fingerprint_check_does_not_know_a_circle_rig(api, rig):
    status, body = api.post("/api/fingerprint/verify", {"node_id": rig.id})
    assert (status, body["code"]) == (404, "node_not_found")


def test_a_circle_rigs_replay_is_never_published(api, rig, friend):
    status, issued = api.post("/api/tokens", {"node_id": rig.id}, auth=friend.key)
    assert status == 201, issued
    status, body = api.post("/api/replays", replay_file(rig), auth=issued["upload_key"])
    assert (status, body["code"]) == (403, "circle_rig_not_public")
    assert not Replay.objects.exists()


def test_replays_published_while_public_leave_with_the_rig_and_come_back_with_it(api, owner, circle):
    node, _ = circle_rig(api, owner, [circle], visibility="public")
    _, issued = api.post("/api/tokens", {"node_id": node.id})
    status, published = api.post("/api/replays", replay_file(node), auth=issued["upload_key"])
    assert status == 201, published
    assert api.patch(f"/api/nodes/{node.id}", {"visibility": "circle"}, auth=owner.key)[0] == 200
    assert api.get("/api/replays")[1]["count"] == 0
    assert api.get(f"/api/replays/{published['id']}")[0] == 404
    assert api.get(f"/api/replays?node={node.id}")[0] == 404
    assert api.post(f"/api/nodes/{node.id}/publish", {"visibility": "public"}, auth=owner.key)[0] == 200
    assert api.get(f"/api/replays/{published['id']}")[0] == 200


def test_moderation_still_sees_and_acts_on_a_circle_rig(api, rig, friend):
    mod = moderation.Moderator(None, "circle-test")
    moderation.take_down(node=rig, moderator=mod, reason="reported by a member")
    assert api.get(f"/api/nodes/{rig.id}", auth=friend.key)[0] == 404

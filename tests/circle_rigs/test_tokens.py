"""Circle tokens (issue 15): who gets one for a rig shared with circles, the `circle` claim and row, the member's
daily limits instead of the tier's quota (clamped budgets, 429 `circle_limit_reached` with the reset time), paused
members, circle-only hours (with a fixed `now`), bans and takedowns inside a circle, and the credit circle usage
earns (a quarter of a public tasting's, no discovery)."""

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from django.utils import timezone

from core.api_errors import ApiError
from moderation import services as moderation
from nodes.models import CircleMember, Node
from tests.circle_rigs.cast import circle_rig, join, make_circle
from tests.tracker.test_tokens import verify_like_an_agent
from tracker import circle_tokens, circle_usage, scores, tasting
from tracker.models import QuotaBucket, TastingToken
from tracker.scoring import refresh_taster_credit

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "circle-token-test")


def token(api, node, person=None, *, address="127.0.0.1", **body):
    return api.post(
        "/api/tokens", {"node_id": node.id, **body}, auth=person.key if person else None, REMOTE_ADDR=address
    )


# --- who gets what --------------------------------------------------------------------------------------


def test_a_member_gets_a_circle_token_with_the_claim_the_row_and_no_tier_quota(api, rig, friend, circle):
    status, body = token(api, rig, friend)
    assert status == 201, body
    claims = verify_like_an_agent(api, body["token"], rig.id)
    assert claims["circle"] == circle.id and claims["sub"] == friend.id and claims["tier"] == "limited"
    row = TastingToken.objects.get(jti=body["jti"])
    assert row.circle_id == circle.id and not row.is_owner_token
    assert body["quota"] is None and body["limits"]["tokens_per_day"] is None
    assert body["circle"] == {
        "id": circle.id,
        "name": "flatmates",
        "limits": {"requests_per_day": 200, "tokens_per_day": 200_000},
        # This token's three requests and its output budget (3 × 256) reserved.
        "usage_today": {"requests": 3, "tokens": 768},
        "resets_at": body["circle"]["resets_at"],
    }
    assert body["circle"]["resets_at"].endswith("T00:00:00.000Z")
    assert not QuotaBucket.objects.exists()  # the tier's daily quota is untouched


def test_anonymous_gets_404_a_stranger_403_and_the_owner_a_circle_token(api, rig, owner, taster, circle):
    status, body = token(api, rig)
    assert (status, body["code"]) == (404, "node_not_found")
    status, body = token(api, rig, taster)
    assert (status, body["code"]) == (403, "not_in_circle")
    status, body = token(api, rig, owner)
    assert status == 201 and jwt.decode(body["token"], options={"verify_signature": False})["circle"] == circle.id
    assert TastingToken.objects.get(jti=body["jti"]).is_owner_token
    assert TastingToken.objects.count() == 1


def test_an_ordinary_token_has_no_circle(api, owner, taster):
    node, _ = circle_rig(api, owner, [], visibility="public")
    status, body = token(api, node, taster)
    assert status == 201 and body["circle"] is None and body["quota"] == {"used": 1, "limit": 5}
    assert "circle" not in jwt.decode(body["token"], options={"verify_signature": False})
    assert TastingToken.objects.get(jti=body["jti"]).circle_id is None


def test_circle_id_chooses_the_circle_else_the_first_joined(api, owner, friend, circle):
    band = make_circle(owner, name="band")
    join(band, friend)
    node, _ = circle_rig(api, owner, [band, circle])
    assert token(api, node, friend)[1]["circle"]["id"] == circle.id  # joined first
    assert token(api, node, friend, circle_id=band.id)[1]["circle"]["id"] == band.id
    for wrong in ("c_unknown", make_circle(friend, name="theirs").id):
        status, body = token(api, node, friend, circle_id=wrong)
        assert (status, body["code"], body["field"]) == (403, "not_in_circle", "circle_id"), wrong


def test_circle_id_on_a_public_rig_needs_a_member(api, owner, taster, circle):
    node, _ = circle_rig(api, owner, [circle], visibility="public")
    assert token(api, node, circle_id=circle.id)[1]["code"] == "not_in_circle"
    assert token(api, node, taster, circle_id=circle.id)[1]["code"] == "not_in_circle"
    status, body = token(api, node, taster)
    assert status == 201 and body["circle"] is None  # without it, an ordinary token as for anyone


def test_a_member_tasting_a_public_rig_shared_with_their_circle_gets_a_circle_token(api, owner, friend, circle):
    node, _ = circle_rig(api, owner, [circle], visibility="public")
    status, body = token(api, node, friend)
    assert status == 201 and body["circle"]["id"] == circle.id


def test_the_relays_token_endpoint_gives_circle_tokens_too(api, rig, friend, circle, relay_a):
    body = {"node_id": rig.id, "client_ip": "198.51.100.7", "contributor_key": friend.key, "circle_id": circle.id}
    status, answer = api.post("/api/relays/relay-a/tokens", body, auth=relay_a)
    assert status == 201, answer
    assert answer["circle"]["id"] == circle.id
    del body["contributor_key"]
    status, answer = api.post("/api/relays/relay-a/tokens", body, auth=relay_a)
    assert (status, answer["code"]) == (404, "node_not_found")


# --- the member's day -------------------------------------------------------------------------------------


def test_max_requests_is_clamped_to_what_is_left_then_429_with_the_reset_time(api, rig, friend, circle):
    CircleMember.objects.filter(contributor=friend.contributor).update(requests_per_day=5)
    first = token(api, rig, friend)[1]
    assert first["limits"]["max_requests"] == 3 and first["circle"]["usage_today"]["requests"] == 3
    second = token(api, rig, friend)[1]
    assert second["limits"]["max_requests"] == 2 and second["circle"]["limits"]["requests_per_day"] == 5
    assert verify_like_an_agent(api, second["token"], rig.id)["max_requests"] == 2
    assert TastingToken.objects.get(jti=second["jti"]).max_requests == 2
    status, body = token(api, rig, friend)
    assert (status, body["code"]) == (429, "circle_limit_reached")
    resets_at = circle_usage.resets_at(timezone.now())
    assert body["resets_at"] == resets_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert body["limits"] == {"requests_per_day": 5, "tokens_per_day": 200_000}
    assert body["usage_today"] == {"requests": 5, "tokens": 768 + 512}  # the two live tokens' output budgets
    retry = int(api.last["Retry-After"])
    assert 0 < retry <= 86400 and abs(retry - (resets_at - timezone.now()).total_seconds()) < 5
    assert body["retry_after_sec"] == retry and body["circle_id"] == circle.id
    assert TastingToken.objects.count() == 2


def test_a_spent_token_frees_only_what_it_did_not_use(api, rig, friend):
    CircleMember.objects.filter(contributor=friend.contributor).update(requests_per_day=3)
    jti = token(api, rig, friend)[1]["jti"]
    assert token(api, rig, friend)[1]["code"] == "circle_limit_reached"
    # Revoked after one request: it counts what it served, 1 of 3.
    TastingToken.objects.filter(jti=jti).update(requests_served=1, revoked_at=timezone.now())
    status, body = token(api, rig, friend)
    assert status == 201 and body["limits"]["max_requests"] == 2


def test_the_output_budget_is_clamped_to_the_tokens_left_then_429(api, rig, friend, circle):
    circle.default_tokens_per_day = 1000
    circle.save()
    first = token(api, rig, friend)[1]
    # Spent (expired, as a token is after its TTL): it counts what it reported, not its reserved budget.
    TastingToken.objects.filter(jti=first["jti"]).update(
        prompt_tokens=400, completion_tokens=500, expires_at=timezone.now()
    )
    status, body = token(api, rig, friend)
    assert status == 201, body
    assert body["limits"]["max_output_tokens_total"] == 100 and body["limits"]["max_output_tokens"] == 100
    claims = verify_like_an_agent(api, body["token"], rig.id)
    assert claims["max_output_tokens_total"] == 100 and claims["max_output_tokens"] == 100
    assert TastingToken.objects.get(jti=body["jti"]).max_output_tokens == 100
    TastingToken.objects.filter(jti=body["jti"]).update(completion_tokens=100)
    status, body = token(api, rig, friend)
    assert (status, body["code"]) == (429, "circle_limit_reached")
    assert body["usage_today"]["tokens"] == 1000 and body["limits"]["tokens_per_day"] == 1000


def test_a_member_limit_overrides_the_circles_and_each_member_has_their_own_day(api, rig, friend, taster, circle):
    join(circle, taster, requests_per_day=3)
    assert token(api, rig, taster)[0] == 201
    assert token(api, rig, taster)[1]["code"] == "circle_limit_reached"
    assert token(api, rig, friend)[0] == 201  # the circle's 200


# --- paused members, bans, takedowns ----------------------------------------------------------------------


def test_a_paused_member_is_refused_on_a_circle_rig_and_tastes_a_public_one_as_anyone(api, owner, friend, circle):
    CircleMember.objects.filter(contributor=friend.contributor).update(status=CircleMember.Status.PAUSED)
    hidden, _ = circle_rig(api, owner, [circle])
    status, body = token(api, hidden, friend)
    assert (status, body["code"], body["circle_id"]) == (403, "membership_paused", circle.id)
    shared, _ = circle_rig(api, owner, [circle], visibility="public")
    status, body = token(api, shared, friend)
    assert status == 201 and body["circle"] is None and body["quota"]["used"] == 1
    status, body = token(api, shared, friend, circle_id=circle.id)
    assert (status, body["code"]) == (403, "membership_paused")


def test_a_paused_member_still_active_in_another_circle_of_the_rig_gets_that_one(api, owner, friend, circle):
    band = make_circle(owner, name="band")
    join(band, friend)
    node, _ = circle_rig(api, owner, [circle, band])
    CircleMember.objects.filter(circle=circle, contributor=friend.contributor).update(status="paused")
    assert token(api, node, friend)[1]["circle"]["id"] == band.id


def test_a_ban_holds_inside_the_circle(api, rig, friend):
    moderation.ban(kind="contributor", value=friend.id, moderator=MOD, reason="abuse")
    status, body = token(api, rig, friend)
    assert (status, body["code"]) == (403, "banned")


def test_a_banned_address_holds_for_a_member(api, rig, friend):
    moderation.ban(kind="ip", value="192.0.2.99", moderator=MOD, reason="abuse")
    status, body = api.post("/api/tokens", {"node_id": rig.id}, auth=friend.key, REMOTE_ADDR="192.0.2.99")
    assert (status, body["code"]) == (403, "banned")


def test_a_taken_down_or_banned_circle_rig_gives_no_tokens_to_members(api, owner, friend, circle):
    down, _ = circle_rig(api, owner, [circle])
    moderation.take_down(node=down, moderator=MOD, reason="illegal content")
    assert token(api, down, friend)[1]["code"] == "node_not_found"
    banned, _ = circle_rig(api, owner, [circle])
    moderation.ban(kind="node", value=banned.id, moderator=MOD, reason="spam")
    assert token(api, banned, friend)[1]["code"] == "node_not_found"
    assert token(api, banned, owner)[1]["code"] == "node_not_found"


# --- circle-only hours ------------------------------------------------------------------------------------

NIGHT = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)


def _alive_at(node: Node, now: datetime) -> None:
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=now - timedelta(seconds=5), consecutive_failures=0)


def _issue(node, person, now, ip="203.0.113.5"):
    return tasting.issue_token(
        node_id=node.id,
        crypto_mode="plain",
        user_public_key=None,
        ttl_sec=None,
        contributor=person.contributor if person else None,
        ip_hash=ip,
        now=now,
    )


def test_during_circle_only_hours_others_get_409_with_when_it_opens_and_members_their_token(
    api, owner, friend, taster, circle
):
    node, _ = circle_rig(api, owner, [circle], visibility="public", circle_only_hours=[22, 23, 0])
    _alive_at(node, NIGHT)
    for person in (None, taster):
        with pytest.raises(ApiError) as caught:
            _issue(node, person, NIGHT)
        error = caught.value
        assert (error.status_code, error.code) == (409, "circle_only_now")
        assert error.extra["available_at"] == "2026-11-25T01:00:00.000Z"  # 0 is kept too: 01:00 the next day
        assert error.headers["Retry-After"] == str(90 * 60) and error.extra["retry_after_sec"] == 90 * 60
    issued = _issue(node, friend, NIGHT)
    assert issued.circle["id"] == circle.id
    # Outside those hours the rig takes anyone.
    noon = NIGHT.replace(hour=12)
    _alive_at(node, noon)
    assert _issue(node, taster, noon).circle is None


def test_circle_only_hours_do_not_apply_to_a_circle_rig(api, owner, circle):
    node, _ = circle_rig(api, owner, [], circle_only_hours=[23])
    _alive_at(node, NIGHT)
    assert _issue(node, owner, NIGHT).circle is None  # the owner of a rig shared with no circle


def test_a_rig_kept_for_its_circles_all_day_never_opens(api, owner, taster, circle):
    node, _ = circle_rig(api, owner, [circle], visibility="unlisted", circle_only_hours=list(range(24)))
    status, body = token(api, node, taster)
    assert (status, body["code"], body["available_at"]) == (409, "circle_only_now", None)
    assert "Retry-After" not in api.last


def test_the_next_open_hour():
    assert circle_tokens.next_open_hour({9, 10}, datetime(2026, 1, 1, 9, 59, tzinfo=UTC)) == datetime(
        2026, 1, 1, 11, tzinfo=UTC
    )
    assert circle_tokens.next_open_hour({23}, NIGHT) == datetime(2026, 11, 25, 0, tzinfo=UTC)
    assert circle_tokens.next_open_hour(set(range(24)), NIGHT) is None


# --- timing uploads of a circle tasting --------------------------------------------------------------------


def test_a_member_uploads_timing_of_a_circle_tasting(api, rig, friend):
    issued = token(api, rig, friend)[1]
    body = {"node_id": rig.id, "tok_per_sec": 30.0, "ttft_ms": 200.0}
    status, answer = api.post("/api/replay/timing", body, auth=issued["upload_key"])
    assert status == 201, answer


# --- credit -----------------------------------------------------------------------------------------------


def _serve(api, node, secret, jti, requests):
    status, body = api.post(
        f"/api/nodes/{node.id}/usage",
        {"report_id": f"r-{jti}", "entries": [{"jti": jti, "requests": requests}]},
        auth=secret,
    )
    assert status == 202 and body["accepted"] == 1, body


def test_a_circle_tokens_usage_earns_a_quarter_of_a_public_tokens_and_no_discovery(api, owner, friend, circle):
    public, public_secret = circle_rig(api, owner, [], visibility="public")
    shared, shared_secret = circle_rig(api, owner, [circle], visibility="public")
    # The same taster, the same day, from their own network: a public token at one rig, a circle token at the other.
    _serve(api, public, public_secret, token(api, public, friend, address="198.51.100.20")[1]["jti"], 2)
    circle_jti = token(api, shared, friend, address="198.51.100.20")[1]["jti"]
    assert TastingToken.objects.get(jti=circle_jti).circle_id == circle.id
    _serve(api, shared, shared_secret, circle_jti, 2)
    public.refresh_from_db()
    shared.refresh_from_db()
    assert public.usage_credit > 0
    assert shared.usage_credit == pytest.approx(scores.CIRCLE_USAGE_WEIGHT * public.usage_credit, abs=1e-4)
    assert scores.CIRCLE_USAGE_WEIGHT == 0.25
    assert shared.discovery_credit == 0 and public.discovery_credit > 0
    assert shared.usage_requests == 2 and shared.distinct_tasters == 1  # the raw evidence counts them

    # Deleting the circle unshares the rig but does not turn what its members used into public credit.
    before = shared.usage_credit
    assert api.delete(f"/api/circles/{circle.id}", auth=owner.key)[0] == 204
    assert TastingToken.objects.get(jti=circle_jti).circle_id is None
    refresh_taster_credit(shared)
    shared.refresh_from_db()
    assert shared.usage_credit == pytest.approx(before) and shared.discovery_credit == 0


def test_a_tasters_counted_requests_are_the_public_ones_first():
    day = datetime(2026, 11, 24, tzinfo=UTC).date()

    def use(requests, circle):
        return scores.TokenUse(subject="c_x", standing=1.0, day=day, requests=requests, circle=circle)

    mixed = scores.taster_credit([use(2, False), use(5, True)])
    assert mixed.usage_credit == pytest.approx(2 + 0.25 * 1)  # three a day: two public, one circle
    assert mixed.discovery_credit == 1.0
    only_circle = scores.taster_credit([use(5, True)])
    assert only_circle.usage_credit == pytest.approx(0.75) and only_circle.discovery_credit == 0
    assert only_circle.tasters == 1 and only_circle.requests == 5
    assert scores.taster_credit([use(5, False)]).usage_credit == pytest.approx(3)

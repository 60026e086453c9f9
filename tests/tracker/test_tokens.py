from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from nodes.models import Node
from tests import factories
from tracker.models import QuotaBucket, TastingToken

pytestmark = pytest.mark.django_db


def public_key_for(api, kid):
    _, body = api.get("/api/tracker-keys")
    for key in body["keys"]:
        if key["kid"] == kid:
            return serialization.load_pem_public_key(key["public_key_pem"].encode())
    raise AssertionError(f"kid {kid} not published")


def verify_like_an_agent(api, token, node_id):
    header = jwt.get_unverified_header(token)
    return jwt.decode(
        token,
        public_key_for(api, header["kid"]),
        algorithms=["EdDSA"],
        audience=node_id,
        issuer="http://testserver",
    )


def test_anonymous_caller_gets_a_limited_token_an_agent_can_verify_offline(api, live_node):
    node, _ = live_node
    status, body = api.post("/api/tokens", {"node_id": node.id, "crypto_mode": "plain"})
    assert status == 201, body
    assert body["token_type"] == "Bearer" and body["tier"] == "limited" and body["crypto_mode"] == "plain"
    # 3 requests of up to 256 output tokens each (max_output_tokens, the per-request cap API.md's agents clamp
    # max_tokens to); the token's whole budget is their product (tracker/tiers.py).
    assert body["limits"] == {
        "max_requests": 3,
        "max_output_tokens": 256,
        "max_output_tokens_total": 768,
        "tokens_per_day": 5,
    }
    assert body["quota"] == {"used": 1, "limit": 5}
    assert body["node"]["id"] == node.id and body["expires_at"].endswith("Z")
    assert "operator can read" in body["caveat"]
    assert body["node_public_key"] is None and body["user_public_key_fingerprint"] is None
    claims = verify_like_an_agent(api, body["token"], node.id)
    assert claims["jti"] == body["jti"] and claims["aud"] == node.id and claims["tier"] == "limited"
    assert claims["sub"].startswith("anon:") and claims["max_requests"] == 3
    assert claims["max_output_tokens"] == 256 and claims["max_output_tokens_total"] == 768
    assert claims["exp"] - claims["iat"] == 900
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "EdDSA" and header["typ"] == "luckrig-tasting+jwt"
    assert TastingToken.objects.filter(jti=body["jti"], node=node).exists()


def test_contributor_tier_comes_from_the_server_side_score(api, live_node, owner, taster):
    node, _ = live_node
    factories.served_others(node)  # a node that served other people lifts its owner past the threshold
    owner.refresh()
    assert owner.contributor.score_tier == "contributor"
    _, body = api.post("/api/tokens", {"node_id": node.id, "contribution_score": 9999}, auth=taster.key)
    assert body["tier"] == "limited" and body["limits"]["max_requests"] == 3
    _, body = api.post("/api/tokens", {"node_id": node.id}, auth=owner.key)
    assert body["tier"] == "contributor"
    # The contributor policy: 30 requests of up to 2,048 output tokens each.
    assert body["limits"] == {
        "max_requests": 30,
        "max_output_tokens": 2048,
        "max_output_tokens_total": 30 * 2048,
        "tokens_per_day": 200,
    }
    assert body["quota"]["limit"] == 200
    claims = verify_like_an_agent(api, body["token"], node.id)
    assert claims["sub"] == owner.id
    assert claims["max_output_tokens"] == 2048 and claims["max_output_tokens_total"] == 61_440


def test_ttl_is_clamped(api, live_node):
    node, _ = live_node
    for asked, expected in ((5, 60), (10**6, 3600), (120, 120)):
        _, body = api.post("/api/tokens", {"node_id": node.id, "ttl_sec": asked}, REMOTE_ADDR=f"192.0.2.{asked % 250}")
        claims = verify_like_an_agent(api, body["token"], node.id)
        assert claims["exp"] - claims["iat"] == expected


def test_unknown_node_is_404(api, db):
    status, body = api.post("/api/tokens", {"node_id": "nowhere"})
    assert status == 404 and body["code"] == "node_not_found"


def test_node_without_a_recent_heartbeat_is_409(api, owner):
    node, secret = factories.make_node(owner)
    status, body = api.post("/api/tokens", {"node_id": node.id})
    assert status == 409 and body["code"] == "node_unavailable"
    factories.heartbeat(api, node, secret)
    assert api.post("/api/tokens", {"node_id": node.id})[0] == 201
    # Three missed intervals later the agent counts as gone.
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(seconds=46))
    status, body = api.post("/api/tokens", {"node_id": node.id})
    assert status == 409 and body["status"] == "unavailable"


def test_a_busy_node_still_issues_tokens(api, owner):
    node, secret = factories.make_node(owner)
    answer = factories.heartbeat(api, node, secret, active=1, waiting=3, max_active=1)
    assert answer["status"] == "busy"
    assert api.post("/api/tokens", {"node_id": node.id})[0] == 201


def test_anonymous_daily_quota_per_ip_survives_in_the_database(api, live_node, settings):
    node, _ = live_node
    for used in range(1, 6):
        status, body = api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR="198.51.100.20")
        assert status == 201 and body["quota"] == {"used": used, "limit": 5}
    status, body = api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR="198.51.100.20")
    assert status == 429 and body["code"] == "quota_exceeded"
    assert body["quota"] == {"used": 5, "limit": 5}
    assert 0 < int(api.last["Retry-After"]) <= 86400
    # The count lives in the database, not in a process: a restart (here: a cleared cache) keeps it.
    from django.core.cache import cache

    cache.clear()
    assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR="198.51.100.20")[0] == 429
    assert QuotaBucket.objects.get(day=timezone.now().date(), key__startswith="ip:").used == 5
    assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR="198.51.100.21")[0] == 201


def test_a_limited_contributor_shares_the_ip_quota(api, live_node, taster):
    node, _ = live_node
    for _ in range(5):
        assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR="198.51.100.30")[0] == 201
    status, body = api.post("/api/tokens", {"node_id": node.id}, auth=taster.key, REMOTE_ADDR="198.51.100.30")
    assert status == 429 and body["code"] == "quota_exceeded"


def test_limits_are_settings(api, live_node, settings):
    node, _ = live_node
    settings.LIMITED_MAX_REQUESTS, settings.LIMITED_MAX_OUTPUT_TOKENS, settings.LIMITED_TOKENS_PER_DAY = (
        7,
        99,
        1,
    )
    _, body = api.post("/api/tokens", {"node_id": node.id})
    assert body["limits"]["max_requests"] == 7 and body["limits"]["max_output_tokens"] == 99
    assert body["limits"]["max_output_tokens_total"] == 7 * 99 and body["quota"]["limit"] == 1
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert (claims["max_requests"], claims["max_output_tokens"], claims["max_output_tokens_total"]) == (7, 99, 693)
    assert api.post("/api/tokens", {"node_id": node.id})[1]["code"] == "quota_exceeded"


def test_token_requests_are_rate_limited_per_ip(api, live_node, settings):
    node, _ = live_node
    settings.RATE_TOKEN_CREATE = "2/m"
    settings.LIMITED_TOKENS_PER_DAY = 100
    assert api.post("/api/tokens", {"node_id": node.id})[0] == 201
    assert api.post("/api/tokens", {"node_id": node.id})[0] == 201
    status, body = api.post("/api/tokens", {"node_id": node.id})
    assert status == 429 and body["code"] == "ip_rate_limited" and 1 <= int(api.last["Retry-After"]) <= 60


class TestPublicKeyMode:
    def test_needs_the_node_key(self, api, live_node):
        node, _ = live_node
        status, body = api.post(
            "/api/tokens",
            {"node_id": node.id, "crypto_mode": "public-key", "user_public_key": factories.x25519_public_pem()},
        )
        assert status == 400 and body["code"] == "public_key_mode_unavailable"

    def test_copies_the_user_key_into_the_signed_token(self, api, owner):
        node, secret = factories.make_node(owner, node_public_key=factories.x25519_public_pem())
        factories.heartbeat(api, node, secret)
        user_pem = factories.x25519_public_pem()
        status, body = api.post(
            "/api/tokens", {"node_id": node.id, "crypto_mode": "public-key", "user_public_key": user_pem}
        )
        assert status == 201, body
        assert body["crypto_mode"] == "public-key" and "operator can read" in body["caveat"]
        assert body["node_public_key_fingerprint"] == node.node_public_key_fingerprint
        claims = verify_like_an_agent(api, body["token"], node.id)
        assert claims["crypto_mode"] == "public-key"
        assert claims["user_public_key"].strip() == user_pem.strip()
        assert claims["user_public_key_fingerprint"] == body["user_public_key_fingerprint"]

    @pytest.mark.parametrize(
        "bad", [None, "", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]
    )
    def test_refuses_a_bad_user_key(self, api, owner, bad):
        node, secret = factories.make_node(owner, node_public_key=factories.x25519_public_pem())
        factories.heartbeat(api, node, secret)
        status, body = api.post(
            "/api/tokens", {"node_id": node.id, "crypto_mode": "public-key", "user_public_key": bad}
        )
        assert status == 400 and body["code"] == "invalid_public_key"
        assert not TastingToken.objects.exists()  # nothing issued, no quota used
        assert not QuotaBucket.objects.filter(used__gt=0).exists()


def test_tracker_keys_publish_the_signing_key(api, db):
    status, body = api.get("/api/tracker-keys")
    assert status == 200 and len(body["keys"]) == 1
    key = body["keys"][0]
    assert key["alg"] == "EdDSA" and key["kid"].startswith("lr-") and key["not_after"] is None
    assert key["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")


def test_key_rotation_publishes_next_first_and_retired_until_its_last_token_expires(
    api, live_node, settings, tmp_path, signing_key_file
):
    from tracker.signing import generate_key_file

    node, _ = live_node
    old_kid = api.get("/api/tracker-keys")[1]["keys"][0]["kid"]
    _, old_token = api.post("/api/tokens", {"node_id": node.id, "ttl_sec": 600})
    nxt = tmp_path / "next.pem"
    generate_key_file(nxt)
    # Step 1: the next key is published before it signs anything.
    settings.TRACKER_NEXT_SIGNING_KEY_FILE = str(nxt)
    kids = [k["kid"] for k in api.get("/api/tracker-keys")[1]["keys"]]
    assert kids[0] == old_kid and len(kids) == 2
    new_kid = kids[1]
    # Step 2: it becomes current; the old key stays published until its last token has expired.
    settings.TRACKER_SIGNING_KEY_FILE, settings.TRACKER_NEXT_SIGNING_KEY_FILE = str(nxt), ""
    settings.TRACKER_RETIRED_SIGNING_KEY_FILES = [signing_key_file]
    keys = api.get("/api/tracker-keys")[1]["keys"]
    assert [k["kid"] for k in keys] == [new_kid, old_kid]
    assert keys[1]["not_after"] == old_token["expires_at"]
    _, new_token = api.post("/api/tokens", {"node_id": node.id})
    assert jwt.get_unverified_header(new_token["token"])["kid"] == new_kid
    TastingToken.objects.filter(kid=old_kid).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert [k["kid"] for k in api.get("/api/tracker-keys")[1]["keys"]] == [new_kid]

"""Tokens a relay asks for on a gateway client's behalf (`POST /api/relays/<relay_id>/tokens`, tracker.gateway_api):
the client's address, as the relay saw it, is treated as a direct caller's (rate limit, quota, IPv6 /64, bans), the
contributor key as if the client had sent it, and the token and every refusal are those of POST /api/tokens."""

import jwt
import pytest
from django.core.management import call_command

from moderation import services as moderation
from tests import factories
from tests.tracker.test_tokens import verify_like_an_agent
from tracker.models import QuotaBucket, TastingToken

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "gateway-test")
CLIENT = "203.0.113.5"


@pytest.fixture
def relay_token(api, relay_a):
    """relay_token(body, **overrides) → (status, json) of relay-a asking for a token."""

    def ask(body: dict, *, relay_id: str = "relay-a", auth: str | None = relay_a):
        return api.post(f"/api/relays/{relay_id}/tokens", body, auth=auth)

    return ask


def test_a_relay_gets_the_same_token_as_the_client_would_and_it_verifies_like_any_other(api, live_node, relay_token):
    node, _ = live_node
    status, body = relay_token({"node_id": node.id, "client_ip": CLIENT})
    assert status == 201, body
    _, direct = api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR=CLIENT)
    assert set(body) == set(direct)
    assert body["tier"] == "limited" and body["crypto_mode"] == "plain" and body["token_type"] == "Bearer"
    assert body["node"]["id"] == node.id and "operator can read" in body["caveat"]
    assert body["upload_key"].startswith("lru_")
    claims = verify_like_an_agent(api, body["token"], node.id)
    assert claims["aud"] == node.id and claims["tier"] == "limited" and claims["jti"] == body["jti"]
    # The anonymous subject is the client's address, not the relay's: the same as the client's own token.
    assert claims["sub"] == verify_like_an_agent(api, direct["token"], node.id)["sub"]
    assert claims["sub"].startswith("anon:")
    row = TastingToken.objects.get(jti=body["jti"])
    assert row.node_id == node.id and row.contributor is None and row.crypto_mode == "plain"


def test_a_contributor_key_gives_that_contributors_tier_and_subject(api, live_node, owner, taster, relay_token):
    node, _ = live_node
    factories.served_others(node)
    owner.refresh()
    status, body = relay_token({"node_id": node.id, "client_ip": CLIENT, "contributor_key": owner.key, "ttl_sec": 120})
    assert status == 201, body
    claims = verify_like_an_agent(api, body["token"], node.id)
    assert body["tier"] == claims["tier"] == "contributor" and claims["sub"] == owner.id
    assert claims["exp"] - claims["iat"] == 120
    assert body["limits"]["max_requests"] == 30 and body["quota"] == {"used": 1, "limit": 200}
    _, body = relay_token({"node_id": node.id, "client_ip": CLIENT, "contributor_key": taster.key})
    assert body["tier"] == "limited" and verify_like_an_agent(api, body["token"], node.id)["sub"] == taster.id
    _, body = relay_token({"node_id": node.id, "client_ip": CLIENT, "contributor_key": None})
    assert body["tier"] == "limited" and verify_like_an_agent(api, body["token"], node.id)["sub"].startswith("anon:")


def test_it_counts_in_the_same_daily_quota_as_the_clients_own_tokens(api, live_node, relay_token):
    node, _ = live_node
    for used in range(1, 4):
        assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR=CLIENT)[1]["quota"]["used"] == used
    for used in (4, 5):
        assert relay_token({"node_id": node.id, "client_ip": CLIENT})[1]["quota"] == {"used": used, "limit": 5}
    status, through_relay = relay_token({"node_id": node.id, "client_ip": CLIENT})
    relay_headers = api.last.headers
    assert status == 429 and through_relay["code"] == "quota_exceeded"
    status, direct = api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR=CLIENT)
    assert status == 429
    # The same 429, field for field (the clock may tick a second between the two).
    assert set(through_relay) == set(direct)
    for field in ("code", "error", "quota", "tier", "earn_more"):
        assert through_relay[field] == direct[field], field
    assert abs(int(relay_headers["Retry-After"]) - int(api.last.headers["Retry-After"])) <= 1
    assert through_relay["retry_after_sec"] == int(relay_headers["Retry-After"]) and through_relay["resets_at"]
    assert QuotaBucket.objects.get(key__startswith="ip:").used == 5
    # Another address has its own quota, through the same relay.
    assert relay_token({"node_id": node.id, "client_ip": "203.0.113.6"})[0] == 201


def test_a_contributors_quota_is_shared_with_their_own_tokens(api, live_node, owner, relay_token, settings):
    node, _ = live_node
    factories.served_others(node)
    settings.CONTRIBUTOR_TOKENS_PER_DAY = 2
    assert api.post("/api/tokens", {"node_id": node.id}, auth=owner.key, REMOTE_ADDR="198.51.100.1")[0] == 201
    body = {"node_id": node.id, "client_ip": "198.51.100.2", "contributor_key": owner.key}
    assert relay_token(body)[1]["quota"] == {"used": 2, "limit": 2}
    status, err = relay_token(body)
    assert status == 429 and err["code"] == "quota_exceeded" and err["tier"] == "contributor"
    assert api.post("/api/tokens", {"node_id": node.id}, auth=owner.key)[0] == 429


def test_an_ipv6_client_counts_by_its_64_as_a_direct_caller_does(api, live_node, relay_token, settings):
    node, _ = live_node
    settings.LIMITED_TOKENS_PER_DAY = 3
    assert relay_token({"node_id": node.id, "client_ip": "2001:db8:1:2::1"})[0] == 201
    assert relay_token({"node_id": node.id, "client_ip": "2001:db8:1:2:ffff:ffff:ffff:9"})[0] == 201
    assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR="2001:db8:1:2::77")[0] == 201
    status, err = relay_token({"node_id": node.id, "client_ip": "2001:DB8:1:2::abcd"})
    assert status == 429 and err["code"] == "quota_exceeded"
    assert relay_token({"node_id": node.id, "client_ip": "2001:db8:1:3::1"})[0] == 201  # the next /64


def test_the_per_address_rate_limit_is_the_clients_not_the_relays(api, live_node, relay_token, settings):
    node, _ = live_node
    settings.RATE_TOKEN_CREATE = "2/m"
    settings.LIMITED_TOKENS_PER_DAY = 100
    assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR=CLIENT)[0] == 201
    assert relay_token({"node_id": node.id, "client_ip": CLIENT})[0] == 201
    status, err = relay_token({"node_id": node.id, "client_ip": CLIENT})
    assert status == 429 and err["code"] == "ip_rate_limited"
    assert 1 <= int(api.last.headers["Retry-After"]) <= 60 and err["retry_after_sec"] == int(api.last["Retry-After"])
    assert err["resets_at"] and err["tier"] == "limited" and "contributor tier" in err["earn_more"]
    assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR=CLIENT)[0] == 429
    # The relay itself is not limited: other clients of the same relay still get tokens.
    for n in range(3):
        assert relay_token({"node_id": node.id, "client_ip": f"203.0.113.{10 + n}"})[0] == 201


# --- the relay's credential -------------------------------------------------------------------------------


def test_only_the_relays_own_secret_is_accepted(api, live_node, two_relays, owner):
    node, node_secret = live_node
    body = {"node_id": node.id, "client_ip": CLIENT}
    assert api.post("/api/relays/relay-a/tokens", body)[0] == 401
    for bad in ("garbage", "lrr_" + "x" * 43, node_secret, owner.key):
        status, err = api.post("/api/relays/relay-a/tokens", body, auth=bad)
        assert status == 401 and err["code"] == "invalid_credential" and "field" not in err
    # Another relay's secret, or a path naming a relay that does not exist: as every relay path (docs/api.md).
    status, err = api.post("/api/relays/relay-a/tokens", body, auth=two_relays["relay-b"])
    assert status == 403 and err["code"] == "wrong_relay"
    status, err = api.post("/api/relays/ghost/tokens", body, auth=two_relays["relay-b"])
    assert status == 403 and err["code"] == "wrong_relay"
    # A relay that was removed is unknown: its secret is refused.
    call_command("relay", "remove", "relay-a", stdout=open("/dev/null", "w"))  # noqa: SIM115
    status, err = api.post("/api/relays/relay-a/tokens", body, auth=two_relays["relay-a"])
    assert status == 401 and err["code"] == "invalid_credential"
    assert not TastingToken.objects.exists()


# --- what the relay sends ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, "", "not an ip", "203.0.113", "203.0.113.256", "1.2.3.4.5", 42, ["1.2.3.4"]])
def test_a_bad_client_ip_is_400(live_node, relay_token, bad):
    node, _ = live_node
    status, err = relay_token({"node_id": node.id, "client_ip": bad})
    assert status == 400 and err["code"] == "invalid_field" and err["field"] == "client_ip", err
    status, err = relay_token({"node_id": node.id})
    assert status == 400 and err["field"] == "client_ip"
    assert not QuotaBucket.objects.exists()


@pytest.mark.parametrize("field", ["crypto_mode", "user_public_key", "contribution_score"])
def test_public_key_mode_is_not_offered_here(live_node, relay_token, field):
    node, _ = live_node
    status, err = relay_token({"node_id": node.id, "client_ip": CLIENT, field: "plain"})
    assert status == 400 and err["code"] == "unknown_field" and err["field"] == field


def test_an_unknown_or_malformed_contributor_key_is_401(live_node, relay_token, owner):
    node, node_secret = live_node
    for bad in ("", "garbage", "lrk_" + "x" * 43, node_secret, owner.key + "x"):
        status, err = relay_token({"node_id": node.id, "client_ip": CLIENT, "contributor_key": bad})
        assert status == 401 and err["code"] == "invalid_credential" and err["field"] == "contributor_key", bad
    status, err = relay_token({"node_id": node.id, "client_ip": CLIENT, "contributor_key": 7})
    assert status == 400 and err["field"] == "contributor_key"
    assert not TastingToken.objects.exists() and not QuotaBucket.objects.exists()


# --- refusals: those of POST /api/tokens ------------------------------------------------------------------


def test_an_unknown_or_unavailable_node_is_refused_as_for_the_client(api, owner, relay_token):
    status, err = relay_token({"node_id": "nowhere", "client_ip": CLIENT})
    assert status == 404 and err["code"] == "node_not_found"
    node, _ = factories.make_node(owner)  # registered, never reported in
    status, err = relay_token({"node_id": node.id, "client_ip": CLIENT})
    assert status == 409 and err["code"] == "node_unavailable" and err["status"] == "unknown"
    assert api.post("/api/tokens", {"node_id": node.id})[1]["code"] == "node_unavailable"


def test_a_banned_contributor_is_refused_with_the_ban(live_node, taster, relay_token):
    node, _ = live_node
    moderation.ban(kind="contributor", value=taster.id, moderator=MOD, reason="abusive prompts")
    status, err = relay_token({"node_id": node.id, "client_ip": CLIENT, "contributor_key": taster.key})
    assert status == 403 and err["code"] == "banned" and err["ban"]["kind"] == "contributor"
    assert "abusive prompts" in err["error"]


def test_a_banned_address_is_refused_whatever_key_is_sent(api, live_node, taster, relay_token):
    node, _ = live_node
    moderation.ban(kind="ip", value="2001:db8:9:9::1", moderator=MOD, reason="scraping")
    for client_ip in ("2001:db8:9:9::1", "2001:db8:9:9:abcd::2"):  # the whole /64
        for key in (None, taster.key):
            status, err = relay_token({"node_id": node.id, "client_ip": client_ip, "contributor_key": key})
            assert status == 403 and err["code"] == "banned" and err["ban"]["kind"] == "ip", (client_ip, key)
    assert relay_token({"node_id": node.id, "client_ip": "2001:db8:9:a::1", "contributor_key": taster.key})[0] == 201
    # The relay's own address is not the client's: a ban on it does not stop the relay's clients.
    moderation.ban(kind="ip", value="127.0.0.1", moderator=MOD, reason="the relay's host")
    assert relay_token({"node_id": node.id, "client_ip": CLIENT})[0] == 201


@pytest.mark.parametrize("how", ["node_ban", "owner_ban", "taken_down"])
def test_a_hidden_node_is_404_as_for_the_client(api, live_node, owner, relay_token, how):
    node, _ = live_node
    if how == "node_ban":
        moderation.ban(kind="node", value=node.id, moderator=MOD, reason="spam rig")
    elif how == "owner_ban":
        moderation.ban(kind="contributor", value=owner.id, moderator=MOD, reason="fake rigs")
    else:
        moderation.take_down(node=node, moderator=MOD, reason="illegal content")
    status, err = relay_token({"node_id": node.id, "client_ip": CLIENT})
    assert status == 404 and err["code"] == "node_not_found"
    assert api.post("/api/tokens", {"node_id": node.id}, REMOTE_ADDR=CLIENT)[1]["code"] == "node_not_found"


def test_a_token_minted_for_the_gateway_is_signed_like_the_others(api, live_node, relay_token):
    node, _ = live_node
    _, body = relay_token({"node_id": node.id, "client_ip": CLIENT})
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "EdDSA" and header["typ"] == "luckrig-tasting+jwt"
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["crypto_mode"] == "plain" and "user_public_key" not in claims

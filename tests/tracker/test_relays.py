"""Relays, the tracker's side (tracker.relays, tracker.agent_api): tunnel tickets, relay secrets, relay reports and
the community timing they feed, `manage.py relay`, the fingerprint check, metrics and token caveats of relayed
rigs. How nodes are assigned to relays and what relay heartbeats do to their status:
tests/nodes/test_relay_routing.py."""

import io
import re
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from nodes.models import Node, Relay, TimingSample
from tests import factories
from tests.factories import add_relay, age_relay, register_relayed, relay_heartbeat, tunnel
from tracker import bans, relays
from tracker.models import Ban, RelayReport, TastingToken

pytestmark = pytest.mark.django_db

SECRET_RE = re.compile(r"^lrr_[A-Za-z0-9_-]{43}$")


# --- registration and PublicNode --------------------------------------------------------------------------

# --- tunnel tickets ---------------------------------------------------------------------------------------


def test_a_tunnel_ticket_verifies_with_the_published_key(api, owner, relay_a):
    node, secret = register_relayed(api, owner)
    status, body = tunnel(api, node["id"], secret)
    assert status == 200, body
    assert body["relay_id"] == "relay-a" and body["relay_url"] == "https://relay-a.example.org/"
    assert body["tunnel_url"] == "wss://relay-a.example.org/tunnel"
    keys = {k["kid"]: k for k in api.get("/api/tracker-keys")[1]["keys"]}
    header = jwt.get_unverified_header(body["ticket"])
    assert header["typ"] == "luckrig-tunnel+jwt" and header["alg"] == "EdDSA" and header["kid"] in keys
    public = load_pem_public_key(keys[header["kid"]]["public_key_pem"].encode())
    claims = jwt.decode(body["ticket"], public, algorithms=["EdDSA"], audience="relay-a", issuer="http://testserver")
    assert claims["sub"] == node["id"] and claims["jti"]
    assert abs(claims["exp"] - claims["iat"] - 900) <= 1
    assert abs(claims["exp"] - (timezone.now() + timedelta(minutes=15)).timestamp()) < 5
    assert body["expires_at"].endswith("Z")
    # A ticket is not a tasting token: it cannot be passed off as one.
    assert api.post("/api/replay/timing", {"node_id": node["id"]}, auth=body["ticket"])[0] == 401


def test_an_http_relay_gets_a_ws_tunnel_url(api, owner):
    secret = add_relay("local", "http://127.0.0.1:8789")
    relay_heartbeat(api, "local", secret)
    node, node_secret = register_relayed(api, owner)
    assert tunnel(api, node["id"], node_secret)[1]["tunnel_url"] == "ws://127.0.0.1:8789/tunnel"


def test_a_direct_node_gets_409_not_relayed(api, owner, relay_a):
    node, secret = factories.make_node(owner)
    status, err = tunnel(api, node.id, secret)
    assert status == 409 and err["code"] == "not_relayed"


def test_no_live_relay_is_503_with_retry_after(api, owner, relay_a):
    node, secret = register_relayed(api, owner)
    age_relay("relay-a", 61)
    status, err = tunnel(api, node["id"], secret)
    assert status == 503 and err["code"] == "no_relay_available"
    assert api.last.headers["Retry-After"] == "10"


def test_tunnels_need_the_node_secret(api, owner, relay_a, taster):
    node, secret = register_relayed(api, owner)
    other, other_secret = register_relayed(api, owner, gpu="RTX 2080")
    assert tunnel(api, node["id"], None)[0] == 401
    assert tunnel(api, node["id"], other_secret)[0] == 401
    assert tunnel(api, node["id"], relay_a)[0] == 401
    status, err = tunnel(api, node["id"], secret, {"relay": "x"})
    assert status == 400 and err["code"] == "unknown_field" and err["field"] == "relay"
    status, err = tunnel(api, node["id"], secret, {"unreachable_relay_id": 7})
    assert status == 400 and err["field"] == "unreachable_relay_id"


@pytest.mark.parametrize("how", ["taken_down", "banned"])
def test_a_hidden_node_gets_no_tunnel(api, owner, relay_a, how):
    node, secret = register_relayed(api, owner)
    if how == "taken_down":
        Node.objects.filter(pk=node["id"]).update(taken_down_at=timezone.now())
    else:
        until = timezone.now() + timedelta(days=1)
        Ban.objects.create(kind="node", value=node["id"], reason="spam rig", expires_at=until)
        bans.refresh_node_ban(node["id"])
    status, err = tunnel(api, node["id"], secret)
    assert status == 403 and err["code"] == how  # its agent is refused on every path (docs/api.md)


# --- relay heartbeats and node status ---------------------------------------------------------------------


def test_relay_secrets_are_checked(api, two_relays, owner):
    body = {"version": "1", "tunnels": [], "open_streams": 0}
    status, err = api.post("/api/relays/relay-a/heartbeat", body)
    assert status == 401
    for bad in ("garbage", "lrr_" + "x" * 43, factories.make_node(owner)[1]):
        status, err = api.post("/api/relays/relay-a/heartbeat", body, auth=bad)
        assert status == 401 and err["code"] == "invalid_credential"
        assert api.last.headers["WWW-Authenticate"] == "Bearer"
    status, err = api.post("/api/relays/relay-a/heartbeat", body, auth=two_relays["relay-b"])
    assert status == 403 and err["code"] == "wrong_relay"
    status, err = api.post("/api/relays/ghost/reports", {"report_id": "r", "entries": []}, auth=two_relays["relay-b"])
    assert status == 403 and err["code"] == "wrong_relay"


def test_bad_relay_heartbeats_name_the_field(api, relay_a):
    url = "/api/relays/relay-a/heartbeat"
    good = {"version": "1", "tunnels": [], "open_streams": 0}
    for body, field in (
        ({**good, "extra": 1}, "extra"),
        ({**good, "tunnels": "node"}, "tunnels"),
        ({**good, "tunnels": ["ok", "not a slug!"]}, "tunnels"),
        ({**good, "tunnels": ["n"] * 10_001}, "tunnels"),
        ({**good, "open_streams": -1}, "open_streams"),
        ({**good, "open_streams": "3"}, "open_streams"),
        ({**good, "draining": "yes"}, "draining"),
        ({"tunnels": [], "open_streams": 0}, "version"),
    ):
        status, err = api.post(url, body, auth=relay_a)
        assert status == 400 and err["field"] == field, (body if len(str(body)) < 200 else field, err)


# --- relay reports --------------------------------------------------------------------------------------


def entry(jti, node_id, **overrides):
    e = {
        "jti": jti,
        "node_id": node_id,
        "status": 200,
        "mode": "plain",
        "stream": True,
        "ttft_ms": 250.0,
        "content_chunks": 120,
        "chunks_per_sec": 40.0,
        "bytes": 18000,
        "ended": "done",
        "started_at": "2026-12-06T05:00:00Z",
        "duration_ms": 3250.0,
    }
    e.update(overrides)
    return e


def report(api, secret, report_id, entries, relay_id="relay-a"):
    body = {"schema_version": 1, "report_id": report_id, "entries": entries}
    return api.post(f"/api/relays/{relay_id}/reports", body, auth=secret)


@pytest.fixture
def tokens(api, relayed):
    node_id, _ = relayed
    issued = []
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        status, body = api.post("/api/tokens", {"node_id": node_id}, REMOTE_ADDR=ip)
        assert status == 201, body
        issued.append(body)
    return node_id, issued


def test_a_report_witnesses_tokens_and_adds_relay_timing_samples(api, relay_a, tokens):
    node_id, issued = tokens
    status, body = report(api, relay_a, "r-1", [entry(issued[0]["jti"], node_id)])
    assert status == 202 and body == {"schema_version": 1, "ok": True, "counted": 1, "duplicate": False}
    token = TastingToken.objects.get(jti=issued[0]["jti"])
    assert token.relay_requests == 1 and token.relay_seen_at is not None
    sample = TimingSample.objects.get(jti=issued[0]["jti"])
    assert sample.source == "relay" and sample.contributor_id is None
    assert (sample.ttft_ms, sample.tok_per_sec, sample.output_tokens, sample.generation_sec, sample.mode) == (
        250.0,
        40.0,
        120,
        3.25,
        "plain",
    )
    timing = api.get(f"/api/nodes/{node_id}")[1]["node"]["community_timing"]
    assert timing["samples_count"] == 1 and timing["by_source"] == {"relay": 1, "taster": 0}
    assert timing["tok_per_sec_p50"] == 40.0 and timing["ttft_ms_p50"] == 250.0
    assert timing["last_uploaded_at"].endswith("Z")


def test_reports_are_idempotent_on_report_id(api, relay_a, tokens):
    node_id, issued = tokens
    entries = [entry(issued[0]["jti"], node_id), entry(issued[1]["jti"], node_id, ttft_ms=None, content_chunks=0)]
    assert report(api, relay_a, "r-1", entries)[1]["counted"] == 2
    status, body = report(api, relay_a, "r-1", entries)
    assert status == 202 and body["counted"] == 2 and body["duplicate"] is True
    assert TastingToken.objects.get(jti=issued[0]["jti"]).relay_requests == 1
    assert TimingSample.objects.filter(source="relay").count() == 1  # the second entry streamed nothing
    assert RelayReport.objects.get(relay_id="relay-a", report_id="r-1").entries_counted == 2
    # Another relay may use the same report id: ids are per relay.
    secret_b = add_relay("relay-b", "https://relay-b.example.org")
    assert report(api, secret_b, "r-1", [entry(issued[2]["jti"], node_id)], relay_id="relay-b")[1]["counted"] == 1


def test_only_jtis_issued_for_that_node_count(api, owner, relay_a, tokens):
    node_id, issued = tokens
    other, other_secret = factories.make_node(owner, gpu="RTX 2060")
    factories.heartbeat(api, other, other_secret)
    _, theirs = api.post("/api/tokens", {"node_id": other.id}, REMOTE_ADDR="192.0.2.9")
    entries = [
        entry("never-issued", node_id),
        entry(issued[0]["jti"], other.id),  # issued, but for another node than it says
        entry(theirs["jti"], node_id),
        entry(theirs["jti"], other.id),  # right: counted, even though that node is direct
    ]
    assert report(api, relay_a, "r-1", entries)[1]["counted"] == 1
    assert TastingToken.objects.get(jti=issued[0]["jti"]).relay_requests == 0
    assert TastingToken.objects.get(jti=theirs["jti"]).relay_requests == 1
    assert not TimingSample.objects.filter(node_id=node_id).exists()


def test_one_relay_sample_per_jti_and_only_for_streamed_answers(api, relay_a, tokens):
    node_id, issued = tokens
    a, b, c = (t["jti"] for t in issued)
    entries = [
        entry(a, node_id, started_at="2026-12-06T05:00:00Z", ttft_ms=100.0),
        entry(a, node_id, started_at="2026-12-06T05:01:00Z", ttft_ms=900.0),  # later: ignored for timing
        entry(b, node_id, stream=False),
        entry(b, node_id, status=429, ended="refused", content_chunks=0, ttft_ms=None),
        entry(c, node_id, ended="taster_gone", content_chunks=0, ttft_ms=None, chunks_per_sec=None),
        entry(c, node_id, status=0, stream=False, ended="tunnel_lost", content_chunks=0, ttft_ms=None),
    ]
    assert report(api, relay_a, "r-1", entries)[1]["counted"] == 6
    assert list(TimingSample.objects.values_list("jti", "ttft_ms")) == [(a, 100.0)]
    assert TastingToken.objects.get(jti=a).relay_requests == 2
    # Witnessed means served: b's 429 is not a use of the token (docs/scoring.md).
    assert TastingToken.objects.get(jti=b).relay_requests == 1
    # A later report about the same jti adds a witnessed request, never a second sample.
    assert report(api, relay_a, "r-2", [entry(a, node_id, ttft_ms=5.0)])[1]["counted"] == 1
    assert TimingSample.objects.filter(jti=a).count() == 1
    assert TastingToken.objects.get(jti=a).relay_requests == 3


def test_impossible_values_are_skipped_not_counted(api, relay_a, tokens):
    node_id, issued = tokens
    jti = issued[0]["jti"]
    entries = [
        entry(jti, node_id, ttft_ms=-1.0),
        entry(jti, node_id, ttft_ms=600_001.0),
        entry(jti, node_id, chunks_per_sec=100_001.0),
        entry(jti, node_id, duration_ms=-5.0),
        entry(jti, node_id, bytes=-1),
        entry(jti, node_id, content_chunks=-3),
    ]
    status, body = report(api, relay_a, "r-1", entries)
    assert status == 202 and body["counted"] == 0
    assert not TimingSample.objects.exists() and TastingToken.objects.get(jti=jti).relay_requests == 0


def test_p50s_weigh_relay_and_taster_samples_alike(api, relay_a, tokens):
    node_id, issued = tokens
    report(api, relay_a, "r-1", [entry(issued[0]["jti"], node_id, chunks_per_sec=10.0, ttft_ms=100.0)])
    report(api, relay_a, "r-2", [entry(issued[1]["jti"], node_id, chunks_per_sec=20.0, ttft_ms=200.0)])
    # A public-key answer comes in one piece: counted, but not in the medians.
    report(api, relay_a, "r-3", [entry(issued[2]["jti"], node_id, mode="public-key", chunks_per_sec=1.0)])
    status, body = api.post(
        "/api/replay/timing",
        {"node_id": node_id, "mode": "plain", "tok_per_sec": 60.0, "ttft_ms": 600.0},
        auth=issued[0]["upload_key"],
    )
    assert status == 201
    timing = body["community_timing"]
    assert timing["samples_count"] == 4 and timing["by_source"] == {"relay": 3, "taster": 1}
    assert timing["tok_per_sec_p50"] == 20.0 and timing["ttft_ms_p50"] == 200.0
    assert api.get(f"/api/nodes/{node_id}")[1]["node"]["community_timing"] == timing
    listed = {n["id"]: n for n in api.get("/api/nodes")[1]["nodes"]}
    assert listed[node_id]["community_timing"] == timing


@pytest.mark.parametrize(
    "change, field",
    [
        ({"extra": 1}, "entries[0].extra"),
        ({"status": "200"}, "entries[0].status"),
        ({"status": 600}, "entries[0].status"),
        ({"mode": "sealed"}, "entries[0].mode"),
        ({"stream": 1}, "entries[0].stream"),
        ({"ttft_ms": "fast"}, "entries[0].ttft_ms"),
        ({"content_chunks": 1.5}, "entries[0].content_chunks"),
        ({"ended": "exploded"}, "entries[0].ended"),
        ({"started_at": "yesterday"}, "entries[0].started_at"),
        ({"duration_ms": None}, "entries[0].duration_ms"),
        ({"jti": "j" * 65}, "entries[0].jti"),
        ({"prompt": "hello"}, "entries[0].prompt"),
    ],
)
def test_bad_report_entries_name_the_field(api, relay_a, change, field):
    status, err = report(api, relay_a, "r-1", [{**entry("j", "n"), **change}])
    assert status == 400 and err["field"] == field, err
    assert not RelayReport.objects.exists()


def test_bad_reports_are_400_never_500(api, relay_a):
    url = "/api/relays/relay-a/reports"
    for body, field in (
        ({"report_id": "r", "entries": [entry("j", "n")] * 501}, "entries"),
        ({"report_id": "r" * 65, "entries": []}, "report_id"),
        ({"entries": []}, "report_id"),
        ({"report_id": "r", "entries": {}}, "entries"),
        ({"report_id": "r", "entries": [], "node": "x"}, "node"),
        ({"report_id": "r", "entries": [], "schema_version": 2}, "schema_version"),
    ):
        status, err = api.post(url, body, auth=relay_a)
        assert status == 400 and err["field"] == field, (field, err)
    status, err = api.call("post", url, raw="{not json", auth=relay_a)
    assert status == 400 and err["code"] == "invalid_json"
    status, err = api.post(url, {"report_id": "r", "entries": [1, 2]}, auth=relay_a)
    assert status == 400 and err["field"].startswith("entries")


def test_a_full_report_of_500_entries_is_accepted(api, relay_a, tokens):
    node_id, issued = tokens
    entries = [entry(issued[i % 3]["jti"], node_id) for i in range(500)]
    status, body = report(api, relay_a, "big", entries)
    assert status == 202 and body["counted"] == 500


# --- manage.py relay --------------------------------------------------------------------------------------


def test_relay_add_prints_the_secret_alone_on_its_last_line_and_rotates(api):
    out = io.StringIO()
    call_command("relay", "add", "relay-1", "https://relay1.example.org", stdout=out)
    lines = out.getvalue().splitlines()
    first = lines[-1]
    assert SECRET_RE.match(first), lines
    assert "registered relay relay-1" in lines[0]
    relay_heartbeat(api, "relay-1", first)
    second = add_relay("relay-1", "https://relay1.example.net")
    assert SECRET_RE.match(second) and second != first
    relay_heartbeat(api, "relay-1", first, expect=401)  # the old secret stops working at once
    relay_heartbeat(api, "relay-1", second)
    assert Relay.objects.get(pk="relay-1").public_url == "https://relay1.example.net"
    assert Relay.objects.count() == 1
    assert first not in str(list(Relay.objects.values()))  # only its digest is stored


def test_relay_add_refuses_bad_ids_and_urls():
    for args in (("bad id", "https://r.example.org"), ("r1", "ftp://r.example.org"), ("r1", "https://r/?q=1")):
        with pytest.raises(CommandError):
            call_command("relay", "add", *args, stdout=io.StringIO())
    assert not Relay.objects.exists()


def test_relay_remove_unassigns_its_nodes_and_list_shows_the_rest(api, owner, relayed):
    node_id, secret = relayed
    add_relay("relay-b", "https://relay-b.example.org")
    out = io.StringIO()
    call_command("relay", "list", stdout=out)
    text = out.getvalue()
    assert "relay-a\thttps://relay-a.example.org/\tlive" in text and "relay-b" in text and "silent" in text
    out = io.StringIO()
    call_command("relay", "remove", "relay-a", stdout=out)
    assert "1 node(s)" in out.getvalue()
    stored = Node.objects.get(pk=node_id)
    assert stored.relay_id is None and stored.tunnel_seen_at is None and stored.status == "unavailable"
    assert api.get(f"/api/nodes/{node_id}")[1]["node"]["endpoint_url"] is None
    with pytest.raises(CommandError):
        call_command("relay", "remove", "relay-a", stdout=io.StringIO())
    # Its agent asks again: no relay is live (relay-b never reported in), then relay-b is.
    assert tunnel(api, node_id, secret)[0] == 503
    relay_heartbeat(api, "relay-b", add_relay("relay-b", "https://relay-b.example.org"))
    assert tunnel(api, node_id, secret)[1]["relay_id"] == "relay-b"


# --- monitor, fingerprint, admin, metrics -------------------------------------------------------------------


def test_the_fingerprint_check_of_a_relayed_node_goes_through_its_relay(api, owner, relay_a):
    node, _ = register_relayed(api, owner, node_public_key=factories.x25519_public_pem())
    status, body = api.post("/api/fingerprint/verify", {"node_id": node["id"], "url": "https://elsewhere.example/x"})
    assert status == 400 and body["field"] == "url"
    Relay.objects.filter(pk="relay-a").update(public_url="http://127.0.0.1:9")  # nothing listens there
    status, body = api.post("/api/fingerprint/verify", {"node_id": node["id"]})
    assert status == 200 and body["url"] == f"http://127.0.0.1:9/n/{node['id']}/health" and body["ok"] is False


def test_metrics_count_live_relays(api, two_relays):
    age_relay("relay-b", 120)
    text = api.client.get("/metrics").content.decode()
    assert "luckrig_relays_live 1.0" in text


def test_the_service_refuses_a_removed_relay_quietly():
    assert relays.remove_relay(relay_id="nobody") is None


def test_a_relayed_rigs_token_caveat_says_the_relay_can_read_plain_mode_too(api, relayed, live_node):
    node_id, _ = relayed
    status, body = api.post("/api/tokens", {"node_id": node_id})
    assert status == 201
    assert "relay" in body["caveat"] and "can read your prompt" in body["caveat"]
    # A direct rig's caveat names its operator only.
    status, direct = api.post("/api/tokens", {"node_id": live_node[0].id}, REMOTE_ADDR="192.0.2.77")
    assert status == 201 and "relay" not in direct["caveat"]
    for text in (body["caveat"], direct["caveat"]):
        assert "end-to-end" not in text and "safe" not in text

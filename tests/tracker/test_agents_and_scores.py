"""Heartbeats, usage reports, timing uploads and the contribution scores they feed."""

from datetime import timedelta

import pytest
from django.utils import timezone

from nodes.models import Node, TimingSample
from tests import factories
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db


def token_for(api, node, key=None, ip="192.0.2.50"):
    status, body = api.post("/api/tokens", {"node_id": node.id}, auth=key, REMOTE_ADDR=ip)
    assert status == 201, body
    return body


class TestHeartbeat:
    def test_heartbeat_makes_a_node_available_and_answers_with_rules_and_revocations(self, api, owner):
        node, secret = factories.make_node(owner)
        answer = factories.heartbeat(api, node, secret, active=0, waiting=0, max_active=2)
        # The version of the rules the tracker publishes (the built-in ones, from migrations that each bump it).
        status, rules = api.get("/api/filter-rules", auth=secret)
        assert status == 200 and rules["version"] >= 1
        assert answer == {
            "schema_version": 1,
            "status": "available",
            "filter_rules_version": rules["version"],
            "revoked_jtis": [],
            # Its circle policy (issue 15): a public rig shared with no circle.
            "visibility": "public",
            "owner_id": owner.id,  # whose own tokens a circle rig takes
            "circles": [],
            "circle_only_hours": [],
        }
        _, body = api.get(f"/api/nodes/{node.id}")
        assert body["node"]["health"]["status"] == "available"
        assert body["node"]["health"]["last_seen_at"] is not None
        assert body["node"]["queue"]["max_active"] == 2

    def test_full_slots_mean_busy(self, api, owner):
        node, secret = factories.make_node(owner)
        assert factories.heartbeat(api, node, secret, active=2, waiting=5, max_active=2)["status"] == "busy"
        _, body = api.get(f"/api/nodes/{node.id}")
        assert body["node"]["queue"] == {**body["node"]["queue"], "active": 2, "waiting": 5, "max_active": 2}

    def test_revoked_jtis_are_pushed_until_they_expire(self, api, live_node):
        node, secret = live_node
        issued = token_for(api, node)
        TastingToken.objects.filter(jti=issued["jti"]).update(revoked_at=timezone.now())
        assert factories.heartbeat(api, node, secret)["revoked_jtis"] == [issued["jti"]]
        TastingToken.objects.filter(jti=issued["jti"]).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert factories.heartbeat(api, node, secret)["revoked_jtis"] == []

    def test_wrong_or_missing_secret_is_401(self, api, owner):
        node, _ = factories.make_node(owner)
        other, other_secret = factories.make_node(owner)
        body = {"queue": {"active": 0, "waiting": 0, "max_active": 1}}
        assert api.post(f"/api/nodes/{node.id}/heartbeat", body)[0] == 401
        assert api.post(f"/api/nodes/{node.id}/heartbeat", body, auth=other_secret)[0] == 401
        assert api.post(f"/api/nodes/{node.id}/heartbeat", body, auth=owner.key)[0] == 401
        assert api.post("/api/nodes/ghost/heartbeat", body, auth=other_secret)[0] == 401

    def test_heartbeats_alone_earn_no_contribution(self, api, owner):
        """Anyone holding the secret can send heartbeats: only the monitor's probes count as seen alive."""
        node, secret = factories.make_node(owner, tuning_note="a long and careful note")
        factories.heartbeat(api, node, secret)
        node.refresh_from_db()
        assert node.alive_days == 0 and node.contribution_total == 0.0
        owner.refresh()
        assert owner.contributor.score_tier == "limited"


class TestUsage:
    def report(self, api, node, secret, report_id, entries):
        return api.post(f"/api/nodes/{node.id}/usage", {"report_id": report_id, "entries": entries}, auth=secret)

    def test_usage_credits_tracker_issued_jtis_of_this_node_only(self, api, owner, taster):
        node, secret = factories.make_node(owner)
        factories.heartbeat(api, node, secret)
        factories.seen_alive(node)
        other, other_secret = factories.make_node(owner, gpu="RTX 2060")
        factories.heartbeat(api, other, other_secret)
        mine = token_for(api, node, taster.key)
        theirs = token_for(api, other, taster.key)
        status, body = self.report(
            api,
            node,
            secret,
            "r1",
            [
                {"jti": mine["jti"], "requests": 2, "prompt_tokens": 30, "completion_tokens": 100},
                {"jti": theirs["jti"], "requests": 3},
                {"jti": "made-up", "requests": 50},
            ],
        )
        assert status == 202 and body == {
            "schema_version": 1,
            "accepted": 1,
            "ignored": 2,
            "duplicate": False,
        }
        node.refresh_from_db()
        assert node.usage_requests == 2 and node.distinct_tasters == 1
        # The taster's identity is minutes old (standing 0.1, docs/scoring.md): 2 requests weigh 0.2, one taster 0.1,
        # and one fresh identity is not yet "someone else", so the node earns nothing so far.
        assert node.usage_credit == 0.2 and node.discovery_credit == 0.1
        assert node.contribution_total == 0.0

    def test_a_retried_report_is_not_counted_twice(self, api, live_node, taster):
        node, secret = live_node
        issued = token_for(api, node, taster.key)
        entries = [{"jti": issued["jti"], "requests": 1}]
        assert self.report(api, node, secret, "same", entries)[1]["duplicate"] is False
        assert self.report(api, node, secret, "same", entries)[1] == {
            "schema_version": 1,
            "accepted": 0,
            "ignored": 0,
            "duplicate": True,
        }
        node.refresh_from_db()
        assert node.usage_requests == 1

    def test_claims_beyond_a_tokens_limits_are_capped(self, api, live_node):
        node, secret = live_node
        issued = token_for(api, node)  # limited: 3 requests of up to 256 output tokens, 768 in all
        self.report(api, node, secret, "r1", [{"jti": issued["jti"], "requests": 40, "completion_tokens": 10**6}])
        token = TastingToken.objects.get(jti=issued["jti"])
        assert token.requests_served == 3 and token.completion_tokens == 3 * 256

    def test_the_owners_own_tastings_do_not_count(self, api, live_node, owner):
        node, secret = live_node
        issued = token_for(api, node, owner.key)
        self.report(api, node, secret, "r1", [{"jti": issued["jti"], "requests": 5}])
        node.refresh_from_db()
        assert node.usage_requests == 0 and node.distinct_tasters == 0

    def test_usage_caps_at_twenty_points(self, api, live_node, settings):
        node, secret = live_node
        settings.LIMITED_TOKENS_PER_DAY = 100
        settings.RATE_TOKEN_CREATE = "1000/m"
        jtis = [token_for(api, node, ip=f"192.0.2.{i}")["jti"] for i in range(1, 31)]
        self.report(api, node, secret, "r1", [{"jti": j, "requests": 3} for j in jtis])
        node.refresh_from_db()
        assert node.usage_requests == 90
        # 30 anonymous tasters (standing 0.5) × 3 requests × 0.5 points = 22.5, capped at 20.
        assert node.contribution_components["usage"] == 20.0
        assert node.distinct_tasters == 30 and node.contribution_components["discovery"] == 20.0


class TestTiming:
    def upload(self, api, token, body):
        return api.post("/api/replay/timing", body, auth=token)

    def test_one_upload_per_jti_feeds_the_community_p50s(self, api, live_node, taster):
        node, secret = live_node

        def used(issued):  # the node reports the token used: only then does its timing count (docs/scoring.md)
            body = {"report_id": issued["jti"], "entries": [{"jti": issued["jti"], "requests": 1}]}
            assert api.post(f"/api/nodes/{node.id}/usage", body, auth=secret)[0] == 202

        t1 = token_for(api, node, taster.key)
        used(t1)
        status, body = self.upload(
            api,
            t1["upload_key"],
            {
                "schema_version": 1,
                "node_id": node.id,
                "mode": "plain",
                "tok_per_sec": 40.0,
                "ttft_ms": 300,
                "output_tokens": 120,
                "limited_output_truncated": False,
            },
        )
        assert status == 201 and body["ok"] is True
        assert body["community_timing"]["samples_count"] == 1 and body["community_timing"]["tok_per_sec_p50"] == 40.0
        status, body = self.upload(api, t1["upload_key"], {"node_id": node.id, "tok_per_sec": 1.0})
        assert status == 409 and body["code"] == "already_uploaded"
        for tps, ip in ((50.0, "192.0.2.60"), (10.0, "192.0.2.61")):
            t = token_for(api, node, ip=ip)
            used(t)
            self.upload(api, t["upload_key"], {"node_id": node.id, "tok_per_sec": tps, "ttft_ms": 100})
        _, detail = api.get(f"/api/nodes/{node.id}")
        timing = detail["node"]["community_timing"]
        assert timing["samples_count"] == 3 and timing["tok_per_sec_p50"] == 40.0 and timing["ttft_ms_p50"] == 100
        # A public-key tasting's numbers are counted but stay out of the streaming medians.
        t = token_for(api, node, ip="192.0.2.62")
        used(t)
        _, body = self.upload(
            api, t["upload_key"], {"node_id": node.id, "mode": "public-key", "tok_per_sec": 900.0, "ttft_ms": 9}
        )
        assert body["community_timing"]["samples_count"] == 4
        assert body["community_timing"]["tok_per_sec_p50"] == 40.0 and body["community_timing"]["ttft_ms_p50"] == 100
        sample = TimingSample.objects.get(jti=t1["jti"])
        assert abs((sample.created_at - timezone.now()).total_seconds()) < 60  # stamped by the server
        # Sharing timing counts as a contribution of the taster, weighted by their standing (minutes old: 0.1).
        taster.refresh()
        assert taster.contributor.timing_shared == 1 and taster.contributor.score_components["note"] == 0.05

    @pytest.mark.parametrize(
        "body, code, field",
        [
            ({"node_id": "x", "prompt": "hi"}, "disallowed_field", "prompt"),
            ({"node_id": "x", "response_text": "hi"}, "disallowed_field", "response_text"),
            ({"node_id": "x", "chunk_timestamps": [1, 2]}, "disallowed_field", "chunk_timestamps"),
            ({"node_id": "x", "gpu_temp": 70}, "unknown_field", "gpu_temp"),
            ({"node_id": "x", "tokenizer": {"name": "x"}}, "nested_value", "tokenizer"),
            ({"node_id": "x", "tok_per_sec": "fast"}, "invalid_field", "tok_per_sec"),
            ({"node_id": "x", "tok_per_sec": -1}, "invalid_field", "tok_per_sec"),
        ],
    )
    def test_only_allowlisted_scalar_fields_are_accepted(self, api, live_node, body, code, field):
        node, _ = live_node
        issued = token_for(api, node)
        status, err = self.upload(api, issued["upload_key"], {**body, "node_id": node.id})
        assert status == 400 and err["code"] == code and err["field"] == field
        assert not TimingSample.objects.exists()

    def test_a_revoked_token_cannot_upload(self, api, live_node):
        node, _ = live_node
        issued = token_for(api, node)
        TastingToken.objects.filter(jti=issued["jti"]).update(revoked_at=timezone.now())
        status, err = self.upload(api, issued["upload_key"], {"node_id": node.id, "tok_per_sec": 3.0})
        assert status == 401 and "revoked" in err["error"]

    def test_needs_the_upload_key_of_a_token_for_that_node(self, api, live_node, owner):
        node, _ = live_node
        assert self.upload(api, None, {"node_id": node.id})[0] == 401
        assert self.upload(api, "not.a.jwt", {"node_id": node.id})[0] == 401
        issued = token_for(api, node)
        forged = issued["upload_key"][:-4] + ("AAAA" if not issued["upload_key"].endswith("AAAA") else "BBBB")
        assert self.upload(api, forged, {"node_id": node.id})[0] == 401
        assert self.upload(api, issued["token"], {"node_id": node.id})[0] == 401  # the node holds the token too
        other, other_secret = factories.make_node(owner, gpu="Arc A770")
        status, err = self.upload(api, issued["upload_key"], {"node_id": other.id})
        assert status == 403 and err["code"] == "wrong_node"


def test_contributions_endpoint_lists_listed_nodes_by_total(api, owner):
    for fields in (
        {"id": "plain", "tuning_note": ""},
        {"id": "noted", "tuning_note": "x" * 1200, "gpu": "Tesla P40"},
        {"id": "hidden", "visibility": "unlisted", "gpu": "K80"},
    ):
        node, secret = factories.make_node(owner, **fields)
        factories.heartbeat(api, node, secret)  # a node is listed once its agent has reported in
        factories.served_others(factories.seen_alive(node))
    factories.make_node(owner, id="silent", gpu="Tesla V100", tuning_note="x" * 1200)  # never reported in
    status, body = api.get("/api/contributions")
    assert status == 200 and body["threshold"] == 1.0
    assert [s["node_id"] for s in body["scores"]] == ["noted", "plain"]
    noted = body["scores"][0]
    assert noted["components"]["note"] == 10.0 and noted["components"]["rarity"] == 5.0
    assert noted["evidence"]["tuning_note_chars"] == 1200 and noted["tier"] == "contributor"
    assert api.get("/api/contributions?limit=0")[0] == 400
    # 5,000 digits: int() of more than 4,300 raises ValueError, which used to be a 500
    status, body = api.get("/api/contributions?limit=" + "9" * 5000)
    assert status == 400 and body["code"] == "invalid_field" and body["field"] == "limit"
    assert api.get("/api/contributions?limit=1")[0] == 200


def test_owner_score_is_the_sum_of_their_nodes(api, owner):
    factories.served_others(factories.seen_alive(factories.make_node(owner, id="one", tuning_note="")[0]))
    factories.served_others(factories.seen_alive(factories.make_node(owner, id="two", tuning_note="", gpu="RX 580")[0]))
    _, me = api.get("/api/contributors/me", auth=owner.key)
    # Each: rarity 5, existence 0.2, usage 2 (4 weighted requests × 0.5), discovery 4 (2 weighted tasters × 2).
    assert me["score"]["components"]["rarity"] == 10.0 and me["score"]["total"] == 22.4
    api.delete("/api/nodes/two", auth=owner.key)
    _, me = api.get("/api/contributors/me", auth=owner.key)
    assert me["score"]["total"] == 11.2
    assert Node.objects.count() == 1


def test_heartbeat_telemetry_may_list_the_filtered_categories(api, owner, settings):
    settings.RATE_AGENT_HEARTBEAT = "100/5s"
    node, secret = factories.make_node(owner)
    body = {"queue": {"active": 0, "waiting": 0, "max_active": 1}, "telemetry": {"filter_categories": ["csam", "x"]}}
    assert api.post(f"/api/nodes/{node.id}/heartbeat", body, auth=secret)[0] == 200
    node.refresh_from_db()
    assert node.telemetry["filter_categories"] == ["csam", "x"]
    for bad in (["x" * 65], [1], ["a"] * 21, [{"a": 1}]):
        body["telemetry"] = {"filter_categories": bad}
        status, err = api.post(f"/api/nodes/{node.id}/heartbeat", body, auth=secret)
        assert status == 400, err
    body["telemetry"] = {"other": ["a"]}  # only that key may hold a list
    assert api.post(f"/api/nodes/{node.id}/heartbeat", body, auth=secret)[0] == 400

"""Contribution you cannot fake (issue 11): each farming path an attacker tried becomes a test, plus a property test
that no sequence of API calls by one person from one network lifts a contributor past the threshold without a node
that really served someone else. The rules: docs/scoring.md."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.models import Contributor, Node, TimingSample
from tests import factories

pytestmark = pytest.mark.django_db

HOME = "198.51.100.20"  # the attacker's one network
ELSEWHERE = ["192.0.2.31", "192.0.2.32", "192.0.2.33"]


def contributor(api, ip=HOME) -> tuple[str, str]:
    status, body = api.post("/api/contributors", {}, REMOTE_ADDR=ip)
    assert status == 201, body
    return body["contributor"]["id"], body["contributor_key"]


def register(api, key, ip=HOME, **fields) -> tuple[str, str]:
    body = {
        "endpoint_url": f"https://rig-{timezone.now().timestamp()}.example.com/v1",
        "model_name": "Qwen3-30B-A3B",
        "quantization": "Q5_K_S",
        "gpu": "Tesla K80",
        "tuning_note": "A careful note about this rig. " * 20,
        **fields,
    }
    status, answer = api.post("/api/nodes", body, auth=key, REMOTE_ADDR=ip)
    assert status == 201, answer
    return answer["node"]["id"], answer["node_secret"]


def beat(api, node_id, secret, ip=HOME):
    body = {"queue": {"active": 0, "waiting": 0, "max_active": 1}, "models": ["m"], "agent_version": "t"}
    status, answer = api.post(f"/api/nodes/{node_id}/heartbeat", body, auth=secret, REMOTE_ADDR=ip)
    assert status == 200, answer


def token(api, node_id, key=None, ip=HOME) -> dict:
    status, body = api.post("/api/tokens", {"node_id": node_id}, auth=key, REMOTE_ADDR=ip)
    assert status == 201, body
    return body


def report(api, node_id, secret, jtis, requests=3, report_id=None):
    entries = [{"jti": j, "requests": requests, "completion_tokens": 50} for j in jtis]
    body = {"report_id": report_id or f"r-{timezone.now().timestamp()}", "entries": entries}
    status, answer = api.post(f"/api/nodes/{node_id}/usage", body, auth=secret, REMOTE_ADDR=HOME)
    assert status == 202, answer


def upload(api, issued, node_id, **values):
    body = {"node_id": node_id, "tok_per_sec": 40.0, "ttft_ms": 300, **values}
    return api.post("/api/replay/timing", body, auth=issued["upload_key"], REMOTE_ADDR=HOME)


def tier(api, key) -> str:
    status, me = api.get("/api/contributors/me", auth=key)
    assert status == 200, me
    return me["score"]["tier"]


@pytest.fixture
def quotas(settings):
    settings.LIMITED_TOKENS_PER_DAY = 1000
    settings.CONTRIBUTOR_TOKENS_PER_DAY = 1000
    settings.RATE_TOKEN_CREATE = "10000/m"
    settings.RATE_CONTRIBUTOR_CREATE = "10000/d"
    settings.RATE_NODE_WRITE = "10000/h"
    settings.RATE_AGENT_HEARTBEAT = settings.RATE_AGENT_USAGE = "10000/m"  # per node (tracker.throttle)


def test_timing_uploads_for_tokens_that_never_reached_a_rig_earn_nothing(api, quotas, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    _, key = contributor(api)
    for _ in range(4):  # the old recipe: a fresh key, tokens that never reach the rig, their timing uploads
        status, _ = upload(api, token(api, node.id, key), node.id)
        assert status == 201
    assert tier(api, key) == "limited"
    assert TimingSample.objects.filter(counted=False).count() == 4  # kept, waiting for proof of use
    _, detail = api.get(f"/api/nodes/{node.id}")
    assert detail["node"]["community_timing"]["samples_count"] == 0


def test_a_pending_upload_counts_once_the_node_reports_the_token_used(api, quotas, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    issued = token(api, node.id, ip=ELSEWHERE[0])
    status, answer = upload(api, issued, node.id)
    assert status == 201 and answer["counted"] is False  # kept, and said so
    _, detail = api.get(f"/api/nodes/{node.id}")
    assert detail["node"]["community_timing"]["samples_count"] == 0
    report(api, node.id, secret, [issued["jti"]], requests=1)
    _, detail = api.get(f"/api/nodes/{node.id}")
    assert detail["node"]["community_timing"]["samples_count"] == 1
    assert detail["node"]["community_timing"]["tok_per_sec_p50"] == 40.0
    later = token(api, node.id, ip=ELSEWHERE[1])
    report(api, node.id, secret, [later["jti"]], requests=1)
    status, answer = upload(api, later, node.id)  # used before the upload: it counts at once
    assert status == 201 and answer["counted"] is True and answer["community_timing"]["samples_count"] == 2


@pytest.mark.parametrize(
    "values, field",
    [
        ({"tok_per_sec": 250000.0}, "tok_per_sec"),
        ({"ttft_ms": 700000.0}, "ttft_ms"),
        ({"output_tokens": 99999}, "output_tokens"),
    ],
)
def test_physically_implausible_timing_is_refused(api, quotas, live_node, values, field):
    node, _ = live_node
    status, body = upload(api, token(api, node.id), node.id, **values)
    assert status == 400 and body["code"] == "implausible" and body["field"] == field


def test_a_static_json_health_url_plus_a_note_and_a_rare_combination_earn_nothing(api, quotas):
    _, key = contributor(api)
    node_id, _ = register(api, key)  # a rare combination and a long note, and no agent at all
    Node.objects.filter(pk=node_id).update(alive_days=5)  # even if the probe had counted days
    from tracker.scoring import refresh_scores

    refresh_scores([node_id])
    assert tier(api, key) == "limited"
    assert Node.objects.get(pk=node_id).contribution_total == 0.0


def test_sockpuppets_on_the_owners_network_are_the_owner(api, quotas):
    _, key = contributor(api)
    node_id, secret = register(api, key)
    beat(api, node_id, secret)
    puppets = [contributor(api)[1] for _ in range(5)]
    jtis = [token(api, node_id, puppet)["jti"] for puppet in puppets]
    jtis += [token(api, node_id)["jti"]]  # and an anonymous one, from home
    report(api, node_id, secret, jtis)
    node = Node.objects.get(pk=node_id)
    assert node.distinct_tasters == 0 and node.contribution_total == 0.0
    assert tier(api, key) == "limited"


def test_fresh_sockpuppets_elsewhere_count_for_little_and_real_tasters_count(api, quotas):
    _, key = contributor(api)
    node_id, secret = register(api, key)
    beat(api, node_id, secret)
    puppet = contributor(api, ip=ELSEWHERE[0])[1]  # a second network, an identity minutes old
    report(api, node_id, secret, [token(api, node_id, puppet, ip=ELSEWHERE[0])["jti"]])
    assert tier(api, key) == "limited"
    # Two anonymous tasters from two other networks: that is someone else.
    jtis = [token(api, node_id, ip=ip)["jti"] for ip in ELSEWHERE[1:]]
    report(api, node_id, secret, jtis)
    node = Node.objects.get(pk=node_id)
    assert node.contribution_total > 1.0
    assert tier(api, key) == "contributor"


def test_a_duplicate_registration_with_an_unknown_quantization_is_not_rare(api, quotas):
    _, key = contributor(api)
    node_id, secret = register(api, key)
    twin_id, twin_secret = register(api, key, quantization="unknown")
    for nid, sec in ((node_id, secret), (twin_id, twin_secret)):
        beat(api, nid, sec)
        report(api, nid, sec, [token(api, nid, ip=ip)["jti"] for ip in ELSEWHERE[:2]])
    twin = Node.objects.get(pk=twin_id)
    assert twin.rarity_score == 0.0 and twin.contribution_components["rarity"] == 0.0
    _, showcase = api.get("/api/showcase")
    rarest = [c for c in showcase["categories"] if c["id"] == "rarest_combination"]
    assert all(c["node_id"] != twin_id for c in rarest)


def test_one_owners_duplicates_of_a_combination_count_once(api, quotas):
    _, key = contributor(api)
    nodes = [register(api, key) for _ in range(3)]  # the same rig registered three times
    for nid, sec in nodes:
        beat(api, nid, sec)
        report(api, nid, sec, [token(api, nid, ip=ip)["jti"] for ip in ELSEWHERE[:2]])
    per_node = Node.objects.get(pk=nodes[0][0]).contribution_components
    status, me = api.get("/api/contributors/me", auth=key)
    assert me["score"]["components"]["rarity"] == per_node["rarity"]  # not three times it
    assert me["score"]["components"]["existence"] == per_node["existence"]


def test_timing_shares_count_for_tokens_really_used_at_someone_elses_node(api, quotas, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    cid, key = contributor(api, ip=ELSEWHERE[0])
    Contributor.objects.filter(pk=cid).update(created_at=timezone.now() - timedelta(days=10))  # full standing
    issued = [token(api, node.id, key, ip=ELSEWHERE[0]) for _ in range(2)]
    for t in issued:
        assert upload(api, t, node.id)[0] == 201
    assert tier(api, key) == "limited"  # not used yet
    report(api, node.id, secret, [t["jti"] for t in issued], requests=1)
    status, me = api.get("/api/contributors/me", auth=key)
    assert me["score"]["components"]["note"] == 1.0 and me["score"]["tier"] == "contributor"


def test_contributions_explain_each_component(api, quotas):
    _, key = contributor(api)
    node_id, secret = register(api, key)
    beat(api, node_id, secret)
    report(api, node_id, secret, [token(api, node_id, ip=ip)["jti"] for ip in ELSEWHERE[:2]])
    _, body = api.get("/api/contributions")
    (row,) = [r for r in body["scores"] if r["node_id"] == node_id]
    evidence = row["evidence"]
    assert evidence["served_someone_else"] is True and evidence["distinct_tasters"] == 2
    assert evidence["discovery_credit"] == 1.0 and evidence["usage_credit"] == 3.0
    assert set(evidence) >= {"alive_days", "rarity_score", "requests_served", "tuning_note_chars"}


# --- the property ---------------------------------------------------------------------------------------------

ACTIONS = st.lists(
    st.sampled_from(["contributor", "node", "unknown_twin", "beat", "token", "token_puppet", "use", "upload", "note"]),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_no_sequence_of_calls_from_one_network_reaches_the_contributor_tier(api, quotas, actions):
    """One person, one network, any order of any of the API calls they can make: every identity they create stays
    limited, because none of their nodes has served anyone else."""
    sid = transaction.savepoint()
    try:
        keys, nodes, tokens = [contributor(api)[1]], [], []
        for action in actions:
            key = keys[-1]
            if action == "contributor":
                keys.append(contributor(api)[1])
            elif action in ("node", "unknown_twin"):
                extra = {"quantization": "unknown"} if action == "unknown_twin" else {}
                nodes.append(register(api, key, gpu=f"GPU {len(nodes)}", **extra))
            elif action == "beat" and nodes:
                beat(api, *nodes[-1])
            elif action in ("token", "token_puppet") and nodes:
                node_id = nodes[len(tokens) % len(nodes)][0]
                status, body = api.post(
                    "/api/tokens",
                    {"node_id": node_id},
                    auth=key if action == "token_puppet" else None,
                    REMOTE_ADDR=HOME,
                )
                if status == 201:
                    tokens.append((node_id, body))
            elif action == "use" and tokens:
                for node_id, secret in nodes:
                    mine = [t["jti"] for nid, t in tokens if nid == node_id]
                    if mine:
                        report(api, node_id, secret, mine)
            elif action == "upload" and tokens:
                node_id, issued = tokens[-1]
                upload(api, issued, node_id)
            elif action == "note" and nodes:
                api.patch(f"/api/nodes/{nodes[-1][0]}", {"tuning_note": "n" * 3000}, auth=key, REMOTE_ADDR=HOME)
            # Days pass: every node the person runs has been seen alive for weeks.
            Node.objects.filter(pk__in=[n for n, _ in nodes]).update(alive_days=30)
        from tracker.scoring import refresh_scores

        refresh_scores([n for n, _ in nodes])
        for key in keys:
            assert tier(api, key) == "limited", actions
    finally:
        transaction.savepoint_rollback(sid)

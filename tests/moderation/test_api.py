"""Abuse reports, the abuse contact, filter rules and agents' flags, through the API."""

import json
import re

import pytest

from moderation.models import AbuseReport, FilterRule, ModerationFlag

pytestmark = pytest.mark.django_db


def report(api, body, **kw):
    return api.post("/api/abuse/report", body, **kw)


def test_a_report_is_accepted_for_a_person_to_review(api, live_node, settings):
    settings.ABUSE_CONTACT = "abuse@example.org"
    node, _ = live_node
    status, body = report(
        api,
        {"subject_kind": "node_id", "subject_id": node.pk, "reason": "serves spam", "evidence": "see the replay"},
        REMOTE_ADDR="203.0.113.50",
    )
    assert status == 202 and body["ok"] is True and body["contact"] == "abuse@example.org"
    assert "nothing is banned automatically" in body["note"]
    stored = AbuseReport.objects.get(pk=body["report_id"])
    assert stored.state == "open" and stored.reason == "serves spam"
    assert "203.0.113.50" not in stored.reporter_hash and len(stored.reporter_hash) == 64
    # A report changes nothing by itself.
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200


def test_other_subjects_need_no_id(api, db):
    assert report(api, {"subject_kind": "other", "reason": "a general concern"})[0] == 202


@pytest.mark.parametrize(
    "body, field",
    [
        ({"subject_kind": "planet", "subject_id": "x", "reason": "r"}, "subject_kind"),
        ({"subject_kind": "node_id", "subject_id": "x", "reason": ""}, "reason"),
        ({"subject_kind": "node_id", "subject_id": "x", "reason": "   "}, "reason"),
        ({"subject_kind": "node_id", "subject_id": "x", "reason": "r" * 2001}, "reason"),
        ({"subject_kind": "node_id", "subject_id": "x", "reason": "r", "evidence": "e" * 4001}, "evidence"),
        ({"subject_kind": "node_id", "reason": "r"}, "subject_id"),
        ({"subject_kind": "node_id", "subject_id": 5, "reason": "r"}, "subject_id"),
        ({"subject_kind": "node_id", "subject_id": "x", "reason": "r", "ban": True}, "ban"),
    ],
)
def test_bad_reports_are_400_naming_the_field(api, db, body, field):
    status, err = report(api, body)
    assert status == 400 and err["field"] == field
    assert not AbuseReport.objects.exists()


def test_non_object_and_oversized_reports(api, db, settings):
    assert api.call("post", "/api/abuse/report", raw="[1]")[1]["code"] == "invalid_json"
    big = json.dumps({"subject_kind": "other", "reason": "r" * (settings.API_MAX_BODY_BYTES + 10)})
    status, err = api.call("post", "/api/abuse/report", raw=big)
    assert status == 413 and err["code"] == "body_too_large"


def test_the_eleventh_report_from_an_address_in_a_day_is_429(api, db):
    for _ in range(10):
        assert report(api, {"subject_kind": "other", "reason": "r"}, REMOTE_ADDR="192.0.2.77")[0] == 202
    status, err = report(api, {"subject_kind": "other", "reason": "r"}, REMOTE_ADDR="192.0.2.77")
    assert status == 429 and 1 <= int(api.last["Retry-After"]) <= 86400
    assert report(api, {"subject_kind": "other", "reason": "r"}, REMOTE_ADDR="192.0.2.78")[0] == 202


def test_abuse_contact_and_policy_page(api, client, settings):
    settings.ABUSE_CONTACT = "abuse@example.org"
    assert api.get("/api/abuse-contact")[1] == {"schema_version": 1, "contact": "abuse@example.org"}
    page = client.get("/policy").content.decode()
    for phrase in (
        "CSAM",
        "terrorism",
        "illegal",
        "reviewed by a person",
        "no automatic bans",
        "Appeals",
        "abuse@example.org",
    ):
        assert phrase in page


def test_filter_rules_are_served_to_agents_only(api, live_node):
    node, secret = live_node
    assert api.get("/api/filter-rules")[0] == 401
    status, body = api.get("/api/filter-rules", auth=secret)
    assert status == 200 and body["version"] >= 1
    ids = {r["id"] for r in body["rules"]}
    assert {"builtin-csam-en", "builtin-csam-ja", "builtin-terrorism-en", "builtin-cbrn-ja"} <= ids
    assert set(body["rules"][0]) == {"id", "pattern", "flags", "category", "reason"}
    FilterRule.objects.filter(pk="builtin-csam-ja").update(enabled=False)
    assert "builtin-csam-ja" not in {r["id"] for r in api.get("/api/filter-rules", auth=secret)[1]["rules"]}


def test_the_built_in_rules_are_the_agents_built_in_rules(db):
    """Agents that cannot reach a tracker fall back to their own copy: the two lists must not drift."""
    from node_agent.policy import DEFAULT_RULES

    tracker_rules = [FilterRule.objects.get(pk=r["id"]).as_wire() for r in DEFAULT_RULES]
    assert tracker_rules == [{k: r[k] for k in ("id", "pattern", "flags", "category", "reason")} for r in DEFAULT_RULES]
    for rule in tracker_rules:
        re.compile(rule["pattern"])


def test_agents_report_flags_linked_to_the_token_holder(api, live_node, taster):
    node, secret = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)
    status, body = api.post(
        "/api/moderation/flags",
        {"jti": issued["jti"], "stage": "output", "categories": ["violence"], "mode": "plain"},
        auth=secret,
    )
    assert status == 202 and body["ok"] is True
    flag = ModerationFlag.objects.get(pk=body["flag_id"])
    assert flag.contributor_id == taster.id and flag.node_id == node.pk and flag.categories == ["violence"]
    # A jti this tracker did not issue for the node is recorded without a holder.
    _, body = api.post("/api/moderation/flags", {"jti": "unknown", "stage": "input"}, auth=secret)
    assert ModerationFlag.objects.get(pk=body["flag_id"]).contributor_id is None


@pytest.mark.parametrize(
    "body, field",
    [
        ({"stage": "input"}, "jti"),
        ({"jti": "j", "stage": "middle"}, "stage"),
        ({"jti": "j", "stage": "input", "categories": "violence"}, "categories"),
        ({"jti": "j", "stage": "input", "categories": ["x"] * 21}, "categories"),
        ({"jti": "j", "stage": "input", "text": "the prompt"}, "text"),
    ],
)
def test_bad_flags_are_400(api, live_node, body, field):
    node, secret = live_node
    status, err = api.post("/api/moderation/flags", body, auth=secret)
    assert status == 400 and err["field"] == field


def test_flags_need_a_node_secret(api, live_node, owner):
    assert api.post("/api/moderation/flags", {"jti": "j", "stage": "input"}, auth=owner.key)[0] == 401

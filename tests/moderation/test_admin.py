"""The moderators' workspace, through Django's test client: as a staff moderator, and as anonymous (refused)."""

import pytest
from django.urls import reverse

from moderation.models import AbuseReport, FilterRule, ModerationAction
from nodes.models import Node
from tests import factories
from tracker.models import Ban, Counter

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, moderator):
    client.force_login(moderator)
    return client


@pytest.fixture
def reported(api, live_node):
    node, _ = live_node
    for reason in ("serves spam", "still spam"):
        api.post(
            "/api/abuse/report",
            {"subject_kind": "node_id", "subject_id": node.pk, "reason": reason},
            REMOTE_ADDR="203.0.113.9",
        )
    return node, AbuseReport.objects.order_by("created_at").first()


@pytest.mark.parametrize(
    "name, args",
    [
        ("admin:moderation_abusereport_changelist", []),
        ("admin:moderation-dashboard", []),
        ("admin:moderation_moderationaction_changelist", []),
        ("admin:moderation_filterrule_changelist", []),
        ("admin:nodes_node_changelist", []),
    ],
)
def test_anonymous_and_non_staff_visitors_are_refused(client, django_user_model, name, args):
    url = reverse(name, args=args)
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(django_user_model.objects.create_user("visitor", password="visitor-pass-123"))
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_reports_show_their_subject_and_count_but_never_the_reporter(staff, reported):
    node, report = reported
    listing = staff.get(reverse("admin:moderation_abusereport_changelist")).content.decode()
    assert node.pk in listing
    page = staff.get(reverse("admin:moderation_abusereport_change", args=[report.pk])).content.decode()
    assert reverse("admin:nodes_node_change", args=[node.pk]) in page
    assert report.reporter_hash not in page and report.reporter_hash[:12] not in page
    assert "other reports on this subject" in page.lower()


def test_taking_a_node_down_asks_for_a_reason_then_records_it(staff, reported, api, moderator):
    node, report = reported
    url = reverse("admin:moderation_abusereport_changelist")
    ask = staff.post(url, {"action": "take_the_node_down", "_selected_action": [report.pk]})
    assert ask.status_code == 200 and b"reason" in ask.content and not ModerationAction.objects.exists()
    refused = staff.post(
        url, {"action": "take_the_node_down", "_selected_action": [report.pk], "apply": "1", "reason": "  "}
    )
    assert refused.status_code == 200 and not ModerationAction.objects.exists()
    done = staff.post(
        url,
        {"action": "take_the_node_down", "_selected_action": [report.pk], "apply": "1", "reason": "confirmed spam rig"},
    )
    assert done.status_code == 302
    action = ModerationAction.objects.get()
    assert (action.moderator, action.action, action.subject_id, action.reason) == (
        moderator,
        "take_down",
        node.pk,
        "confirmed spam rig",
    )
    assert action.report == report
    report.refresh_from_db()
    assert report.state == "actioned"
    assert api.get(f"/api/nodes/{node.pk}")[0] == 404


def test_banning_from_a_report_for_some_days(staff, reported):
    node, report = reported
    staff.post(
        reverse("admin:moderation_abusereport_changelist"),
        {
            "action": "ban_the_subject",
            "_selected_action": [report.pk],
            "apply": "1",
            "reason": "repeat offender",
            "days": "14",
        },
    )
    ban = Ban.objects.get()
    assert ban.kind == "node" and ban.value == node.pk and ban.expires_at is not None
    assert ModerationAction.objects.get().details["days"] == 14


def test_dismissing_is_a_decision_too(staff, reported):
    _, report = reported
    staff.post(
        reverse("admin:moderation_abusereport_changelist"),
        {"action": "dismiss", "_selected_action": [report.pk], "apply": "1", "reason": "not abuse"},
    )
    report.refresh_from_db()
    assert report.state == "dismissed" and ModerationAction.objects.get().action == "dismiss"


def test_the_audit_log_cannot_be_edited_or_deleted(staff, reported):
    node, _ = reported
    from moderation import services

    action = services.take_down(node=node, moderator=services.Moderator(None, "ops"), reason="x")
    change = reverse("admin:moderation_moderationaction_change", args=[action.pk])
    assert staff.post(change, {"reason": "rewritten"}).status_code == 403
    assert (
        staff.post(reverse("admin:moderation_moderationaction_delete", args=[action.pk]), {"post": "yes"}).status_code
        == 403
    )
    action.refresh_from_db()
    assert action.reason == "x"
    assert b"Delete" not in staff.get(reverse("admin:moderation_moderationaction_changelist")).content


def test_contributor_bans_and_lifting_from_the_admin(staff, taster, api, live_node):
    node, _ = live_node
    url = reverse("admin:tracker_contributor_changelist")
    staff.post(
        url,
        {
            "action": "ban_contributor",
            "_selected_action": [taster.id],
            "apply": "1",
            "reason": "harassment",
            "days": "",
        },
    )
    assert api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)[1]["code"] == "banned"
    staff.post(
        url,
        {"action": "lift_contributor_bans", "_selected_action": [taster.id], "apply": "1", "reason": "appeal accepted"},
    )
    assert api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)[0] == 201
    assert list(ModerationAction.objects.order_by("created_at").values_list("action", flat=True)) == ["ban", "unban"]
    page = staff.get(reverse("admin:tracker_contributor_change", args=[taster.id])).content.decode()
    assert taster.contributor.key_hash not in page


def test_filter_rules_are_validated_and_each_edit_bumps_the_version(staff, live_node, api):
    node, secret = live_node
    before = Counter.objects.get(name="filter_rules").value
    add = reverse("admin:moderation_filterrule_add")
    bad = staff.post(
        add, {"id": "broken", "pattern": "(unclosed", "flags": "i", "category": "x", "reason": "x", "enabled": "on"}
    )
    assert bad.status_code == 200 and b"not a valid regular expression" in bad.content
    assert not FilterRule.objects.filter(pk="broken").exists()
    bad_flags = staff.post(add, {"id": "flags", "pattern": "x", "flags": "q", "category": "x", "reason": "x"})
    assert b"unknown flag letters" in bad_flags.content
    ok = staff.post(
        add,
        {
            "id": "no-crypto-scams",
            "pattern": r"\bguaranteed\W+crypto\W+returns\b",
            "flags": "i",
            "category": "fraud",
            "reason": "investment fraud",
            "enabled": "on",
        },
    )
    assert ok.status_code == 302
    assert Counter.objects.get(name="filter_rules").value == before + 1
    answer = factories.heartbeat(api, node, secret)
    assert answer["filter_rules_version"] == before + 1
    assert "no-crypto-scams" in {r["id"] for r in api.get("/api/filter-rules", auth=secret)[1]["rules"]}
    staff.post(reverse("admin:moderation_filterrule_delete", args=["no-crypto-scams"]), {"post": "yes"})
    assert Counter.objects.get(name="filter_rules").value == before + 2


def test_the_dashboard_shows_open_reports_flags_and_recent_actions(staff, reported, live_node, api):
    from moderation import services

    node, secret = live_node
    api.post("/api/moderation/flags", {"jti": "j1", "stage": "output", "categories": ["violence"]}, auth=secret)
    services.revoke_tokens(node=node, moderator=services.Moderator(None, "ops-bob"), reason="precaution")
    page = staff.get(reverse("admin:moderation-dashboard")).content.decode()
    assert "Open reports by age" in page and "under 1 hour" in page
    assert "serves spam" in page
    assert "Flags from agents in the last 24 hours: 1" in page and "violence" in page
    assert "ops-bob" in page and "revoke_tokens" in page


def test_nodes_can_be_taken_down_and_restored_from_their_admin(staff, live_node, api):
    node, _ = live_node
    url = reverse("admin:nodes_node_changelist")
    staff.post(url, {"action": "take_down", "_selected_action": [node.pk], "apply": "1", "reason": "r1"})
    assert Node.objects.get(pk=node.pk).taken_down_at is not None
    staff.post(url, {"action": "restore", "_selected_action": [node.pk], "apply": "1", "reason": "r2"})
    assert Node.objects.get(pk=node.pk).taken_down_at is None
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200

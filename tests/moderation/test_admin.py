"""The moderators' workspace, through Django's test client: as a staff moderator, and as anonymous (refused)."""

import re

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from moderation.addresses import address_label
from moderation.models import AbuseReport, FilterRule, ModerationAction, ModerationFlag
from nodes.models import Node
from tests import factories
from tracker.models import Ban, Counter, TastingToken

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


ABUSER, SOMEONE_ELSE = "198.51.100.20", "198.51.100.21"


def decide(staff, changelist: str, action: str, pk, reason: str, **extra):
    """Run an admin action through its reason page, as a moderator does: pick, fill in, apply."""
    url = reverse(changelist)
    ask = staff.post(url, {"action": action, "_selected_action": [pk]})
    assert ask.status_code == 200 and b"reason" in ask.content, ask.content[:300]
    return staff.post(url, {"action": action, "_selected_action": [pk], "apply": "1", "reason": reason, **extra})


def assert_append_only(staff, action: ModerationAction):
    """The row a decision wrote can be neither edited nor deleted from the admin."""
    reason = action.reason
    change = reverse("admin:moderation_moderationaction_change", args=[quote(action.pk)])
    assert staff.post(change, {"reason": "rewritten"}).status_code == 403
    delete = reverse("admin:moderation_moderationaction_delete", args=[quote(action.pk)])
    assert staff.post(delete, {"post": "yes"}).status_code == 403
    action.refresh_from_db()
    assert action.reason == reason


@pytest.fixture
def flagged(api, live_node):
    """An anonymous tasting from ABUSER whose prompt the node's moderation hook flagged."""
    node, secret = live_node
    status, issued = api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR=ABUSER)
    assert status == 201
    status, body = api.post(
        "/api/moderation/flags", {"jti": issued["jti"], "stage": "input", "categories": ["violence"]}, auth=secret
    )
    assert status == 202
    return node, issued, ModerationFlag.objects.get(pk=body["flag_id"])


@pytest.mark.parametrize(
    "name, args",
    [
        ("admin:moderation_abusereport_changelist", []),
        ("admin:moderation-dashboard", []),
        ("admin:moderation_moderationaction_changelist", []),
        ("admin:moderation_filterrule_changelist", []),
        ("admin:nodes_node_changelist", []),
        ("admin:moderation_moderationflag_changelist", []),
        ("admin:tracker_ban_changelist", []),
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
    page = staff.get(reverse("admin:moderation_abusereport_change", args=[quote(report.pk)])).content.decode()
    assert reverse("admin:nodes_node_change", args=[quote(node.pk)]) in page
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
    change = reverse("admin:moderation_moderationaction_change", args=[quote(action.pk)])
    assert staff.post(change, {"reason": "rewritten"}).status_code == 403
    assert (
        staff.post(
            reverse("admin:moderation_moderationaction_delete", args=[quote(action.pk)]), {"post": "yes"}
        ).status_code
        == 403
    )
    action.refresh_from_db()
    assert action.reason == "x"
    assert b"Delete" not in staff.get(reverse("admin:moderation_moderationaction_changelist")).content


def test_contributor_bans_and_lifting_from_the_admin(staff, taster, api, live_node):
    node, _ = live_node
    url = reverse("admin:nodes_contributor_changelist")
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
    page = staff.get(reverse("admin:nodes_contributor_change", args=[quote(taster.id)])).content.decode()
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
            "change_reason": "scam wave",  # every rule edit is an audited decision (test_admin_hardening.py)
        },
    )
    assert ok.status_code == 302
    assert Counter.objects.get(name="filter_rules").value == before + 1
    answer = factories.heartbeat(api, node, secret)
    assert answer["filter_rules_version"] == before + 1
    assert "no-crypto-scams" in {r["id"] for r in api.get("/api/filter-rules", auth=secret)[1]["rules"]}
    decide(staff, "admin:moderation_filterrule_changelist", "delete_the_rules", "no-crypto-scams", "wave over")
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
    # Every report link opens that report, whatever its id (the admin reads `_40` in a URL as `@`).
    AbuseReport.objects.create(id="r_40ab5f2f3a3b2c1d", subject_kind="other", reason="odd id", reporter_hash="0" * 64)
    page = staff.get(reverse("admin:moderation-dashboard")).content.decode()
    for href in re.findall(r'href="(/admin/moderation/abusereport/[^"]+/change/)"', page):
        assert staff.get(href).status_code == 200, href


def test_nodes_can_be_taken_down_and_restored_from_their_admin(staff, live_node, api):
    node, _ = live_node
    url = reverse("admin:nodes_node_changelist")
    staff.post(url, {"action": "take_down", "_selected_action": [node.pk], "apply": "1", "reason": "r1"})
    assert Node.objects.get(pk=node.pk).taken_down_at is not None
    staff.post(url, {"action": "restore", "_selected_action": [node.pk], "apply": "1", "reason": "r2"})
    assert Node.objects.get(pk=node.pk).taken_down_at is None
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200


def test_marking_a_report_as_reviewing_is_recorded_and_changes_nothing_else(staff, reported, api, moderator):
    node, report = reported
    done = decide(staff, "admin:moderation_abusereport_changelist", "mark_as_reviewing", report.pk, "looking into it")
    assert done.status_code == 302
    report.refresh_from_db()
    assert report.state == "reviewing" and report.is_open
    action = ModerationAction.objects.get()
    assert (action.moderator, action.action, action.subject_kind, action.subject_id, action.report) == (
        moderator,
        "review",
        "report",
        report.pk,
        report,
    )
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200
    assert_append_only(staff, action)


def test_revoking_the_reported_nodes_tokens_tells_its_agent(staff, reported, api, live_node, moderator):
    node, report = reported
    _, secret = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk})
    done = decide(staff, "admin:moderation_abusereport_changelist", "revoke_the_node's_tokens", report.pk, "leaked")
    assert done.status_code == 302
    assert factories.heartbeat(api, node, secret)["revoked_jtis"] == [issued["jti"]]
    status, _ = api.post("/api/replay/timing", {"node_id": node.pk, "tok_per_sec": 1.0}, auth=issued["upload_key"])
    assert status == 401
    action = ModerationAction.objects.get()
    assert (action.moderator, action.action, action.subject_id, action.details) == (
        moderator,
        "revoke_tokens",
        node.pk,
        {"tokens_revoked": 1},
    )
    report.refresh_from_db()
    assert report.state == "actioned" and action.report == report
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200  # the node stays listed: only its tokens stop working
    assert_append_only(staff, action)


def assert_never_shown(page: str, ip_hash: str):
    # Not the hash, nor the 16-digit prefix that anonymous tokens carry as `anon:` nor any shorter one.
    assert ip_hash[:8] not in page and ip_hash[-8:] not in page


def test_a_flagged_anonymous_address_is_banned_from_the_admin_and_stays_out(staff, api, flagged, moderator):
    node, issued, flag = flagged
    ip_hash = TastingToken.objects.get(jti=issued["jti"]).ip_hash
    label = address_label(ip_hash)
    listing = staff.get(reverse("admin:moderation_moderationflag_changelist")).content.decode()
    assert f"anonymous, {label}" in listing
    assert_never_shown(listing, ip_hash)

    done = decide(staff, "admin:moderation_moderationflag_changelist", "ban_the_address", flag.pk, "threats", days="30")
    assert done.status_code == 302
    ban = Ban.objects.get()
    assert (ban.kind, ban.value, ban.reason) == ("ip", ip_hash, "threats") and ban.expires_at is not None
    action = ModerationAction.objects.get()
    assert (action.moderator, action.action, action.subject_kind, action.subject_id, action.details) == (
        moderator,
        "ban",
        "ip",
        label,
        {"flag_id": flag.pk, "jti": issued["jti"], "days": 30},
    )
    assert_append_only(staff, action)

    status, body = api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR=ABUSER)
    assert (status, body["code"], body["ban"]["kind"], body["ban"]["reason"]) == (403, "banned", "ip", "threats")
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR=SOMEONE_ELSE)[0] == 201

    for url in (
        reverse("admin:tracker_ban_changelist"),
        reverse("admin:tracker_ban_change", args=[quote(ban.pk)]),
        reverse("admin:tracker_ban_history", args=[quote(ban.pk)]),
        reverse("admin:moderation_moderationaction_changelist"),
        reverse("admin:moderation-dashboard"),
    ):
        page = staff.get(url)
        assert page.status_code == 200, url
        assert_never_shown(page.content.decode(), ip_hash)
    assert label in staff.get(reverse("admin:tracker_ban_change", args=[quote(ban.pk)])).content.decode()
    lift = staff.post(reverse("admin:tracker_ban_changelist"), {"action": "lift_ban", "_selected_action": [ban.pk]})
    assert label in lift.content.decode()
    assert_never_shown(lift.content.decode(), ip_hash)

    decide(staff, "admin:tracker_ban_changelist", "lift_ban", ban.pk, "appeal accepted")
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR=ABUSER)[0] == 201
    assert ModerationAction.objects.filter(action="unban", subject_id=label, details__bans_lifted=1).exists()


def test_banning_the_holder_of_a_flagged_token(staff, api, flagged, live_node, taster):
    """The contributor when the token was a contributor's, else the address it was issued to."""
    node, issued, anonymous = flagged
    _, secret = live_node
    _, own = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key, REMOTE_ADDR=SOMEONE_ELSE)
    _, body = api.post("/api/moderation/flags", {"jti": own["jti"], "stage": "output"}, auth=secret)
    known = ModerationFlag.objects.get(pk=body["flag_id"])
    changelist = "admin:moderation_moderationflag_changelist"

    assert decide(staff, changelist, "ban_the_token_holder", known.pk, "abusive prompts").status_code == 302
    assert decide(staff, changelist, "ban_the_token_holder", anonymous.pk, "abusive prompts").status_code == 302
    bans = {(b.kind, b.value) for b in Ban.objects.all()}
    assert bans == {("contributor", taster.id), ("ip", TastingToken.objects.get(jti=issued["jti"]).ip_hash)}
    assert list(ModerationAction.objects.values_list("action", flat=True)) == ["ban", "ban"]
    assert api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)[1]["code"] == "banned"
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR=ABUSER)[1]["code"] == "banned"
    # The contributor's own address was not banned: an anonymous visitor from there still gets a token.
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR=SOMEONE_ELSE)[0] == 201


def test_a_flag_naming_a_token_the_tracker_never_issued_bans_nobody(staff, api, live_node):
    _, secret = live_node
    _, body = api.post("/api/moderation/flags", {"jti": "made-up-jti", "stage": "input"}, auth=secret)
    flag = ModerationFlag.objects.get(pk=body["flag_id"])
    listing = staff.get(reverse("admin:moderation_moderationflag_changelist")).content.decode()
    assert "unknown (no token with this jti" in listing
    for action in ("ban_the_token_holder", "ban_the_address"):
        answer = decide(staff, "admin:moderation_moderationflag_changelist", action, flag.pk, "x")
        assert answer.status_code == 302
        shown = [m.message for m in answer.wsgi_request._messages]
        assert any("issued no token" in m for m in shown)
    assert not Ban.objects.exists() and not ModerationAction.objects.exists()


def test_subject_links_survive_ids_that_look_like_admin_escapes(staff, owner):
    """The admin escapes `_` in URLs (`_40` means `@`): an id like c_40ab… must still link to its own page."""
    from moderation.admin.links import subject_link
    from nodes.models import Contributor

    odd = Contributor.objects.create(id="c_40ab5f2f3a", handle="odd", key_hash="x" * 64)
    html = str(subject_link("contributor_id", odd.pk))
    href = re.search(r'href="([^"]+)"', html).group(1)
    page = staff.get(href)
    assert page.status_code == 200 and "c_40ab5f2f3a" in page.content.decode()


def test_a_report_on_a_replay_set_links_to_the_set(staff):
    """Rig against rig keeps answers as one set (`rs_…`); a report naming it links to the set's admin page."""
    from moderation.admin.links import subject_link
    from showcase.models import ReplaySet

    kept = ReplaySet.objects.create(id="rs_40ab5f2f3a0c1d2e")
    html = str(subject_link("content_id", kept.pk))
    assert "replay set rs_40ab5f2f3a0c1d2e" in html and "not found" not in html
    page = staff.get(re.search(r'href="([^"]+)"', html).group(1))
    assert page.status_code == 200 and "rs_40ab5f2f3a0c1d2e" in page.content.decode()

"""The admin, hardened (issue 11): decisions need the model's change permission, not just view; filter-rule
edits land in the moderation audit log like every other decision; admin logins are throttled per username and
address (django-axes), without storing the address."""

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from moderation.models import AbuseReport, FilterRule, ModerationAction
from nodes.models import Node
from tracker.models import Ban, Counter

pytestmark = pytest.mark.django_db


# --- decisions need the change permission ---------------------------------------------------------------


@pytest.fixture
def viewer(client, django_user_model):
    """A staff user who may look at everything the moderators see, and change nothing."""
    user = django_user_model.objects.create_user("viewer", password="viewer-pass-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client.force_login(user)
    return client


@pytest.fixture
def reported(api, live_node):
    node, _ = live_node
    api.post(
        "/api/abuse/report",
        {"subject_kind": "node_id", "subject_id": node.pk, "reason": "serves spam"},
        REMOTE_ADDR="203.0.113.9",
    )
    return node, AbuseReport.objects.get()


def offered_actions(client, changelist: str) -> set[str]:
    page = client.get(reverse(changelist))
    assert page.status_code == 200
    form = page.context.get("action_form")
    return {name for name, _label in form.fields["action"].choices} if form else set()


def apply(client, changelist: str, action: str, pk, **extra):
    return client.post(
        reverse(changelist),
        {"action": action, "_selected_action": [pk], "apply": "1", "reason": "a reason", **extra},
    )


@pytest.mark.parametrize(
    "changelist, action, subject",
    [
        ("admin:nodes_node_changelist", "take_down", "node"),
        ("admin:nodes_node_changelist", "ban_node", "node"),
        ("admin:nodes_node_changelist", "revoke_outstanding_tokens", "node"),
        ("admin:nodes_contributor_changelist", "ban_contributor", "owner"),
        ("admin:moderation_abusereport_changelist", "take_the_node_down", "report"),
        ("admin:moderation_abusereport_changelist", "ban_the_subject", "report"),
        ("admin:moderation_abusereport_changelist", "dismiss", "report"),
    ],
)
def test_a_staff_user_with_view_permission_only_can_take_no_decision(
    viewer, reported, owner, changelist, action, subject
):
    node, report = reported
    pk = {"node": node.pk, "owner": owner.id, "report": report.pk}[subject]
    response = apply(viewer, changelist, action, pk)
    assert response.status_code in (200, 302, 403)
    assert not ModerationAction.objects.exists() and not Ban.objects.exists()
    node.refresh_from_db()
    assert node.taken_down_at is None
    report.refresh_from_db()
    assert report.state == AbuseReport.State.OPEN
    assert action not in offered_actions(viewer, changelist)


def test_lifting_a_ban_needs_the_change_permission_too(viewer, live_node):
    from moderation import services

    node, _ = live_node
    services.ban(kind="node", value=node.pk, moderator=services.Moderator(None, "ops"), reason="malware")
    ban = Ban.objects.get()
    assert "lift_ban" not in offered_actions(viewer, "admin:tracker_ban_changelist")
    apply(viewer, "admin:tracker_ban_changelist", "lift_ban", ban.pk)
    ban.refresh_from_db()
    assert ban.lifted_at is None and ModerationAction.objects.count() == 1


def test_the_change_permission_of_the_admins_model_is_not_enough_to_ban(client, django_user_model, reported):
    """Banning from a report writes a Ban: it needs the Ban's change permission as well as the report's."""
    node, report = reported
    user = django_user_model.objects.create_user("reports-only", password="x-pass-12345", is_staff=True)
    report_type = ContentType.objects.get_for_model(AbuseReport)
    user.user_permissions.add(*Permission.objects.filter(content_type=report_type))
    client.force_login(user)
    changelist = "admin:moderation_abusereport_changelist"
    assert "dismiss" in offered_actions(client, changelist)
    assert "ban_the_subject" not in offered_actions(client, changelist)
    assert "take_the_node_down" not in offered_actions(client, changelist)
    apply(client, changelist, "ban_the_subject", report.pk)
    assert not Ban.objects.exists()
    assert apply(client, changelist, "dismiss", report.pk).status_code == 302
    assert ModerationAction.objects.get().action == "dismiss"


def test_moderators_keep_every_decision(client, moderator, reported):
    node, report = reported
    client.force_login(moderator)
    for changelist, action in (
        ("admin:nodes_node_changelist", "take_down"),
        ("admin:nodes_contributor_changelist", "ban_contributor"),
        ("admin:moderation_abusereport_changelist", "ban_the_subject"),
        ("admin:moderation_moderationflag_changelist", "ban_the_address"),
        ("admin:tracker_ban_changelist", "lift_ban"),
        ("admin:showcase_replay_changelist", "take_the_replay_down"),
        ("admin:moderation_filterrule_changelist", "delete_the_rules"),
    ):
        assert action in offered_actions(client, changelist), (changelist, action)
    assert apply(client, "admin:nodes_node_changelist", "take_down", node.pk).status_code == 302
    assert Node.objects.get(pk=node.pk).taken_down_at is not None


# --- filter-rule edits are decisions: audited -----------------------------------------------------------

RULE = {
    "id": "no-crypto-scams",
    "pattern": r"\bguaranteed\W+crypto\W+returns\b",
    "flags": "i",
    "category": "fraud",
    "reason": "investment fraud",
    "enabled": "on",
}


def test_adding_changing_and_deleting_a_filter_rule_writes_the_audit_log(client, moderator, live_node, api):
    node, secret = live_node
    client.force_login(moderator)
    before = Counter.objects.get(name="filter_rules").value
    add = reverse("admin:moderation_filterrule_add")

    refused = client.post(add, RULE)  # no reason: refused, nothing saved
    assert refused.status_code == 200 and not FilterRule.objects.filter(pk=RULE["id"]).exists()
    assert client.post(add, {**RULE, "change_reason": "scam wave reported by three rigs"}).status_code == 302

    change = reverse("admin:moderation_filterrule_change", args=[RULE["id"]])
    edited = {**RULE, "pattern": r"\bguaranteed\W+(crypto|forex)\W+returns\b", "enabled": ""}
    assert client.post(change, edited).status_code == 200  # no reason again: refused
    assert FilterRule.objects.get(pk=RULE["id"]).enabled
    assert client.post(change, {**edited, "change_reason": "forex too; off while we test"}).status_code == 302

    changelist = reverse("admin:moderation_filterrule_changelist")
    assert (
        client.post(reverse("admin:moderation_filterrule_delete", args=[RULE["id"]]), {"post": "yes"}).status_code
        == 403
    )
    ask = client.post(changelist, {"action": "delete_the_rules", "_selected_action": [RULE["id"]]})
    assert ask.status_code == 200 and b"reason" in ask.content and FilterRule.objects.filter(pk=RULE["id"]).exists()
    done = client.post(
        changelist,
        {"action": "delete_the_rules", "_selected_action": [RULE["id"]], "apply": "1", "reason": "scam wave over"},
    )
    assert done.status_code == 302 and not FilterRule.objects.filter(pk=RULE["id"]).exists()

    log = list(ModerationAction.objects.order_by("created_at"))
    assert [(a.action, a.subject_kind, a.subject_id, a.moderator) for a in log] == [
        ("add_rule", "filter_rule", RULE["id"], moderator),
        ("change_rule", "filter_rule", RULE["id"], moderator),
        ("delete_rule", "filter_rule", RULE["id"], moderator),
    ]
    assert [a.reason for a in log] == [
        "scam wave reported by three rigs",
        "forex too; off while we test",
        "scam wave over",
    ]
    assert log[0].details["after"]["pattern"] == RULE["pattern"]
    assert log[1].details["before"]["enabled"] is True and log[1].details["after"]["enabled"] is False
    assert "forex" in log[1].details["after"]["pattern"]
    assert log[2].details["before"]["id"] == RULE["id"]
    # Each edit reached the agents as a new rules version.
    assert Counter.objects.get(name="filter_rules").value == before + 3
    assert api.get("/api/filter-rules", auth=secret)[1]["version"] == before + 3


def test_a_rules_id_cannot_be_changed_into_a_second_rule(client, moderator):
    client.force_login(moderator)
    client.post(reverse("admin:moderation_filterrule_add"), {**RULE, "change_reason": "new"})
    change = reverse("admin:moderation_filterrule_change", args=[RULE["id"]])
    client.post(change, {**RULE, "id": "renamed", "change_reason": "rename"})
    assert set(FilterRule.objects.filter(pk__in=[RULE["id"], "renamed"]).values_list("pk", flat=True)) == {RULE["id"]}


# --- admin logins are throttled --------------------------------------------------------------------------


def login(client, username: str, password: str, ip: str):
    return client.post(
        reverse("admin:login"), {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip
    )


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_admin_logins_are_locked_per_username_and_address_after_five_failures(client, moderator, settings):
    from django.test import Client

    codes = [login(client, "moderator", "wrong-password", "198.51.100.30").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]  # the fifth failure locks
    locked = login(client, "moderator", "moderator-pass-123", "198.51.100.30")  # even the right password
    assert locked.status_code == 429 and not logged_in(client)
    # Same address, another person: not locked. Same person, another address: not locked.
    other = Client()
    assert login(other, "moderator", "moderator-pass-123", "198.51.100.31").status_code == 302 and logged_in(other)
    # The lock covers the household: another address of the same IPv6 /64 is the same place.
    for _ in range(5):
        login(Client(), "moderator", "wrong-password", "2001:db8:5:5::1")
    assert login(Client(), "moderator", "moderator-pass-123", "2001:db8:5:5::2").status_code == 429


def test_a_lockout_ends_after_the_cool_off(client, moderator, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt

    for _ in range(5):
        login(client, "moderator", "wrong-password", "198.51.100.32")
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(hours=1))
    assert login(client, "moderator", "moderator-pass-123", "198.51.100.32").status_code == 302


def test_failed_logins_are_kept_without_the_address(client, moderator):
    from axes.models import AccessAttempt

    login(client, "moderator", "wrong-password", "198.51.100.33")
    attempt = AccessAttempt.objects.get()
    assert attempt.username == "moderator"
    assert "198.51.100.33" not in str(attempt.ip_address) and str(attempt.ip_address).startswith("fd")


def test_only_the_admin_login_is_throttled_and_test_logins_still_work(client, moderator, django_user_model):
    assert client.login(username="moderator", password="moderator-pass-123")  # no request: not an admin login
    client.logout()
    client.force_login(moderator)
    assert client.get(reverse("admin:index")).status_code == 200

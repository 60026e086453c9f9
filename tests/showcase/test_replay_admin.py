"""Moderators take replays down and restore them in the admin, each time with a reason that lands in the
audit log; a report about a replay links to it."""

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from moderation.models import AbuseReport, ModerationAction
from showcase.models import Replay
from tracker.models import Ban

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, moderator):
    client.force_login(moderator)
    return client


@pytest.fixture
def replay(api, live_node, publish):
    node, _ = live_node
    status, body = publish(node)
    assert status == 201, body
    return Replay.objects.get(pk=body["id"])


def decide(staff, action: str, replay: Replay, reason: str, **extra):
    return staff.post(
        reverse("admin:showcase_replay_changelist"),
        {"action": action, "_selected_action": [replay.pk], "apply": "1", "reason": reason, **extra},
    )


def test_a_moderator_sees_replays_but_cannot_edit_or_delete_them(staff, replay):
    listing = staff.get(reverse("admin:showcase_replay_changelist"))
    assert listing.status_code == 200 and replay.pk in listing.content.decode()
    page = staff.get(reverse("admin:showcase_replay_change", args=[quote(replay.pk)])).content.decode()
    assert replay.prompt in page and replay.public_url in page and "0 report(s)" in page
    assert replay.ip_hash not in page  # the publisher's address hash is never shown
    assert staff.get(reverse("admin:showcase_replay_delete", args=[quote(replay.pk)])).status_code == 403
    assert staff.get(reverse("admin:showcase_replay_add")).status_code == 403


def test_taking_a_replay_down_in_the_admin_asks_for_a_reason_and_records_it(staff, api, replay, moderator):
    ask = staff.post(
        reverse("admin:showcase_replay_changelist"),
        {"action": "take_the_replay_down", "_selected_action": [replay.pk]},
    )
    assert ask.status_code == 200 and b"reason" in ask.content and not ModerationAction.objects.exists()
    assert decide(staff, "take_the_replay_down", replay, "  ").status_code == 200  # refused: no reason
    assert api.get(f"/api/replays/{replay.pk}")[0] == 200

    assert decide(staff, "take_the_replay_down", replay, "personal data in the prompt").status_code == 302
    assert api.get(f"/api/replays/{replay.pk}")[1]["code"] == "replay_not_found"
    action = ModerationAction.objects.get()
    assert (action.moderator, action.action, action.subject_kind, action.subject_id, action.reason) == (
        moderator,
        "take_down",
        "replay",
        replay.pk,
        "personal data in the prompt",
    )

    assert decide(staff, "restore_the_replay", replay, "the data was fictional").status_code == 302
    assert api.get(f"/api/replays/{replay.pk}")[0] == 200
    assert ModerationAction.objects.filter(action="restore", subject_id=replay.pk, moderator=moderator).exists()


def test_banning_the_publisher_of_an_anonymous_replay_bans_its_address(staff, api, replay, live_node):
    decide(staff, "ban_the_publisher", replay, "spam replays", days="7")
    ban = Ban.objects.get()
    assert ban.kind == "ip" and ban.value == replay.ip_hash and ban.reason == "spam replays"
    node, _ = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk})  # the test client's address, now banned
    assert issued["code"] == "banned"


def test_a_report_about_a_replay_links_to_it(staff, api, replay):
    status, filed = api.post(
        "/api/abuse/report", {"subject_kind": "content_id", "subject_id": replay.pk, "reason": "doxxing"}
    )
    assert status == 202, filed
    report = AbuseReport.objects.get(pk=filed["report_id"])
    answer = staff.get(reverse("admin:moderation_abusereport_change", args=[quote(report.pk)]))
    page = answer.content.decode()
    assert answer.status_code == 200 and page, (answer.status_code, dict(answer.headers))
    assert reverse("admin:showcase_replay_change", args=[quote(replay.pk)]) in page
    response = staff.get(reverse("admin:showcase_replay_change", args=[quote(replay.pk)]))
    assert response.status_code == 200 and "1 report(s)" in response.content.decode(), response

"""Published replays in the moderators' workspace: read-only rows, and actions that each ask for a reason
and write an audit row (take down, restore, ban the publisher)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from moderation import services as moderation
from moderation.admin import decision_action
from moderation.models import AbuseReport
from showcase import services
from showcase.models import Replay
from tracker.models import Ban


def _ban_publisher(replay, moderator, reason, days):
    """The contributor who published it, or, for an anonymous token, the address it came from."""
    if replay.contributor_id:
        kind, value = Ban.Kind.CONTRIBUTOR, replay.contributor_id
    elif replay.ip_hash:
        kind, value = Ban.Kind.IP, replay.ip_hash
    else:
        raise ValueError("no publisher is known for this replay")
    moderation.ban(kind=kind, value=value, moderator=moderator, reason=reason, days=days)


@admin.register(Replay)
class ReplayAdmin(admin.ModelAdmin):
    list_display = ["id", "published_at", "node", "publisher", "taken_down_at", "prompt_excerpt"]
    list_filter = [("taken_down_at", admin.EmptyFieldListFilter)]
    search_fields = ["id", "node__id", "jti", "prompt"]
    list_select_related = ["node", "contributor"]
    # ip_hash is never shown; the "ban the publisher" action uses it.
    fields = [
        "id",
        "public_page",
        "node",
        "publisher",
        "jti",
        "created_at",
        "published_at",
        "taken_down_at",
        "reports",
        "system",
        "prompt",
        "response",
        "timing",
        "chunk_timestamps",
    ]
    readonly_fields = fields
    actions = [
        decision_action(
            "Take the replay down",
            lambda r, m, why, d: services.take_down_replay(replay=r, moderator=m, reason=why),
        ),
        decision_action(
            "Restore the replay", lambda r, m, why, d: services.restore_replay(replay=r, moderator=m, reason=why)
        ),
        decision_action("Ban the publisher", _ban_publisher, with_days=True),
    ]

    def has_add_permission(self, request):
        return False  # replays are published through the API with a tasting token

    def has_change_permission(self, request, obj=None):
        return False  # a replay is never edited: it is taken down or restored, with a reason

    def has_delete_permission(self, request, obj=None):
        return False  # take down instead: the record stays

    @admin.display(description="prompt")
    def prompt_excerpt(self, obj):
        return obj.prompt[:80]

    @admin.display(description="publisher")
    def publisher(self, obj):
        return obj.contributor or "anonymous"

    @admin.display(description="public page")
    def public_page(self, obj):
        return format_html('<a href="{}">{}</a>', obj.public_url, obj.public_url)

    @admin.display(description="reports")
    def reports(self, obj):
        n = AbuseReport.objects.filter(subject_kind=AbuseReport.Kind.CONTENT, subject_id=obj.pk).count()
        url = reverse("admin:moderation_abusereport_changelist") + f"?subject_id={obj.pk}"
        return format_html('<a href="{}">{} report(s)</a>', url, n)

"""Published replays in the moderators' workspace: read-only rows, and actions that each ask for a reason
and write an audit row (take down, restore, ban the publisher)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from moderation import services as moderation
from moderation.admin.decisions import decision_action
from moderation.models import AbuseReport
from showcase import services
from showcase.models import Replay, ReplaySet
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


def _reports_link(content_id: str):
    """The abuse reports naming this replay or set (`content_id`), as a link to them."""
    n = AbuseReport.objects.filter(subject_kind=AbuseReport.Kind.CONTENT, subject_id=content_id).count()
    url = reverse("admin:moderation_abusereport_changelist") + f"?subject_id={content_id}"
    return format_html('<a href="{}">{} report(s)</a>', url, n)


class PublishedContentMixin:
    """What replays and sets both show: the public page, and the reports naming them."""

    @admin.display(description="public page")
    def public_page(self, obj):
        return format_html('<a href="{}">{}</a>', obj.public_url, obj.public_url)

    @admin.display(description="reports")
    def reports(self, obj):
        return _reports_link(obj.pk)


@admin.register(Replay)
class ReplayAdmin(PublishedContentMixin, admin.ModelAdmin):
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
        "replay_set",
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


class SetMemberInline(admin.TabularInline):
    model = Replay
    fields = ["id", "set_position", "node", "taken_down_at", "prompt_excerpt"]
    readonly_fields = fields
    ordering = ["set_position"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="prompt")
    def prompt_excerpt(self, obj):
        return obj.prompt[:80]


@admin.register(ReplaySet)
class ReplaySetAdmin(PublishedContentMixin, admin.ModelAdmin):
    """Rig against rig: a set groups published replays. Taking it down takes its replays down too (an audit row
    for each), since a report names what they show together."""

    list_display = ["id", "published_at", "members", "taken_down_at"]
    list_filter = [("taken_down_at", admin.EmptyFieldListFilter)]
    search_fields = ["id", "replays__id", "replays__node__id"]
    fields = ["id", "public_page", "published_at", "taken_down_at", "reports"]
    readonly_fields = fields
    inlines = [SetMemberInline]
    actions = [
        decision_action(
            "Take the set and its replays down",
            lambda r, m, why, d: services.take_down_replay_set(replay_set=r, moderator=m, reason=why),
        ),
        decision_action(
            "Restore the set and its replays",
            lambda r, m, why, d: services.restore_replay_set(replay_set=r, moderator=m, reason=why),
        ),
    ]

    def has_add_permission(self, request):
        return False  # made through the API, from published replays

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="replays")
    def members(self, obj):
        return obj.replays.count()

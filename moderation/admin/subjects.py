"""The subjects of decisions in the admin, all read-only: nodes (take down, restore, revoke tokens, ban),
contributors (ban) and bans (lift; an address ban never shows its hash)."""

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.urls import reverse
from django.utils.html import format_html

from moderation import services
from moderation.admin.decisions import BAN, DecisionsNeedPermission, Shown, decision_action
from moderation.models import AbuseReport
from nodes.models import Contributor, Node
from tracker.models import Ban


def ban_actions(kind: str) -> list:
    """ "Ban <kind>" (for N days or for good) and "Lift <kind> bans", for the admin of that kind of subject."""
    return [
        decision_action(
            f"Ban {kind}",
            lambda obj, m, why, d: services.ban(kind=kind, value=obj.pk, moderator=m, reason=why, days=d),
            with_days=True,
            needs=BAN,
        ),
        decision_action(
            f"Lift {kind} bans",
            lambda obj, m, why, d: services.unban(kind=kind, value=obj.pk, moderator=m, reason=why),
            needs=BAN,
        ),
    ]


@admin.register(Node)
class NodeAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    list_display = [
        "id",
        "gpu",
        "model_name",
        "quantization",
        "status",
        "reachability",
        "visibility",
        "taken_down_at",
        "banned_until",
        "owner",
    ]
    list_filter = ["status", "reachability", "visibility"]
    search_fields = ["id", "gpu", "model_name", "owner__handle"]
    fields = [
        "id",
        "owner",
        "display_name",
        "reachability",
        "endpoint_url",
        "health_url",
        "relay",
        "tunnel_seen_at",
        "model_name",
        "quantization",
        "gpu",
        "vram_gb",
        "context_length",
        "tags",
        "visibility",
        "tuning_note",
        "availability_note",
        "status",
        "last_seen_at",
        "taken_down_at",
        "banned_until",
        "reports",
    ]
    readonly_fields = fields
    actions = [
        decision_action("Take down", lambda n, m, why, d: services.take_down(node=n, moderator=m, reason=why)),
        decision_action("Restore", lambda n, m, why, d: services.restore(node=n, moderator=m, reason=why)),
        decision_action(
            "Revoke outstanding tokens", lambda n, m, why, d: services.revoke_tokens(node=n, moderator=m, reason=why)
        ),
        *ban_actions(Ban.Kind.NODE),
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # take down instead: the record stays

    @admin.display(description="reports")
    def reports(self, obj):
        n = AbuseReport.objects.filter(subject_kind=AbuseReport.Kind.NODE, subject_id=obj.pk).count()
        url = reverse("admin:moderation_abusereport_changelist") + f"?subject_id={obj.pk}"
        return format_html('<a href="{}">{} report(s)</a>', url, n)


@admin.register(Contributor)
class ContributorAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    list_display = ["id", "handle", "created_at", "score_total", "score_tier"]
    search_fields = ["id", "handle"]
    fields = ["id", "handle", "created_at", "score_total", "score_tier", "score_components", "timing_shared"]
    readonly_fields = fields  # the key hash is never shown
    actions = ban_actions(Ban.Kind.CONTRIBUTOR)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Ban)
class BanAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    list_display = ["kind", "shown_value", "reason", "created_at", "expires_at", "lifted_at", "active"]
    list_filter = ["kind"]
    fields = ["kind", "shown_value", "reason", "created_at", "expires_at", "lifted_at"]
    readonly_fields = fields
    actions = [
        decision_action(
            "Lift ban",
            lambda b, m, why, d: services.unban(
                kind=b.kind, value=b.value, moderator=m, reason=why, hashed=b.kind == Ban.Kind.IP
            ),
        )
    ]

    def has_add_permission(self, request):
        return False  # bans are made through the actions and commands, which write the audit log

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="subject")
    def shown_value(self, obj):
        return services.shown_subject(obj.kind, obj.value)

    def describe(self, obj) -> str:
        # Ban.__str__ shows the first 16 characters of the value: for an ip ban, of the hash. Wherever the
        # admin would print the object (the decision page, checkbox labels, titles, breadcrumbs), it prints this.
        return f"{obj.kind} ban on {self.shown_value(obj)}"

    def action_checkbox(self, obj):
        return super().action_checkbox(Shown(obj, self.describe(obj)))  # its aria-label names the object

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id)) if object_id else None
        if obj is not None:
            shown = Shown(obj, self.describe(obj))
            extra_context = {**(extra_context or {}), "original": shown, "subtitle": str(shown)}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is not None:
            shown = Shown(obj, self.describe(obj))
            extra_context = {**(extra_context or {}), "object": shown, "title": f"Change history: {shown}"}
        return super().history_view(request, object_id, extra_context)

    @admin.display(boolean=True)
    def active(self, obj):
        return obj.is_active()

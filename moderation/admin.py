"""The moderators' workspace in the Django admin (staff only): reports, actions that each ask for a reason
and write an audit row, the read-only audit log, filter rules, agents' flags, and a dashboard."""

from datetime import timedelta

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from moderation import services
from moderation.addresses import address_label
from moderation.forms import DecisionForm, FilterRuleForm
from moderation.models import AbuseReport, FilterRule, ModerationAction, ModerationFlag
from nodes.models import Node
from tracker.models import Ban, Contributor, TastingToken


class Shown:
    """An object as a moderator may see it on the decision page and in messages: its pk and a label."""

    def __init__(self, obj, label: str):
        self.pk, self.label = obj.pk, label

    def __str__(self) -> str:
        return self.label


def described(modeladmin, obj) -> str:
    # A model admin may say how its objects are shown (BanAdmin: never an IP hash); str() otherwise.
    describe = getattr(modeladmin, "describe", None)
    return describe(obj) if describe else str(obj)


def decision_action(label: str, perform, *, with_days: bool = False, own: str = "change", needs: tuple = ()):
    """An admin action that first asks for a reason (and a ban length), then calls `perform(obj, moderator,
    reason, days)` for each selected object.

    A decision changes things, so seeing the objects is not enough: it needs the `own` permission ("change"
    unless said otherwise) on the admin's model, and the change permission of every model it also writes,
    named in `needs` ("tracker.change_ban" for a ban made from a report). Checked on the user's permissions
    themselves, not the admin's has_change_permission, which says whether the row's fields may be edited
    (never, for bans, flags and replays). `DecisionsNeedPermission` hides what a user may not do; the check
    here refuses it even when asked directly."""

    def permitted(user, model) -> bool:
        opts = model._meta
        return user.has_perms([f"{opts.app_label}.{get_permission_codename(own, opts)}", *needs])

    def action(modeladmin, request, queryset):
        if not permitted(request.user, modeladmin.model):
            raise PermissionDenied
        form = DecisionForm(request.POST if "apply" in request.POST else None, with_days=with_days)
        if "apply" in request.POST and form.is_valid():
            moderator = services.Moderator.of(request.user)
            done, failed = 0, []
            for obj in queryset:
                try:
                    perform(obj, moderator, form.cleaned_data["reason"], form.cleaned_data.get("days"))
                    done += 1
                except (services.UnknownSubject, ValueError) as exc:
                    failed.append(f"{described(modeladmin, obj)}: {exc}")
            modeladmin.message_user(request, f"{label}: {done} done.", messages.SUCCESS)
            for failure in failed:
                modeladmin.message_user(request, failure, messages.ERROR)
            return None
        return TemplateResponse(
            request,
            "admin/moderation/decision.html",
            {
                **modeladmin.admin_site.each_context(request),
                "title": label,
                "label": label,
                "form": form,
                "queryset": [Shown(obj, described(modeladmin, obj)) for obj in queryset],
                "action_name": action.__name__,
                "opts": modeladmin.model._meta,
            },
        )

    action.__name__ = label.lower().replace(" ", "_").replace("/", "_")
    action.short_description = label
    action.permitted = permitted
    return action


class DecisionsNeedPermission:
    """Offer a user only the decisions their permissions allow (see decision_action)."""

    def get_actions(self, request):
        return {
            name: entry
            for name, entry in super().get_actions(request).items()
            if getattr(entry[0], "permitted", None) is None or entry[0].permitted(request.user, self.model)
        }


NODE = ("nodes.change_node",)
BAN = ("tracker.change_ban",)


# --- abuse reports ----------------------------------------------------------------------------------------


def _report_node(report):
    if report.subject_kind != AbuseReport.Kind.NODE:
        raise ValueError("the subject of this report is not a node")
    return services.get_node(report.subject_id)


def _ban_subject(report, moderator, reason, days):
    kinds = {AbuseReport.Kind.NODE: Ban.Kind.NODE, AbuseReport.Kind.CONTRIBUTOR: Ban.Kind.CONTRIBUTOR}
    if report.subject_kind not in kinds:
        raise ValueError("only a node or a contributor can be banned from a report")
    services.ban(
        kind=kinds[report.subject_kind],
        value=report.subject_id,
        moderator=moderator,
        reason=reason,
        days=days,
        report=report,
    )


@admin.register(AbuseReport)
class AbuseReportAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    list_display = ["id", "created_at", "state", "subject_kind", "subject", "other_reports", "reason_excerpt"]
    list_filter = ["state", "subject_kind"]
    search_fields = ["id", "subject_id", "reason"]
    # reporter_hash is deliberately absent from every view: nobody sees who reported.
    fields = [
        "id",
        "state",
        "subject_kind",
        "subject_id",
        "subject",
        "other_reports",
        "reason",
        "evidence",
        "created_at",
        "updated_at",
        "decisions",
    ]
    readonly_fields = [
        "id",
        "state",
        "subject_kind",
        "subject_id",
        "subject",
        "other_reports",
        "reason",
        "evidence",
        "created_at",
        "updated_at",
        "decisions",
    ]
    actions = [
        decision_action(
            "Mark as reviewing",
            lambda r, m, why, d: services.set_report_state(
                report=r, state=AbuseReport.State.REVIEWING, moderator=m, reason=why
            ),
        ),
        decision_action(
            "Dismiss",
            lambda r, m, why, d: services.set_report_state(
                report=r, state=AbuseReport.State.DISMISSED, moderator=m, reason=why
            ),
        ),
        decision_action(
            "Take the node down",
            lambda r, m, why, d: services.take_down(node=_report_node(r), moderator=m, reason=why, report=r),
            needs=NODE,
        ),
        decision_action(
            "Revoke the node's tokens",
            lambda r, m, why, d: services.revoke_tokens(node=_report_node(r), moderator=m, reason=why, report=r),
            needs=NODE,
        ),
        decision_action("Ban the subject", _ban_subject, with_days=True, needs=BAN),
    ]

    def has_add_permission(self, request):
        return False  # reports come from the public form and API

    def has_delete_permission(self, request, obj=None):
        return False  # a report is dismissed, not erased

    def get_queryset(self, request):
        same = (
            AbuseReport.objects.filter(subject_kind=OuterRef("subject_kind"), subject_id=OuterRef("subject_id"))
            .values("subject_kind")
            .annotate(n=Count("id"))
            .values("n")
        )
        return super().get_queryset(request).annotate(same_subject=Coalesce(Subquery(same), 0))

    @admin.display(description="other reports on this subject")
    def other_reports(self, obj):
        return max(0, getattr(obj, "same_subject", 1) - 1)

    @admin.display(description="reason")
    def reason_excerpt(self, obj):
        return obj.reason[:80]

    @admin.display(description="subject")
    def subject(self, obj):
        return subject_link(obj.subject_kind, obj.subject_id)

    @admin.display(description="decisions on this report")
    def decisions(self, obj):
        rows = obj.actions.all()[:20]
        return (
            format_html(
                "<br>".join("{} · {} · {} · {}" for _ in rows),
                *[
                    v
                    for a in rows
                    for v in (a.created_at.strftime("%Y-%m-%d %H:%M"), a.moderator_name, a.action, a.reason[:120])
                ],
            )
            if rows
            else "none yet"
        )

    def get_urls(self):
        return [
            path("dashboard/", self.admin_site.admin_view(self.dashboard), name="moderation-dashboard"),
            *super().get_urls(),
        ]

    def dashboard(self, request):
        now = timezone.now()
        open_reports = AbuseReport.objects.filter(state__in=[AbuseReport.State.OPEN, AbuseReport.State.REVIEWING])
        buckets = [
            ("under 1 hour", timedelta(hours=1)),
            ("1 to 24 hours", timedelta(days=1)),
            ("1 to 7 days", timedelta(days=7)),
            ("older", None),
        ]
        by_age, lower = [], now
        for label, age in buckets:
            qs = open_reports.filter(created_at__lte=lower)
            if age is not None:
                qs = qs.filter(created_at__gt=now - age)
            by_age.append((label, qs.count()))
            lower = now - age if age is not None else lower
        return TemplateResponse(
            request,
            "admin/moderation/dashboard.html",
            {
                **self.admin_site.each_context(request),
                "title": "Moderation dashboard",
                "by_age": by_age,
                "oldest": open_reports.order_by("created_at")[:10],
                "flags": ModerationFlag.objects.filter(created_at__gte=now - timedelta(days=1)).select_related("node")[
                    :50
                ],
                "flags_24h": ModerationFlag.objects.filter(created_at__gte=now - timedelta(days=1)).count(),
                "actions": ModerationAction.objects.all()[:20],
            },
        )


def subject_link(kind: str, value: str):
    if kind in ("node_id", "node") and Node.objects.filter(pk=value).exists():
        return format_html('<a href="{}">node {}</a>', reverse("admin:nodes_node_change", args=[quote(value)]), value)
    if kind in ("contributor_id", "contributor"):
        contributor = Contributor.objects.filter(pk=value).first() or Contributor.objects.filter(handle=value).first()
        if contributor:
            return format_html(
                '<a href="{}">contributor {}</a>',
                reverse("admin:tracker_contributor_change", args=[quote(contributor.pk)]),
                contributor,
            )
    if kind in ("content_id", "replay") and value:
        # showcase owns Replay and ReplaySet and sits above moderation: found through the app registry, never
        # imported. A content id is a replay (`rp_…`) or a rig-against-rig set of replays (`rs_…`).
        for model, word in (("Replay", "replay"), ("ReplaySet", "replay set")):
            rows = apps.get_model("showcase", model)
            if rows.objects.filter(pk=value[:20]).exists():
                change = f"admin:showcase_{model.lower()}_change"
                return format_html('<a href="{}">{} {}</a>', reverse(change, args=[quote(value[:20])]), word, value)
    return format_html("{} {} (not found)", kind, value) if value else "-"


# --- the audit log --------------------------------------------------------------------------------------


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "moderator_name", "action", "subject_kind", "subject_id", "reason", "report"]
    list_filter = ["action", "subject_kind"]
    search_fields = ["subject_id", "moderator_name", "reason"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # append-only: a decision is corrected by a new decision, never by editing the record

    def has_delete_permission(self, request, obj=None):
        return False


# --- filter rules ---------------------------------------------------------------------------------------


@admin.register(FilterRule)
class FilterRuleAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    """Rule edits are moderation decisions: each asks for a reason and writes an audit row with the rule as it
    was and as it became (services.save_filter_rule / delete_filter_rule), and bumps the rules version.
    Deleting goes through an action that asks for the reason; Django's own delete pages are off."""

    form = FilterRuleForm
    list_display = ["id", "category", "enabled", "reason", "updated_at"]
    list_filter = ["category", "enabled"]
    fields = ["id", "pattern", "flags", "category", "reason", "enabled", "change_reason"]
    actions = [
        decision_action(
            "Delete the rules",
            lambda rule, m, why, d: services.delete_filter_rule(rule=rule, moderator=m, reason=why),
            own="delete",
        )
    ]

    def get_readonly_fields(self, request, obj=None):
        # Changing the primary key in the form would save a second rule beside the first.
        return ["id"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False  # through "Delete the rules", which asks for a reason

    def save_model(self, request, obj, form, change):
        services.save_filter_rule(
            rule=obj, moderator=services.Moderator.of(request.user), reason=form.cleaned_data["change_reason"]
        )


# --- flags from agents ----------------------------------------------------------------------------------


@admin.register(ModerationFlag)
class ModerationFlagAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    list_display = ["created_at", "stage", "categories", "node_link", "contributor_link", "jti", "mode"]
    list_filter = ["stage"]
    search_fields = ["jti", "node__id"]
    actions = [
        decision_action(
            "Ban the token holder",
            lambda f, m, why, d: services.ban_flagged(flag=f, moderator=m, reason=why, days=d),
            with_days=True,
            needs=BAN,
        ),
        decision_action(
            "Ban the address",
            lambda f, m, why, d: services.ban_flagged(flag=f, moderator=m, reason=why, days=d, address=True),
            with_days=True,
            needs=BAN,
        ),
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # The flagged token's address hash, for its label (one query for the page, not one per row). Only a
        # token issued for the flag's own node counts, as in services.flagged_token.
        token = TastingToken.objects.filter(jti=OuterRef("jti"), node_id=OuterRef("node_id"))
        return super().get_queryset(request).annotate(token_ip_hash=Subquery(token.values("ip_hash")[:1]))

    @admin.display(description="node")
    def node_link(self, obj):
        return subject_link("node", obj.node_id)

    @admin.display(description="token holder")
    def contributor_link(self, obj):
        if obj.contributor_id:
            return subject_link("contributor", obj.contributor_id)
        ip_hash = getattr(obj, "token_ip_hash", None)
        if not ip_hash:
            return "unknown (no token with this jti was issued for this node)"
        return f"anonymous, {address_label(ip_hash)}"


# --- subjects: nodes, contributors, bans ----------------------------------------------------------------


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

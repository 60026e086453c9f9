"""Abuse reports in the admin: the list (with how many other reports name the same subject), the decisions a
report leads to (review, dismiss, take the node down, revoke its tokens, ban the subject) and the moderation
dashboard (open reports by age, the day's flags, the latest decisions)."""

from datetime import timedelta

from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from moderation import services
from moderation.admin.decisions import BAN, NODE, DecisionsNeedPermission, decision_action
from moderation.admin.links import subject_link
from moderation.models import AbuseReport, ModerationAction, ModerationFlag
from tracker.models import Ban


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
    readonly_fields = fields  # a report is decided through the actions, never edited
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

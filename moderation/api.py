"""Public and agent-facing moderation endpoints: abuse reports, the abuse contact, filter rules and flags. An
agent's `flag` is one handler (FLAG) for both transports: this HTTP view, and the agent link, where
moderation.apps registers it."""

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as s
from rest_framework.response import Response
from rest_framework.views import APIView

from core.clientip import ip_hash
from core.fields import StrictCharField, StrictSerializer
from core.ratelimits import limit
from moderation import services
from moderation.models import AbuseReport, FilterRule
from nodes import schemas
from tracker import agent_link
from tracker.auth import NodeSecretAuthentication

REPORT_NOTE = (
    "Thank you. A person will review this report; nothing is banned automatically. "
    "For urgent matters write to the abuse contact."
)


class AbuseReportIn(StrictSerializer):
    subject_kind = s.ChoiceField(choices=AbuseReport.Kind.values)
    subject_id = StrictCharField(max_length=200, required=False, allow_blank=True)
    reason = StrictCharField(min_length=1, max_length=2000, trim_whitespace=True)
    evidence = StrictCharField(max_length=4000, required=False, allow_blank=True, trim_whitespace=False)

    def validate(self, data):
        if data["subject_kind"] != AbuseReport.Kind.OTHER and not data.get("subject_id"):
            raise s.ValidationError({"subject_id": ["required for this subject_kind"]})
        return data


@limit("RATE_ABUSE_REPORT", "abuse-report")
class AbuseReportApi(APIView):
    @extend_schema(
        request=AbuseReportIn,
        summary="Report abuse (reviewed by people; no automatic bans)",
        responses={
            202: inline_serializer(
                "ReportAccepted",
                {
                    "schema_version": s.IntegerField(),
                    "ok": s.BooleanField(),
                    "report_id": s.CharField(),
                    "contact": s.CharField(),
                    "note": s.CharField(),
                },
            ),
            400: schemas.ErrorDoc,
            413: schemas.ErrorDoc,
            429: schemas.ErrorDoc,
        },
    )
    def post(self, request):
        data = AbuseReportIn(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.file_report(data.validated_data, reporter_hash=ip_hash(request))
        return Response(
            {
                "schema_version": 1,
                "ok": True,
                "report_id": report.id,
                "contact": settings.ABUSE_CONTACT,
                "note": REPORT_NOTE,
            },
            status=202,
        )


class AbuseContactApi(APIView):
    @extend_schema(
        summary="Where abuse reports can also be sent",
        responses={
            200: inline_serializer("AbuseContact", {"schema_version": s.IntegerField(), "contact": s.CharField()})
        },
    )
    def get(self, request):
        return Response({"schema_version": 1, "contact": settings.ABUSE_CONTACT})


class FilterRulesApi(APIView):
    authentication_classes = [NodeSecretAuthentication]

    @extend_schema(
        summary="The filter rules every agent applies (node secret)",
        responses={
            200: inline_serializer(
                "FilterRules",
                {
                    "schema_version": s.IntegerField(),
                    "version": s.IntegerField(),
                    "rules": s.ListField(child=s.DictField()),
                },
            ),
            401: schemas.ErrorDoc,
        },
    )
    def get(self, request):
        from tracker.api import require
        from tracker.services import filter_rules_version

        require(request.user, "the node secret")
        rules = [rule.as_wire() for rule in FilterRule.objects.filter(enabled=True)]
        return Response({"schema_version": 1, "version": filter_rules_version(), "rules": rules})


class FlagIn(StrictSerializer):
    jti = StrictCharField(max_length=64)
    stage = s.ChoiceField(choices=["input", "output"])
    categories = s.ListField(child=StrictCharField(max_length=64), max_length=20, required=False)
    mode = s.ChoiceField(choices=["plain", "public-key"], required=False)


class Flag(agent_link.AgentMessage):
    """An agent's moderation flag: which rule categories caught a tasting's input or output (never the text)."""

    type = "flag"
    serializer = FlagIn
    http_status = 202
    ack = "flag_ack"

    def apply(self, node, data):
        flag = services.record_flag(
            node=node,
            jti=data["jti"],
            stage=data["stage"],
            categories=data.get("categories", []),
            mode=data.get("mode", ""),
        )
        return {"flag_id": flag.pk}

    def http_fields(self, data):
        return {"ok": True}


FLAG = Flag()


class ModerationFlagApi(APIView):
    authentication_classes = [NodeSecretAuthentication]

    @extend_schema(
        request=FlagIn,
        summary="An agent reports a moderation flag (node secret; no text)",
        responses={
            202: inline_serializer(
                "FlagAccepted",
                {"schema_version": s.IntegerField(), "ok": s.BooleanField(), "flag_id": s.IntegerField()},
            ),
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
        },
    )
    def post(self, request):
        from tracker.api import require

        return FLAG.over_http(require(request.user, "the node secret"), request.data)

"""What node agents and relays call, with a node secret or a relay secret: heartbeats and usage reports (the
handlers are tracker.agent_messages, shared with the agent link), tunnel tickets, relay heartbeats and relay
reports. It may import nodes; it must not import moderation or showcase."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as s
from rest_framework.response import Response
from rest_framework.views import APIView

from core.timefmt import iso
from nodes import relays as node_relays
from nodes import schemas
from tracker import relays
from tracker.agent_messages import HEARTBEAT, USAGE
from tracker.api import require
from tracker.auth import NodeSecretAuthentication, RelaySecretAuthentication
from tracker.serializers import HeartbeatIn, RelayHeartbeatIn, RelayReportIn, TunnelIn, UsageIn

# --- nodes' agents --------------------------------------------------------------------------------------


class NodeHeartbeatApi(APIView):
    authentication_classes = [NodeSecretAuthentication]

    @extend_schema(
        request=HeartbeatIn,
        summary="Agent heartbeat (node secret)",
        responses={
            200: inline_serializer(
                "HeartbeatAnswer",
                {
                    "schema_version": s.IntegerField(),
                    "status": s.CharField(),
                    "filter_rules_version": s.IntegerField(),
                    "revoked_jtis": s.ListField(child=s.CharField()),
                    "visibility": s.ChoiceField(choices=["public", "unlisted", "circle"]),
                    "owner_id": s.CharField(help_text="the rig's owner, whose own tokens a circle rig takes"),
                    "circles": s.ListField(child=s.CharField(), help_text="the circles this rig serves (ids)"),
                    "circle_only_hours": s.ListField(
                        child=s.IntegerField(min_value=0, max_value=23),
                        help_text="UTC hours in which a public or unlisted rig serves its circles only",
                    ),
                },
            ),
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
        },
    )
    def post(self, request, node_id):
        return HEARTBEAT.over_http(require(request.user, "the node secret"), request.data)


class NodeUsageApi(APIView):
    authentication_classes = [NodeSecretAuthentication]

    @extend_schema(
        request=UsageIn,
        summary="Agent usage report (node secret), idempotent on report_id",
        responses={
            202: inline_serializer(
                "UsageAccepted",
                {
                    "schema_version": s.IntegerField(),
                    "accepted": s.IntegerField(),
                    "ignored": s.IntegerField(),
                    "duplicate": s.BooleanField(),
                },
            ),
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
        },
    )
    def post(self, request, node_id):
        return USAGE.over_http(require(request.user, "the node secret"), request.data)


class NodeTunnelApi(APIView):
    authentication_classes = [NodeSecretAuthentication]

    @extend_schema(
        request=TunnelIn,
        summary="Which relay a relayed node's agent dials, and a ticket for it (node secret)",
        responses={
            200: inline_serializer(
                "TunnelAssigned",
                {
                    "schema_version": s.IntegerField(),
                    "relay_id": s.CharField(),
                    "relay_url": s.URLField(),
                    "tunnel_url": s.CharField(help_text="ws(s)://…/tunnel"),
                    "ticket": s.CharField(help_text="EdDSA JWT, typ luckrig-tunnel+jwt, aud = relay_id"),
                    "expires_at": s.DateTimeField(),
                },
            ),
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
            404: schemas.ErrorDoc,
            409: schemas.ErrorDoc,
            503: schemas.ErrorDoc,
        },
    )
    def post(self, request, node_id):
        node = require(request.user, "the node secret")
        data = TunnelIn(data=request.data)
        data.is_valid(raise_exception=True)
        tunnel = relays.issue_tunnel(node=node, unreachable_relay_id=data.validated_data.get("unreachable_relay_id"))
        return Response(
            {
                "schema_version": 1,
                "relay_id": tunnel.relay.id,
                "relay_url": tunnel.relay.public_url,
                "tunnel_url": relays.tunnel_url(tunnel.relay.public_url),
                "ticket": tunnel.ticket,
                "expires_at": iso(tunnel.expires_at),
            }
        )


# --- relays ---------------------------------------------------------------------------------------------


class RelayHeartbeatApi(APIView):
    authentication_classes = [RelaySecretAuthentication]

    @extend_schema(
        request=RelayHeartbeatIn,
        summary="Relay heartbeat: its open tunnels (relay secret)",
        responses={
            200: inline_serializer(
                "RelayHeartbeatAnswer",
                {
                    "schema_version": s.IntegerField(),
                    "relay_id": s.CharField(),
                    "relays": inline_serializer(
                        "LiveRelay", {"relay_id": s.CharField(), "public_url": s.URLField()}, many=True
                    ),
                    "now": s.DateTimeField(),
                },
            ),
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
            403: schemas.ErrorDoc,
        },
    )
    def post(self, request, relay_id):
        relay = require(request.user, "the relay secret")
        data = RelayHeartbeatIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        now = timezone.now()
        live = node_relays.record_relay_heartbeat(
            relay=relay,
            version=v["version"],
            tunnels=v["tunnels"],
            open_streams=v["open_streams"],
            draining=v["draining"],
            now=now,
        )
        return Response({"schema_version": 1, "relay_id": relay.id, "relays": live, "now": iso(now)})


class RelayReportsApi(APIView):
    authentication_classes = [RelaySecretAuthentication]

    @extend_schema(
        request=RelayReportIn,
        summary="What a relay witnessed per request (relay secret), idempotent on report_id",
        responses={
            202: inline_serializer(
                "RelayReportAccepted",
                {
                    "schema_version": s.IntegerField(),
                    "ok": s.BooleanField(),
                    "counted": s.IntegerField(),
                    "duplicate": s.BooleanField(),
                },
            ),
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
            403: schemas.ErrorDoc,
        },
    )
    def post(self, request, relay_id):
        relay = require(request.user, "the relay secret")
        data = RelayReportIn(data=request.data)
        data.is_valid(raise_exception=True)
        result = relays.record_relay_report(
            relay=relay, report_id=data.validated_data["report_id"], entries=data.validated_data["entries"]
        )
        return Response({"schema_version": 1, "ok": True, **result}, status=202)

"""The tracker's JSON API views for people and API clients: contributors, registering and changing nodes,
tokens, tracker keys, timing uploads, contributions and health. What agents and relays call is
tracker.agent_api; the fingerprint check is tracker.fingerprint. Each view: validate with a serializer, call one
service, shape, return. It may import nodes; it must not import moderation or showcase."""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers as s
from rest_framework.response import Response
from rest_framework.views import APIView

from core import paging
from core.api_errors import ApiError
from core.clientip import ip_hash
from core.ratelimits import limit
from core.timefmt import iso
from nodes import schemas
from nodes import services as node_services
from nodes.access import circles_by_node, circles_seen_by
from nodes.api import NodeDetailReadMixin, NodeListApi, NodeMetricsApi
from nodes.public_node import public_node, public_node_of, public_rows
from tracker import bans, scoring, services, tasting, tiers
from tracker.auth import ContributorKeyAuthentication, UploadKeyAuthentication
from tracker.keys import published_keys
from tracker.serializers import ContributorIn, NodeIn, NodePatch, PublishIn, TimingIn, TokenIn

VERSION = "0.1.0"


def require(principal, what: str):
    if principal is None:
        raise ApiError(
            401,
            "unauthorized",
            f"This needs {what} as 'Authorization: Bearer ...'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def contributor_json(contributor) -> dict:
    return {"id": contributor.id, "handle": contributor.handle, "created_at": iso(contributor.created_at)}


# --- contributors ---------------------------------------------------------------------------------------


@limit("RATE_CONTRIBUTOR_CREATE", "contributor-create")
class ContributorCreateApi(APIView):
    @extend_schema(
        request=ContributorIn,
        summary="Create a contributor identity (the key is shown once)",
        responses={
            201: inline_serializer(
                "ContributorCreated",
                {
                    "schema_version": s.IntegerField(),
                    "contributor": s.DictField(),
                    "contributor_key": s.CharField(),
                },
            ),
            400: schemas.ErrorDoc,
            429: schemas.ErrorDoc,
        },
    )
    def post(self, request):
        data = ContributorIn(data=request.data)
        data.is_valid(raise_exception=True)
        contributor, key = services.create_contributor(
            handle=data.validated_data.get("handle"), ip_hash=ip_hash(request)
        )
        return Response(
            {"schema_version": 1, "contributor": contributor_json(contributor), "contributor_key": key},
            status=201,
        )


class ContributorMeApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        summary="The caller's identity, score and nodes",
        responses={
            200: inline_serializer(
                "ContributorMe",
                {
                    "schema_version": s.IntegerField(),
                    "contributor": s.DictField(),
                    "score": s.DictField(),
                    "nodes": schemas.PublicNodeDoc(many=True),
                },
            ),
            401: schemas.ErrorDoc,
        },
    )
    def get(self, request):
        contributor = require(request.user, "a contributor key")
        # The owner's own rigs, circle rigs included, each with all its circles (one more query for any number).
        nodes = list(public_rows(contributor.nodes.in_service().order_by("created_at")))
        circles = circles_by_node(n["id"] for n in nodes)
        return Response(
            {
                "schema_version": 1,
                "contributor": contributor_json(contributor),
                "score": scoring.contributor_overview(contributor),
                "nodes": [public_node({**n, "circles": circles.get(n["id"], [])}) for n in nodes],
            }
        )


# --- nodes ----------------------------------------------------------------------------------------------

NodeCreatedDoc = inline_serializer(
    "NodeCreated",
    {"schema_version": s.IntegerField(), "node": schemas.PublicNodeDoc(), "node_secret": s.CharField()},
)


@limit("RATE_NODE_WRITE", "node-register")
class NodeCollectionApi(NodeListApi):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        request=NodeIn,
        summary="Register a node (the node secret is shown once)",
        responses={201: NodeCreatedDoc, 400: schemas.ErrorDoc, 401: schemas.ErrorDoc},
    )
    def post(self, request):
        owner = require(request.user, "a contributor key")
        bans.refuse_writer(contributor_id=owner.id, ip_hash=ip_hash(request))
        data = NodeIn(data=request.data)
        data.is_valid(raise_exception=True)
        node, secret = services.register_node(owner=owner, data=data.validated_data)
        node_services.note_owner_network(node, ip_hash(request))  # the owner's network (docs/scoring.md)
        return Response({"schema_version": 1, "node": public_node_of(node), "node_secret": secret}, status=201)


class NodeItemApi(NodeDetailReadMixin, APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        request=NodePatch,
        summary="Change a node (owner only)",
        responses={
            200: schemas.NodeDetailDoc,
            400: schemas.ErrorDoc,
            403: schemas.ErrorDoc,
            404: schemas.ErrorDoc,
        },
    )
    def patch(self, request, node_id):
        bans.refuse_writer(ip_hash=ip_hash(request))
        owner = require(request.user, "a contributor key")
        node = services.get_node_for_owner(owner, node_id)
        data = NodePatch(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        node = services.update_node(node=node, data=data.validated_data)
        node_services.note_owner_network(node, ip_hash(request))
        return Response({"schema_version": 1, "node": public_node_of(node, circles_seen_by(node, owner))})

    @extend_schema(
        summary="Delete a node (owner only)",
        responses={204: None, 403: schemas.ErrorDoc, 404: schemas.ErrorDoc},
    )
    def delete(self, request, node_id):
        bans.refuse_writer(ip_hash=ip_hash(request))
        node = services.get_node_for_owner(require(request.user, "a contributor key"), node_id)
        services.delete_node(node=node)
        return Response(status=204)


@limit("RATE_NODE_WRITE", "node-publish")
class NodePublishApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        request=PublishIn,
        summary="Make a rig public or unlisted (owner only; a circle rig becomes so only this way)",
        responses={
            200: schemas.NodeDetailDoc,
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
            403: schemas.ErrorDoc,
            404: schemas.ErrorDoc,
        },
    )
    def post(self, request, node_id):
        bans.refuse_writer(ip_hash=ip_hash(request))
        owner = require(request.user, "a contributor key")
        node = services.get_node_for_owner(owner, node_id)
        data = PublishIn(data=request.data)
        data.is_valid(raise_exception=True)
        node = services.publish_node(node=node, visibility=data.validated_data["visibility"])
        return Response({"schema_version": 1, "node": public_node_of(node, circles_seen_by(node, owner))})


class NodeMetricsItemApi(NodeMetricsApi):
    """The health history, with the contributor key that shows a circle rig's to its owner and members."""

    authentication_classes = [ContributorKeyAuthentication]


# --- tokens, keys, timing -------------------------------------------------------------------------------


def token_json(issued: tasting.Issued) -> dict:
    """The 201 body of a token, the same whoever asked for it: the taster (POST /api/tokens) or a relay on the
    taster's behalf (POST /api/relays/<relay_id>/tokens, tracker.gateway_api)."""
    node = issued.node
    return {
        "schema_version": 1,
        "token_type": "Bearer",
        "token": issued.token,
        "jti": issued.jti,
        "expires_at": iso(issued.expires_at),
        "crypto_mode": issued.crypto_mode,
        "tier": issued.tier,
        # The same numbers as the token's claims: max_output_tokens is the per-request cap,
        # max_output_tokens_total the whole budget (tracker/tiers.py).
        # A circle token spends no tier quota (its circle's limits stand instead): tokens_per_day and quota null.
        "limits": {**issued.token_limits, "tokens_per_day": issued.quota_limit},
        "quota": None if issued.quota_limit is None else {"used": issued.quota_used, "limit": issued.quota_limit},
        "circle": issued.circle,
        "node_public_key": node.node_public_key,
        "node_public_key_fingerprint": node.node_public_key_fingerprint,
        "user_public_key_fingerprint": issued.user_public_key_fingerprint,
        "node": public_node_of(node),
        "caveat": tasting.caveat(crypto_mode=issued.crypto_mode, reachability=node.reachability),
        "upload_key": issued.upload_key,
    }


TokenIssuedDoc = inline_serializer(
    "TokenIssued",
    {
        "schema_version": s.IntegerField(),
        "token_type": s.CharField(),
        "token": s.CharField(),
        "jti": s.CharField(),
        "expires_at": s.DateTimeField(),
        "crypto_mode": s.CharField(),
        "tier": s.CharField(),
        "limits": s.DictField(),
        "quota": s.DictField(allow_null=True, help_text="null for a circle token"),
        "circle": inline_serializer(
            "TokenCircle",
            {
                "id": s.CharField(),
                "name": s.CharField(),
                "limits": s.DictField(child=s.IntegerField()),
                "usage_today": s.DictField(child=s.IntegerField(), help_text="this token's requests included"),
                "resets_at": s.DateTimeField(),
            },
            allow_null=True,
            help_text="the circle a member's token goes through (its `circle` claim); null for any other token",
        ),
        "node_public_key": s.CharField(allow_null=True),
        "node_public_key_fingerprint": s.CharField(allow_null=True),
        "user_public_key_fingerprint": s.CharField(allow_null=True),
        "node": schemas.PublicNodeDoc(),
        "caveat": s.CharField(),
        "upload_key": s.CharField(help_text="lru_...: for timing and replays; never send it to the node"),
    },
)


# One per-address window for tokens, whoever asks: the taster, or a relay on the taster's behalf (gateway_api).
TOKEN_RATE = ("RATE_TOKEN_CREATE", "token-create")


@limit(*TOKEN_RATE, explain=lambda request: tiers.rate_fields(request.user))
class TokenCreateApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]  # optional: anonymous gets the limited tier

    @extend_schema(
        request=TokenIn,
        summary="Get a tasting token for one node",
        responses={
            201: TokenIssuedDoc,
            400: schemas.ErrorDoc,
            403: schemas.ErrorDoc,
            404: schemas.ErrorDoc,
            409: schemas.ErrorDoc,
            429: schemas.ErrorDoc,
        },
    )
    def post(self, request):
        data = TokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        issued = tasting.issue_token(
            node_id=v["node_id"],
            crypto_mode=v["crypto_mode"],
            user_public_key=v.get("user_public_key"),
            ttl_sec=v.get("ttl_sec"),
            contributor=request.user,
            ip_hash=ip_hash(request),
            circle_id=v.get("circle_id"),
        )
        return Response(token_json(issued), status=201)


class TrackerKeysApi(APIView):
    @extend_schema(
        summary="Public keys that node agents trust for tasting tokens",
        responses={
            200: inline_serializer(
                "TrackerKeys", {"schema_version": s.IntegerField(), "keys": s.ListField(child=s.DictField())}
            )
        },
    )
    def get(self, request):
        return Response({"schema_version": 1, "keys": published_keys(timezone.now())})


@limit("RATE_TIMING_UPLOAD", "timing-upload")
class TimingUploadApi(APIView):
    authentication_classes = [UploadKeyAuthentication]

    @extend_schema(
        request=TimingIn,
        summary="Share the client-measured timing of one tasting (its upload key; one per token)",
        responses={
            201: inline_serializer(
                "TimingAccepted",
                {
                    "schema_version": s.IntegerField(),
                    "ok": s.BooleanField(),
                    "counted": s.BooleanField(help_text="false: kept, counted once the rig reports the token used"),
                    "community_timing": schemas.CommunityTimingDoc(),
                },
            ),
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
            409: schemas.ErrorDoc,
        },
    )
    def post(self, request):
        token = require(request.user, "the tasting's upload key")
        bans.refuse_writer(contributor_id=token.contributor_id, ip_hash=ip_hash(request))
        bans.refuse_if_banned(("ip", token.ip_hash))
        data = TimingIn(data=request.data)
        data.is_valid(raise_exception=True)
        timing, counted = tasting.record_timing(token=token, data=data.validated_data)
        return Response({"schema_version": 1, "ok": True, "counted": counted, "community_timing": timing}, status=201)


# --- small public documents -----------------------------------------------------------------------------


class ContributionsApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("limit", int, description="1 to 1000, default 100")],
        summary="Contribution scores of listed nodes, highest first",
        responses={
            200: inline_serializer(
                "Contributions",
                {
                    "schema_version": s.IntegerField(),
                    "threshold": s.FloatField(),
                    "scores": s.ListField(child=s.DictField()),
                },
            ),
            400: schemas.ErrorDoc,
        },
    )
    def get(self, request):
        limit = paging.whole_number(request.GET, "limit", default=100, maximum=1000)
        return Response(
            {
                "schema_version": 1,
                "threshold": settings.CONTRIBUTOR_THRESHOLD,
                "scores": scoring.listed_contributions(limit),
            }
        )


class HealthApi(APIView):
    @extend_schema(
        summary="Tracker liveness",
        responses={
            200: inline_serializer(
                "TrackerHealth",
                {
                    "schema_version": s.IntegerField(),
                    "ok": s.BooleanField(),
                    "service": s.CharField(),
                    "version": s.CharField(),
                    "now": s.DateTimeField(),
                },
            )
        },
    )
    def get(self, request):
        return Response(
            {
                "schema_version": 1,
                "ok": True,
                "service": "luckrig-tracker",
                "version": VERSION,
                "now": iso(timezone.now()),
            }
        )

"""Published replays over the JSON API: publish one with the upload key of the tasting it records (never the
tasting token, which the node operator holds too), list them, read one. Each view: validate, call one
service, shape, return."""

from django.conf import settings
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
from nodes.access import get_visible_node
from nodes.models import node_id_key
from showcase import services
from showcase.models import SET_MAX, SET_MIN, Replay, ReplaySet
from showcase.public_replay import NODE_SUMMARY_FIELDS as NODE_FIELDS
from showcase.public_replay import PREVIEW_CHARS, list_rows, node_summary, public_replay, replay_list_item
from showcase.serializers import ReplayIn, ReplaySetIn
from tracker.api import require
from tracker.auth import UploadKeyAuthentication

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

ReplayCreatedDoc = inline_serializer(
    "ReplayPublished", {"schema_version": s.IntegerField(), "id": s.CharField(), "url": s.URLField()}
)
ReplayDoc = inline_serializer(
    "Replay",
    {
        "id": s.CharField(),
        "url": s.URLField(),
        "node_id": s.CharField(),
        "created_at": s.DateTimeField(),
        "published_at": s.DateTimeField(),
        "prompt": s.CharField(),
        "system": s.CharField(allow_null=True),
        "messages": s.ListField(child=s.DictField(child=s.CharField())),
        "response": s.CharField(),
        "chunk_timestamps": s.ListField(child=s.FloatField()),
        "chunks": s.ListField(child=s.CharField(), allow_null=True),
        "timing": s.DictField(),
        "node": s.DictField(),
    },
)
ReplayListDoc = inline_serializer(
    "ReplayList",
    {
        "schema_version": s.IntegerField(),
        "count": s.IntegerField(),
        "next": s.CharField(allow_null=True),
        "previous": s.CharField(allow_null=True),
        "replays": s.ListField(child=s.DictField()),
    },
)


# What publishing a replay or a set can answer besides its 201.
PUBLISH_ERRORS = {status: schemas.ErrorDoc for status in (400, 401, 403, 404, 409, 413, 422, 429)}
ReplaySetCreatedDoc = inline_serializer(
    "ReplaySetPublished",
    {
        "schema_version": s.IntegerField(),
        "id": s.CharField(),
        "url": s.URLField(),
        "replays": s.ListField(child=s.CharField()),
    },
)
ReplaySetDoc = inline_serializer(
    "ReplaySet",
    {
        "id": s.CharField(),
        "url": s.URLField(),
        "published_at": s.DateTimeField(),
        "prompt": s.CharField(),
        "system": s.CharField(allow_null=True),
        "replays": s.ListField(child=ReplayDoc),
    },
)
ReplaySetListDoc = inline_serializer(
    "ReplaySetList",
    {
        "schema_version": s.IntegerField(),
        "count": s.IntegerField(),
        "next": s.CharField(allow_null=True),
        "previous": s.CharField(allow_null=True),
        "replay_sets": s.ListField(child=s.DictField()),
    },
)


def _paged(request, counted, rows, key: str, shape) -> Response:
    """A page of `rows` (the same query as `counted`, shaped for a page) as `{count, next, previous, <key>}`."""
    number = paging.page_number(request.GET)
    size = paging.whole_number(request.GET, "page_size", default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    page = paging.Page(number, size, counted.count())
    return Response(
        {
            "schema_version": 1,
            "count": page.count,
            **paging.neighbours(request, page),
            key: [shape(row) for row in page.rows(rows)],
        }
    )


@limit("RATE_REPLAY_PUBLISH", "replay-publish")
class ReplayCollectionApi(APIView):
    authentication_classes = [UploadKeyAuthentication]

    def perform_authentication(self, request):
        """Only publishing needs a credential: the list stays public even for a caller sending a stale one."""

    @extend_schema(
        parameters=[
            OpenApiParameter("node", str, description="only this node's replays (404 when it is not reachable)"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int, description=f"1 to {MAX_PAGE_SIZE}, default {DEFAULT_PAGE_SIZE}"),
        ],
        summary="Published replays, newest first",
        operation_id="replays_list",
        responses={200: ReplayListDoc, 400: schemas.ErrorDoc, 404: schemas.ErrorDoc},
    )
    def get(self, request):
        node_id = request.GET.get("node")
        if node_id and node_id_key(node_id) is None:
            raise ApiError(400, "invalid_field", "node: not a node id", extra={"field": "node"})
        # Like the node itself: whoever has an unlisted node's id sees its replays; the unfiltered list shows
        # listed nodes only.
        qs = Replay.objects.visible().filter(node=get_visible_node(node_id)) if node_id else Replay.objects.listed()
        rows = list_rows(qs.order_by("-published_at", "-id"))
        return _paged(request, qs, rows, "replays", lambda row: replay_list_item(row, settings.SITE_URL))

    @extend_schema(
        request=ReplayIn,
        summary="Publish the replay of one tasting (its upload key; one per token)",
        operation_id="replays_publish",
        responses={
            201: ReplayCreatedDoc,
            **PUBLISH_ERRORS,
        },
    )
    def post(self, request):
        token = require(request.user, "the tasting's upload key")
        data = ReplayIn(data=request.data)
        data.is_valid(raise_exception=True)
        replay = services.publish_replay(token=token, data=data.validated_data, ip_hash=ip_hash(request))
        return Response(
            {"schema_version": 1, "id": replay.id, "url": replay.public_url},
            status=201,
            headers={"Location": replay.public_url},
        )


class ReplayItemApi(APIView):
    @extend_schema(
        summary="One published replay",
        operation_id="replay_retrieve",
        responses={
            200: inline_serializer("ReplayDetail", {"schema_version": s.IntegerField(), "replay": ReplayDoc}),
            404: schemas.ErrorDoc,
        },
    )
    def get(self, request, replay_id):
        return Response({"schema_version": 1, "replay": public_replay(services.get_visible_replay(replay_id))})


def public_replay_set(replay_set: ReplaySet, members: list[Replay]) -> dict:
    return {
        "id": replay_set.id,
        "url": replay_set.public_url,
        "published_at": iso(replay_set.published_at),
        "prompt": members[0].prompt,
        "system": members[0].system or None,
        "replays": [public_replay(m) for m in members],
    }


def replay_set_list_item(replay_set: ReplaySet) -> dict:
    """Previews, like the replay list: the prompt's first characters and, per member, its rig and timing."""
    members = replay_set.visible_members
    return {
        "id": replay_set.id,
        "url": replay_set.public_url,
        "published_at": iso(replay_set.published_at),
        "prompt_preview": members[0].prompt[:PREVIEW_CHARS],
        "replays": [
            {
                "id": m.id,
                "url": m.public_url,
                "node_id": m.node_id,
                "timing": m.timing,
                "node": node_summary({"id": m.node_id, **{n: getattr(m.node, n) for n in NODE_FIELDS}}),
            }
            for m in members
        ],
    }


@limit("RATE_REPLAY_PUBLISH", "replay-set")
class ReplaySetCollectionApi(APIView):
    # The credentials of a set are its members' upload keys, in the body (one per member): no Bearer here.
    authentication_classes = []

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int, description=f"1 to {MAX_PAGE_SIZE}, default {DEFAULT_PAGE_SIZE}"),
        ],
        summary="Published replay sets (rig against rig), newest first",
        operation_id="replay_sets_list",
        responses={200: ReplaySetListDoc, 400: schemas.ErrorDoc},
    )
    def get(self, request):
        qs = ReplaySet.objects.listed()
        return _paged(request, qs, qs.with_members(), "replay_sets", replay_set_list_item)

    @extend_schema(
        request=ReplaySetIn,
        summary=f"Keep {SET_MIN} to {SET_MAX} published replays of one prompt together (each with its upload key)",
        operation_id="replay_sets_create",
        responses={
            201: ReplaySetCreatedDoc,
            **PUBLISH_ERRORS,
        },
    )
    def post(self, request):
        data = ReplaySetIn(data=request.data)
        data.is_valid(raise_exception=True)
        replay_set = services.group_replays(members=data.validated_data["members"], ip_hash=ip_hash(request))
        return Response(
            {
                "schema_version": 1,
                "id": replay_set.id,
                "url": replay_set.public_url,
                "replays": [m["replay_id"] for m in data.validated_data["members"]],
            },
            status=201,
            headers={"Location": replay_set.public_url},
        )


class ReplaySetItemApi(APIView):
    @extend_schema(
        summary="One replay set: its replays in order, each in full",
        operation_id="replay_set_retrieve",
        responses={
            200: inline_serializer("ReplaySetDetail", {"schema_version": s.IntegerField(), "replay_set": ReplaySetDoc}),
            404: schemas.ErrorDoc,
        },
    )
    def get(self, request, set_id):
        replay_set, members = services.get_visible_replay_set(set_id)
        return Response({"schema_version": 1, "replay_set": public_replay_set(replay_set, members)})

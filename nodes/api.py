"""Public read API over nodes: list, detail, health metrics, showcase. No credentials needed; the tracker's
subclasses of the detail and metrics views add the contributor key, which shows a circle rig to the people it
is shared with (nodes.access)."""

from datetime import timedelta

import orjson
from django.db.models import Count, Q
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from core import paging
from core.api_errors import ApiError
from core.renderers import FastJSONRenderer
from core.timefmt import iso
from nodes import queries, schemas, wanted
from nodes.access import circles_seen_by, get_visible_node
from nodes.compiled_list import page_json, page_nodes
from nodes.list_count import listed_count
from nodes.models import HealthSample, Node
from nodes.public_node import public_node_of

LIST_PARAMS = [
    OpenApiParameter("status", str, enum=list(Node.Status.values)),
    OpenApiParameter("model", str, description="substring of model_name, case-insensitive"),
    OpenApiParameter("gpu", str, description="substring, case-insensitive"),
    OpenApiParameter("quantization", str, description="substring, case-insensitive"),
    OpenApiParameter("min_vram", float),
    OpenApiParameter("min_ctx", int),
    OpenApiParameter("tag", str),
    OpenApiParameter("order", str, enum=list(queries.ORDERS)),
    OpenApiParameter("page", int),
    OpenApiParameter("page_size", int, description=f"1 to {queries.MAX_PAGE_SIZE}, default 50"),
]


def _plain_get(request) -> bool:
    """A GET whose answer DRF's dispatch would not change: no credential to check, JSON by any Accept that DRF
    negotiates to this view's one renderer without parameters (no `indent`), no `?format=`."""
    meta = request.META
    return (
        request.method == "GET"
        and not meta.get("HTTP_AUTHORIZATION")
        and meta.get("HTTP_ACCEPT", "*/*") in ("*/*", "application/json")
        and "format" not in request.GET
    )


def _page_nodes(query, page, now, keys_first=False) -> tuple[list[dict], int]:
    # `keys_first` only matches page_json_or_nodes' call: the ordinary path reads the page whole either way.
    nodes = page_nodes(query, page, now)
    return nodes, len(nodes)


def page_json_or_nodes(query, page, now, keys_first=False) -> tuple:
    """(the page's nodes as one orjson.Fragment, or as dicts where SQLite cannot write them, and how many).
    `keys_first`: no count was asked this request (nodes.compiled_list.page_json)."""
    written = page_json(query, page, now, keys_first)
    if written is None:
        return _page_nodes(query, page, now)
    return orjson.Fragment(written[0]), written[1]


class NodeListApi(APIView):
    renderer_classes = [FastJSONRenderer]

    def dispatch(self, request, *args, **kwargs):
        """A plain GET (most of the list's traffic) is answered without DRF's request wrapping, negotiation,
        authentication and permission passes, with what they would give it: the same JSON bytes and headers
        (`Content-Type: application/json`, `Allow`). Anything else, and any 400, goes through DRF as before
        (docs/benchmarks.md, "Fourth pass")."""
        if _plain_get(request):
            try:
                body = self.list_body(request, as_json=True)
            except ApiError:
                pass  # DRF answers it, from the start: parsing the query is all that ran
            else:
                content = FastJSONRenderer().render(body, "application/json")
                response = HttpResponse(content, content_type="application/json")
                response["Allow"] = ", ".join(self.allowed_methods)
                return response
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        parameters=LIST_PARAMS,
        responses={200: schemas.NodeListDoc, 400: schemas.ErrorDoc},
        summary="List listed nodes, rarity first",
        operation_id="nodes_list",
    )
    def get(self, request):
        return Response(self.list_body(request))

    def list_body(self, request, as_json=False) -> dict:
        """The list's answer. `as_json`: its nodes may be one orjson.Fragment, the JSON array FastJSONRenderer would
        write for them (nodes.compiled_list.page_json), which only that renderer's orjson path can write: for a
        plain GET (dispatch), never for DRF's renderers."""
        query = queries.parse_list_query(request.GET)
        now = timezone.now()
        listed = lambda: Node.objects.listed(now=now)  # noqa: E731 - built only for a count not in the cache
        count, count_is_estimate = listed_count(listed, queries.matching(query), query.filters)
        page = paging.Page(query.page, query.page_size, count)
        read = page_json_or_nodes if as_json else _page_nodes
        if count_is_estimate:
            # A reused count can be lower than today's: read the page whatever it says, and count at least the rigs
            # this page reaches (one more when it is full, so that it links on): no rig is hidden past an estimate.
            nodes, n = read(query, paging.Page(query.page, query.page_size, page.start + page.size), now, True)
            reached = page.start + n + (1 if n == page.size else 0)
            page = paging.Page(query.page, query.page_size, max(count, reached))
        else:
            nodes, _n = read(query, page, now)
        return {
            "schema_version": 1,
            "sort": query.order,
            "count": page.count,
            "count_is_estimate": count_is_estimate,
            **paging.neighbours(request, page),
            "nodes": nodes,
        }


class NodeDetailReadMixin:
    @extend_schema(
        responses={200: schemas.NodeDetailDoc, 403: schemas.ErrorDoc, 404: schemas.ErrorDoc},
        summary="One node (a circle rig: its owner's or a member's contributor key)",
        operation_id="node_retrieve",
    )
    def get(self, request, node_id):
        viewer = request.user  # None without a contributor key (UNAUTHENTICATED_USER)
        node = get_visible_node(node_id, viewer)
        return Response({"schema_version": 1, "node": public_node_of(node, circles_seen_by(node, viewer))})


class NodeMetricsApi(APIView):
    RECENT = 50

    @extend_schema(
        responses={200: schemas.NodeMetricsDoc, 403: schemas.ErrorDoc, 404: schemas.ErrorDoc},
        summary="Health history (a circle rig: its owner's or a member's contributor key)",
    )
    def get(self, request, node_id):
        node = get_visible_node(node_id, request.user)
        since = timezone.now() - timedelta(days=7)
        samples = HealthSample.objects.filter(node=node, at__gte=since).aggregate(n=Count("id"))["n"]
        recent = (
            HealthSample.objects.filter(node=node).order_by("-at").values("at", "status", "latency_ms")[: self.RECENT]
        )
        return Response(
            {
                "schema_version": 1,
                "node_id": node.id,
                "samples": samples,
                "uptime_ratio_24h": node.uptime_ratio_24h,
                "uptime_ratio_7d": node.uptime_ratio_7d,
                "last_error": node.last_error,
                "recent": [{"at": iso(r["at"]), "status": r["status"], "latency_ms": r["latency_ms"]} for r in recent],
            }
        )


class ShowcaseApi(APIView):
    @extend_schema(responses={200: schemas.ShowcaseDoc}, summary="Showcase categories over listed nodes")
    def get(self, request):
        winners = Node.objects.listed().filter(~Q(showcase_ids="")).only("id", "showcase")
        categories = [
            {"id": b["id"], "label": b["label"], "node_id": n.id, "reason": b["reason"]}
            for n in winners
            for b in n.showcase
        ]
        order = [
            "lowest_vram",
            "cpu_rig",
            "apple_silicon",
            "largest_context",
            "oldest_gpu_generation",
            "rarest_combination",
        ]
        categories.sort(key=lambda c: order.index(c["id"]) if c["id"] in order else len(order))
        return Response({"schema_version": 1, "categories": categories})


class WantedModelsApi(APIView):
    @extend_schema(
        responses={200: schemas.WantedModelsDoc},
        summary="Catalog models few or no listed live rigs serve, fewest first (cached 60 s): what to pull",
    )
    def get(self, request):
        return Response({"schema_version": 1, "wanted": wanted.wanted_models()})

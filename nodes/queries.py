"""Validated query parameters of the public node list."""

from dataclasses import dataclass

from django.db.models import F, Q, QuerySet

from core import paging
from core.api_errors import ApiError
from nodes.models import Node

ORDERS = {
    "rarity": None,  # Node.objects.in_default_order()
    "recent": (F("created_at").desc(), "id"),
    "tok_per_sec": (F("tok_per_sec_p50").desc(nulls_last=True), F("rarity_score").desc(), "id"),
    "context": (F("context_length").desc(nulls_last=True), F("rarity_score").desc(), "id"),
}
TEXT_FILTERS = ("status", "model", "gpu", "quantization", "tag")
FILTERS = (*TEXT_FILTERS, "min_vram", "min_ctx")  # ListQuery.filters' keys
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


@dataclass
class ListQuery:
    filters: dict
    order: str
    page: int
    page_size: int


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{field}: {message}", extra={"field": field})


def _number(params, name: str, kind, minimum, maximum):
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError):
        raise _bad(name, f"must be a {'whole ' if kind is int else ''}number") from None
    if value != value or not (minimum <= value <= maximum):  # NaN, or out of range
        raise _bad(name, f"must be between {minimum} and {maximum}")
    return value


def _text(params, name: str, max_length: int = 120) -> str | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    if len(raw) > max_length or "\x00" in raw:
        raise _bad(name, f"must be at most {max_length} characters")
    return raw.strip()


def parse_list_query(params) -> ListQuery:
    status = _text(params, "status", 20)
    if status is not None and status not in Node.Status.values:
        raise _bad("status", f"must be one of {', '.join(Node.Status.values)}")
    order = _text(params, "order", 20) or "rarity"
    if order not in ORDERS:
        raise _bad("order", f"must be one of {', '.join(ORDERS)}")
    filters = {
        "status": status,
        "model": _text(params, "model"),
        "gpu": _text(params, "gpu"),
        "quantization": _text(params, "quantization"),
        "tag": (_text(params, "tag", 32) or "").lower() or None,
        "min_vram": _number(params, "min_vram", float, 0, 100000),
        "min_ctx": _number(params, "min_ctx", int, 0, 100_000_000),
    }
    page_size = paging.whole_number(params, "page_size", default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    return ListQuery(filters, order, paging.page_number(params), page_size)


def matching(query: ListQuery) -> Q:
    """The rows the query's filters keep, as one condition (empty when nothing is filtered)."""
    f = query.filters
    q = Q()
    # The numbers first: a database tests the conditions in about this order, and a comparison of numbers costs
    # far less than a substring search (SQLite: the bench's filtered page's SQL walks about 1,000 index entries
    # for its 50 rows, and the LIKE over `gpu` then runs only on those with the VRAM asked for).
    if f["min_vram"] is not None:
        q &= Q(vram_gb__gte=f["min_vram"])
    if f["min_ctx"] is not None:
        q &= Q(context_length__gte=f["min_ctx"])
    if f["status"]:
        q &= Q(status=f["status"])
    if f["model"]:
        q &= Q(model_name__icontains=f["model"])
    if f["gpu"]:
        q &= Q(gpu__icontains=f["gpu"])
    if f["quantization"]:
        q &= Q(quantization__icontains=f["quantization"])
    if f["tag"]:
        q &= Q(tags_index__contains=f",{f['tag']},")
    return q


def apply(query: ListQuery, qs: QuerySet) -> QuerySet:
    qs = qs.filter(matching(query))
    ordering = ORDERS[query.order]
    return qs.in_default_order() if ordering is None else qs.order_by(*ordering)

"""The node list's page query, compiled once per shape (docs/benchmarks.md, "Node list": Django built the same
43-column QuerySet and compiled its SQL on every request, about a third of the list's cost).

A shape is what changes the SQL's text: the database, the order, and which filters are present. The first request
of a shape in a process builds the page's query with the very code of the QuerySet path (nodes.queries.apply over
Node.objects.listed(), public_rows, the page's slice), but with stand-ins for every value a request brings: its
filter values, the current time and the page's slice. Each parameter of the compiled SQL is then recorded as a
slot: a constant of the code (kept as it is), the time, a filter's value, or a filter's value inside a LIKE
pattern (escaped as Django escapes it); LIMIT and OFFSET become parameters too. Every later request of the shape
fills the slots with its own values and runs the SQL with the cursor: a value only ever travels as a parameter.

So the SQL cannot drift from the QuerySet code: it is made by that code, per process. And the first request of
each shape also compiles its own query the ordinary way and compares: SQL and parameters must be the same, else
the shape stays on the ordinary path (nodes.public_list.public_nodes) and a warning is logged. The rows are read
with the same per-column formatters as that path (nodes.public_list.RowReader)."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connections, router

from core.paging import Page
from nodes import queries
from nodes.models import Node
from nodes.public_list import RowReader, public_nodes
from nodes.public_node import public_rows

log = logging.getLogger(__name__)

# Stand-ins no request brings: text without a LIKE wildcard or escape character, numbers in range, a time long
# past, and a slice far beyond any page.
_TEXT = "lrStandIn{}Q"
_NUMBERS = {"min_vram": 98765.4321, "min_ctx": 98765431}
_NOW = datetime(1902, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
_OFFSET, _LIMIT = 7654321, 3456789
_DJANGO_TAIL = f" LIMIT {_LIMIT} OFFSET {_OFFSET}"
_TAIL = " LIMIT %s OFFSET %s"


@dataclass(frozen=True)
class Shape:
    sql: str  # ends with _TAIL
    # One per parameter before LIMIT and OFFSET: ("const", v), ("now",), ("value", f, type), ("like", f, a, b).
    slots: tuple
    reader: RowReader


_shapes: dict[tuple, Shape | None] = {}  # per process; None: the ordinary path for that shape


def present(filters: dict) -> tuple[str, ...]:
    """The filters that make a condition (nodes.queries.matching): a non-empty text, any number."""
    return tuple(name for name, value in filters.items() if value is not None and value != "")


def _stand_in(name: str):
    return _NUMBERS.get(name, _TEXT.format(name))


def _slot(param, ops) -> tuple:
    now = ops.adapt_datetimefield_value(_NOW)
    if type(param) is type(now) and param == now:
        return ("now",)
    for name, number in _NUMBERS.items():
        if isinstance(param, type(number)) and param == number:  # a backend may wrap it (psycopg: Int4)
            return ("value", name, type(param))
    if isinstance(param, str) and "lrStandIn" in param:
        for name in queries.TEXT_FILTERS:
            stand_in = _TEXT.format(name)
            if param == stand_in:
                return ("value", name, type(param))
            if param.count(stand_in) == 1:
                before, after = param.split(stand_in)
                return ("like", name, before, after)
        raise ValueError(f"a parameter holds a stand-in in a way not known here: {param!r}")
    return ("const", param)


def _compile(alias: str, order: str, names: tuple[str, ...]) -> Shape:
    filters = {name: (_stand_in(name) if name in names else None) for name in queries.FILTERS}
    rows = _page_rows(alias, queries.ListQuery(filters, order, 1, 1), _NOW, _OFFSET, _LIMIT)
    compiler = rows.query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    if not sql.endswith(_DJANGO_TAIL):
        raise ValueError("the page's SQL does not end with its LIMIT and OFFSET")
    ops = connections[alias].ops
    return Shape(sql[: -len(_DJANGO_TAIL)] + _TAIL, tuple(_slot(p, ops) for p in params), RowReader(compiler))


def _page_rows(alias: str, query: queries.ListQuery, now, start: int, size: int):
    """The page's rows as the ordinary path asks for them (a sliced `.values()` QuerySet)."""
    listed = Node.objects.db_manager(alias).listed(now=now)
    return public_rows(queries.apply(query, listed))[start : start + size]


def _params(shape: Shape, filters: dict, now, ops, start: int, size: int) -> list:
    params = []
    for slot in shape.slots:
        kind = slot[0]
        if kind == "const":
            params.append(slot[1])
        elif kind == "now":
            params.append(ops.adapt_datetimefield_value(now))
        elif kind == "value":
            params.append(slot[2](filters[slot[1]]))
        else:  # "like"
            params.append(slot[2] + ops.prep_for_like_query(filters[slot[1]]) + slot[3])
    params += [size, start]
    return params


def _checked(alias: str, shape: Shape, query: queries.ListQuery, now, page: Page) -> bool:
    """Whether the shape gives, for this request, the SQL and parameters Django compiles for it."""
    rows = _page_rows(alias, query, now, page.start, page.size)
    sql, params = rows.query.get_compiler(using=alias).as_sql()
    ops = connections[alias].ops
    mine = _params(shape, query.filters, now, ops, page.start, page.size)
    tail = " " + ops.limit_offset_sql(page.start, page.start + page.size)
    return sql == shape.sql[: -len(_TAIL)] + tail and list(params) == mine[:-2]


def page_nodes(query: queries.ListQuery, page: Page, now: datetime) -> list[dict]:
    """PublicNode of each listed rig on `page` of the list `query` asks for, listed as at `now` (one query, none
    past the end)."""
    if page.start >= page.count:
        return []
    alias = router.db_for_read(Node)
    key = (alias, query.order, present(query.filters))
    shape = _shapes.get(key, False)
    if shape is False:
        shape = _compile(alias, query.order, key[2])
        if not _checked(alias, shape, query, now, page):
            log.warning("node list: shape %s compiles to other SQL than Django's: compiled per request", key)
            shape = None
        _shapes[key] = shape
    if shape is None:
        return public_nodes(_page_rows(alias, query, now, page.start, page.size))
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(shape.sql, _params(shape, query.filters, now, connection.ops, page.start, page.size))
        rows = cursor.fetchall()
    return shape.reader.public_nodes(rows, connection)

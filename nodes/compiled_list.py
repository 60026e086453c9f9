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
with the same per-column formatters as that path (nodes.public_list.RowReader), except on SQLite, where the SQL that
runs gives the timestamp and JSON columns typed aliases ("created_at [lrwiretime]": only the alias differs from the
checked SQL, so ORDER BY and the index are the same) and the cursor converts them itself
(nodes.public_list.cursor_conversions)."""

import functools
import itertools
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connections, router

from core.paging import Page
from nodes import queries
from nodes.models import Node
from nodes.public_list import RowReader, cursor_conversions, public_nodes
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
# A parameter, as Django's SQLite cursor finds them (django.db.backends.sqlite3.base.FORMAT_QMARK_REGEX).
_PLACEHOLDER = re.compile(r"(?<!%)%s")


@dataclass(frozen=True)
class Shape:
    sql: str  # as Django compiles it (what _checked compares), ends with _TAIL
    # One per parameter before LIMIT and OFFSET: ("const", v), ("now",), ("value", f, type), ("like", f, a, b).
    slots: tuple
    reader: RowReader
    # Column aliases the SQL that runs types for the cursor's converters: ((' AS "a"', ' AS "a [lrjson]"'), ...).
    typed: tuple = ()
    # Whether the SQL that runs names its parameters (SQLite: see run_sql).
    named: bool = False

    @functools.cached_property
    def run_sql(self) -> str:
        """The SQL that runs: `sql` with the typed aliases, which are in its select list once each, and with
        `%(p0)s`... for its parameters when `named`: Django's SQLite cursor turns `%s` into `?` with a look-behind
        regex over the whole text on every execute (about 3 % of a page's CPU for 3 KB of SQL), and named
        parameters with one `%` formatting. Each `%s` is found by Django's own pattern, so `%%` stays `%%`."""
        head, from_, rest = self.sql.partition(" FROM ")
        for plain, typed in self.typed:
            head = head.replace(plain, typed)
        sql = head + from_ + rest
        if self.named:
            numbers = itertools.count()
            sql = _PLACEHOLDER.sub(lambda _match: f"%(p{next(numbers)})s", sql)
        return sql

    @functools.cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"p{n}" for n in range(len(self.slots) + 2))  # + LIMIT and OFFSET


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
    typed = _typed_aliases(sql.partition(" FROM ")[0], compiler)
    reader = RowReader(compiler, converted={pos for pos, _plain, _typed in typed})
    return Shape(
        sql[: -len(_DJANGO_TAIL)] + _TAIL,
        tuple(_slot(p, ops) for p in params),
        reader,
        tuple((plain, typed) for _pos, plain, typed in typed),
        named=connections[alias].vendor == "sqlite",
    )


def _typed_aliases(select: str, compiler) -> list[tuple[int, str, str]]:
    """(position, alias, typed alias) of each column the cursor can convert (public_list.cursor_conversions) whose
    alias is in the select list `select` exactly once; a column that is not stays with its formatter."""
    quote = compiler.connection.ops.quote_name
    typed = []
    for pos, converter in cursor_conversions(compiler).items():
        name = compiler.select[pos][2]
        plain = f" AS {quote(name)}"
        if name and "[" not in name and select.count(plain) == 1:
            typed.append((pos, plain, f" AS {quote(f'{name} [{converter}]')}"))
    return typed


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
    params = _params(shape, query.filters, now, connection.ops, page.start, page.size)
    with connection.cursor() as cursor:
        cursor.execute(shape.run_sql, dict(zip(shape.param_names, params, strict=True)) if shape.named else params)
        rows = cursor.fetchall()
    return shape.reader.public_nodes(rows, connection)

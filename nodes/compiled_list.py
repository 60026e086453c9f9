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
(nodes.public_list.cursor_conversions).

A plain GET of the list goes one step further on SQLite (page_json): the checked SQL, with the values PublicNode
makes of several columns added to its select list, gives the rows, the page is written as JSON by position
(nodes.json_page), and it reaches the renderer as JSON text. Each row's text is kept in the process
(WrittenRows), known by the row's version where SQLite keeps one (nodes.list_version), else by its values; and a
request that asked no count (one kept in the cache) asks first for the page's rows' keys alone (id, version, owner's
handle, relay's URL), which is the whole page when every row's text is kept (page_json)."""

import functools
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import NamedTuple

import orjson
from django.db import DatabaseError, connections, router

from core import renderers
from core.paging import Page
from nodes import json_page, list_version, queries
from nodes.models import Node
from nodes.public_list import JSON, STORED_TEXT, WIRE_TIME, RowReader, cursor_conversions, public_nodes
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
# A column of the page's select list: `"table"."column" AS "alias"`.
_COLUMN = re.compile(r'("[^"]+"\."[^"]+") AS "([^"]+)"')
# An ORDER BY term naming a column: `"table"."column" ASC`.
_DIRECTION = re.compile(r"(?:ASC|DESC)(?: NULLS (?:FIRST|LAST))?")
_COLUMN_TERM = re.compile(r'"[^"]+"\."[^"]+" ' + _DIRECTION.pattern)
_VERSION = f'"{Node._meta.db_table}"."{list_version.COLUMN}"'
# A kept row's key, with its version second: what its text shows beside the node's own row (nodes.list_version).
_KEYED = ("id", "owner__handle", "relay__public_url")
# A parameter, as Django's SQLite cursor finds them (django.db.backends.sqlite3.base.FORMAT_QMARK_REGEX).
_PLACEHOLDER = re.compile(r"(?<!%)%s")


class JsonSQL(NamedTuple):
    sql: str
    writing: tuple  # what json_page.row_texts writes a row's text with, after the rows
    key: Callable | None  # a row's (id, version, handle, relay URL), where the database keeps versions


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
    # Whether the database keeps a version of each row (nodes.list_version): rows kept are known by it.
    versioned: bool = False

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
        return _named(sql) if self.named else sql

    @functools.cached_property
    def json_sql(self) -> "JsonSQL | None":
        """The page as JSON (nodes.json_page.page_body), or None where it does not run. The SQL is the checked SQL
        itself, as run_sql runs it (its JSON columns read by orjson alone, its timestamps as stored), with the values
        PublicNode makes of several columns (json_page.select_list) added at the end of its select list, and the
        row's version where the database keeps one (`versioned`): its rows, their order (ORDER BY names columns by
        position) and its parameters are the checked query's. Only on SQLite whose cursor converts the page's
        timestamps and JSON columns on the compiled path: json_page reads timestamps stored as naive UTC and JSON
        values decoded."""
        converted = {plain.split('"')[1]: typed.split('"')[1] for plain, typed in self.typed}
        json_columns = {name for name, typed in converted.items() if typed.endswith(f"[{JSON}]")}
        times = {name for name, typed in converted.items() if typed.endswith(f"[{WIRE_TIME}]")}
        if not self.named or times != json_page.TIMES or json_columns != json_page.JSON_VALUES:
            return None
        head, from_, rest = self.sql.partition(" FROM ")
        columns = self.columns
        if columns is None:
            return None
        for plain, typed in self.typed:  # timestamps as SQLite holds them: json_page.wire_times, for the page
            head = head.replace(plain, typed.replace(f"[{JSON}]", f"[{STORED_TEXT}]").replace(WIRE_TIME, STORED_TEXT))
        expressions, then, pieces = json_page.select_list(columns.__getitem__)
        times = tuple(n for n, (_sql, name) in enumerate(expressions) if name in json_page.TIMES)
        json_values = tuple(n for n, (_sql, name) in enumerate(expressions) if name in json_page.JSON_VALUES)
        names, made = list(columns), []
        positions = []
        for sql, name in expressions:
            if name is None:
                positions.append(len(names) + len(made))
                made.append(f'{sql} AS "made{len(made)}"')
            else:
                positions.append(names.index(name))
        key = None
        if self.keys_sql is not None:
            key = itemgetter(names.index("id"), len(names) + len(made), *map(names.index, _KEYED[1:]))
            made.append(f'{_VERSION} AS "{list_version.COLUMN}"')
        # The cursor formats the SQL with its parameters (`%` operator): a `%` of the added SQL is written `%%`.
        added = "".join(f", {sql}" for sql in made).replace("%", "%%")
        writing = (itemgetter(*positions), then, times, pieces, json_values)
        return JsonSQL(_named(head + added + from_ + rest), writing, key)

    @functools.cached_property
    def columns(self) -> dict[str, str] | None:
        """{alias: SQL} of the checked SQL's select list, in its order; None when a column is not `"t"."c" AS "a"`."""
        head = self.sql.partition(" FROM ")[0]
        columns = {alias: sql for sql, alias in _COLUMN.findall(head)}
        return columns if len(columns) == head.count(" AS ") else None

    @functools.cached_property
    def keys_sql(self) -> str | None:
        """The page's rows' keys, in its order (page_json: a page whose rows are all kept): `(id, version, owner's
        handle, relay's URL)`, the checked SQL with only those in its select list, and ORDER BY naming columns, not
        positions. None where the database keeps no version or the order is not a list of the select list's
        columns."""
        if not self.versioned or self.columns is None or not set(_KEYED) <= set(self.columns):
            return None
        head, from_, rest = self.sql.partition(" FROM ")
        where, order_by, tail = rest.rpartition(" ORDER BY ")
        # The parameters must stay those of the checked SQL, in its order: none may be in what is left out.
        if not order_by or not tail.endswith(_TAIL) or _PLACEHOLDER.search(head + tail[: -len(_TAIL)]):
            return None
        columns = list(self.columns.values())
        terms = []
        for term in tail[: -len(_TAIL)].split(", "):
            position, _space, direction = term.partition(" ")
            if position.isdigit():
                if not 1 <= int(position) <= len(columns) or not _DIRECTION.fullmatch(direction):
                    return None
                term = f"{columns[int(position) - 1]} {direction}"
            elif not _COLUMN_TERM.fullmatch(term):
                return None
            terms.append(term)
        id_, *joined = (self.columns[name] for name in _KEYED)
        select = f"SELECT {id_}, {_VERSION}, {', '.join(joined)}"
        sql = select + from_ + where + " ORDER BY " + ", ".join(terms) + _TAIL
        return _named(sql) if self.named else sql

    @functools.cached_property
    def keyed_run_sql(self) -> str | None:
        """run_sql with the row's version added last to its select list (page_json on PostgreSQL, where the page
        is read the ordinary way): its rows are run_sql's, and each brings its own key (`key_of_run_row`)."""
        if self.keys_sql is None:
            return None
        head, from_, rest = self.run_sql.partition(" FROM ")
        return f"{head}, {_VERSION}{from_}{rest}"

    @functools.cached_property
    def key_of_run_row(self) -> Callable:
        """A keyed_run_sql row's key, as keys_sql gives it."""
        names = self.reader.names
        return itemgetter(names.index("id"), len(names), *map(names.index, _KEYED[1:]))

    @functools.cached_property
    def written_scope(self) -> int:
        """This shape's part of WRITTEN: a shape compiled again (another layout in a test) starts with none."""
        return next(_written_scopes)

    @functools.cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"p{n}" for n in range(len(self.slots) + 2))  # + LIMIT and OFFSET


def _named(sql: str) -> str:
    numbers = itertools.count()
    return _PLACEHOLDER.sub(lambda _match: f"%(p{next(numbers)})s", sql)


# Rows whose text a process keeps (WrittenRows), all shapes together: ten pages of 200, about 3 KB each with its key.
MAX_WRITTEN_ROWS = 2000
_written_scopes = itertools.count()

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
        versioned=_versioned(connections[alias]),
    )


def _versioned(connection) -> bool:
    """Whether the database keeps row versions (nodes.list_version), read from the catalog once per shape."""
    if connection.vendor not in ("sqlite", "postgresql"):
        return False
    connection.ensure_connection()
    return list_version.installed(connection.vendor, connection.connection)


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


def _shape(query: queries.ListQuery, page: Page, now: datetime) -> tuple[str, Shape | None]:
    """(database alias, the compiled shape of `query`, or None: the ordinary path), compiled on first use."""
    alias = router.db_for_read(Node)
    key = (alias, query.order, present(query.filters))
    shape = _shapes.get(key, False)
    if shape is False:
        shape = _compile(alias, query.order, key[2])
        if not _checked(alias, shape, query, now, page):
            log.warning("node list: shape %s compiles to other SQL than Django's: compiled per request", key)
            shape = None
        _shapes[key] = shape
    return alias, shape


def _fetch(alias: str, shape: Shape, sql: str, query: queries.ListQuery, page: Page, now: datetime) -> list:
    connection = connections[alias]
    params = _params(shape, query.filters, now, connection.ops, page.start, page.size)
    with connection.cursor() as cursor:
        cursor.execute(sql, dict(zip(shape.param_names, params, strict=True)) if shape.named else params)
        return cursor.fetchall()


def page_nodes(query: queries.ListQuery, page: Page, now: datetime) -> list[dict]:
    """PublicNode of each listed rig on `page` of the list `query` asks for, listed as at `now` (one query, none
    past the end)."""
    if page.start >= page.count:
        return []
    alias, shape = _shape(query, page, now)
    if shape is None:
        return public_nodes(_page_rows(alias, query, now, page.start, page.size))
    return shape.reader.public_nodes(_fetch(alias, shape, shape.run_sql, query, page, now), connections[alias])


def page_json(
    query: queries.ListQuery, page: Page, now: datetime, keys_first: bool = False
) -> tuple[bytes, int] | None:
    """(the JSON array of what page_nodes gives, as the renderer (core.renderers.FastJSONRenderer) writes it, and
    its length), written by position (nodes.json_page); None where the shape cannot or the page holds a value it
    cannot write: page_nodes then (one more query, for such a page only).

    `keys_first` (the list asked no count this request): where the database keeps row versions, ask first for the
    page's rows' keys alone, and when this process keeps the text of every one of them, the page is those texts;
    else (a row new or changed since) the page is read whole, as without `keys_first`. So a list request costs two
    queries at most, three for a page that cannot be written so (page_nodes then reads it again)."""
    if page.start >= page.count:
        return b"[]", 0
    alias, shape = _shape(query, page, now)
    json_sql = shape.json_sql if shape is not None else None
    if json_sql is None:
        return _known_or_written(alias, shape, query, page, now) if keys_first and shape is not None else None
    try:
        if keys_first and shape.keys_sql is not None:
            texts = WRITTEN.known(_fetch(alias, shape, shape.keys_sql, query, page, now), shape.written_scope)
            if texts is not None:
                return b"[" + b",".join(texts) + b"]", len(texts)
        fetched = _fetch(alias, shape, json_sql.sql, query, page, now)
        texts = WRITTEN.texts(fetched, json_sql.writing, shape.written_scope, json_sql.key)
    # A JSON text orjson refuses; text that is not UTF-8 (the ordinary path's converters refuse it)
    except (orjson.JSONDecodeError, DatabaseError, UnicodeDecodeError):
        return None
    return None if texts is None else (b"[" + b",".join(texts) + b"]", len(texts))


def _known_or_written(alias: str, shape: Shape, query, page: Page, now) -> tuple[bytes, int] | None:
    """page_json where the page is not written by position (PostgreSQL), with keys first: the page's rows' keys,
    and the kept texts when there is one for each; else the page read the ordinary way with each row's key (one
    more query), each rig's PublicNode written as the renderer writes it and kept under its key."""
    if shape.keys_sql is None:
        return None
    try:
        texts = WRITTEN.known(_fetch(alias, shape, shape.keys_sql, query, page, now), shape.written_scope)
        if texts is not None:
            return b"[" + b",".join(texts) + b"]", len(texts)
        rows = _fetch(alias, shape, shape.keyed_run_sql, query, page, now)
    except DatabaseError:
        return None
    nodes = shape.reader.public_nodes([row[:-1] for row in rows], connections[alias])
    texts = [renderers.dumps(node) for node in nodes]
    if None in texts:
        return None  # a value orjson cannot write: the renderer's own fallback, with page_nodes
    WRITTEN.keep(map(shape.key_of_run_row, rows), texts, shape.written_scope)
    return b"[" + b",".join(texts) + b"]", len(texts)


class WrittenRows:
    """The JSON text of rows written lately, by the row as the database gave it (nodes.json_page.row_texts): a
    page's rows come back the same between two requests unless one of their columns changed, and a row that comes
    back is not written again. The key is every value the text is made of, with its type and, for a float, its
    exact bits (-0.0 and 0.0 are equal in Python, 1 and 1.0 too, but not in JSON): a changed value is a new key, so
    a list never shows a rig as it was, whatever changed it (a heartbeat, the admin, a migration). Where the
    database keeps row versions (nodes.list_version), a row is known instead by `(id, version, owner's handle,
    relay's URL)`, which changes with any of those values (JsonSQL.key, Shape.keys_sql). One per process
    (WRITTEN), each shape's rows apart (`scope`), bounded for all of them together: past MAX_WRITTEN_ROWS the oldest
    half is forgotten, so that asking for many filters cannot grow it (docs/benchmarks.md, "Seventh pass")."""

    def __init__(self):
        self.kept: dict[tuple, bytes] = {}

    @staticmethod
    def key(row: tuple) -> tuple:
        return (row, tuple(map(type, row)), tuple(value.hex() for value in row if type(value) is float))

    def known(self, keys: list, scope: int) -> list[bytes] | None:
        """The texts kept for each of `keys` (a row's `(id, version, handle, relay URL)`, as JsonSQL.key gives
        it), or None when one is not kept."""
        kept = self.kept
        texts = [kept.get((scope, tuple(key))) for key in keys]
        return None if None in texts else texts

    def keep(self, keys, texts: list[bytes], scope: int) -> None:
        """Keep `texts` under `keys` (a row's key, as JsonSQL.key gives it)."""
        kept = self.kept
        for key, text in zip(keys, texts, strict=True):
            kept[(scope, key)] = text
        self._bound()

    def texts(self, rows: list, writing: tuple, scope: int, key: Callable | None = None) -> list[bytes] | None:
        """The text of each of `rows`, written for those not kept. `key`: a row's `(id, version, handle, relay
        URL)` where the database keeps versions (nodes.list_version), else the row is known by its values
        (WrittenRows.key)."""
        kept = self.kept
        keys = [(scope, key) for key in map(key or self.key, rows)]
        texts = list(map(kept.get, keys))
        missing = [n for n, text in enumerate(texts) if text is None]
        if missing:
            written = json_page.row_texts([rows[n] for n in missing], *writing)
            if written is None:
                return None
            for n, text in zip(missing, written, strict=True):
                texts[n] = kept[keys[n]] = text
            self._bound()
        return texts

    def _bound(self) -> None:
        kept = self.kept
        if len(kept) > MAX_WRITTEN_ROWS:  # the oldest go, half of what is kept at once: this runs rarely
            for old in list(kept)[: max(len(kept) - MAX_WRITTEN_ROWS, len(kept) // 2)]:
                kept.pop(old, None)  # another thread (gthread workers) may have let it go


WRITTEN = WrittenRows()

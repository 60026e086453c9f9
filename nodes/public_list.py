"""PublicNode lists at speed: the node list renders up to 200 PublicNodes per request, and on a big registry
Django's per-value converters cost more than the query itself (docs/benchmarks.md, "Node list": a datetime is
parsed from SQLite's text into a datetime to be formatted back into text, each JSON column decoded with the
standard library's decoder).

`public_nodes` runs the same `.values()` query as `public_rows`, reads the database's own values, and turns each
column into what PublicNode shows with one formatter chosen per column up front: a timestamp SQLite stored as
datetime goes straight to the wire format, a JSON column is decoded by orjson; every other column keeps Django's
converters. The dicts then go through the one PublicNode builder (nodes.public_node.public_node), so the shape
cannot drift; tests/nodes/test_public_list.py holds the output equal to public_node over `.values()` rows.

On SQLite the compiled page query (nodes.compiled_list) goes one step further: its timestamp and JSON columns are
aliased `"name [lrwiretime]"` / `"name [lrjson]"`, and Python's sqlite3 module (which Django opens with
PARSE_COLNAMES) then hands each value to the converter registered here for that name, in the fetch itself: the
stored text becomes the wire time by slicing, without a datetime made and formatted back (Django's converter
parses every timestamp into one), and a JSON column is decoded there, so the row needs no formatter at all
(docs/benchmarks.md, "Third pass")."""

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import orjson
from django.conf import settings
from django.db import models
from django.db.models.expressions import Col
from django.db.models.sql.constants import MULTI
from django.utils.dateparse import parse_datetime

from core.timefmt import iso
from nodes.public_node import public_node

# sqlite3 converter names (sqlite3.register_converter, below): a column aliased "name [lrwiretime]" arrives as
# its wire time, one aliased "name [lrjson]" decoded.
WIRE_TIME = "lrwiretime"
JSON = "lrjson"
# A timestamp or JSON column's text as SQLite holds it (nodes.json_page: a page's wire times made at once, and
# each JSON text read by orjson alone, only for a row not written lately, nodes.compiled_list.WrittenRows): what
# the WIRE_TIME and JSON converters read, decoded; Django's converter for its declared type would parse it. A JSON
# text only the standard library reads (NaN, infinity) fails orjson, and the page is then read the ordinary way,
# with JSON; whatever orjson reads, it reads as _decoded does (which tries orjson first).
STORED_TEXT = "lrstoredtext"


def _naive_utc_time(value) -> str | None:
    """The wire time (core.timefmt.iso) of a timestamp the database gives without a zone, in UTC (SQLite with
    USE_TZ: Django would make it aware in UTC first). isoformat cuts to milliseconds as iso does."""
    if value is None:
        return None
    if value.tzinfo is not None:
        return iso(value)
    return value.isoformat(timespec="milliseconds") + "Z"


def _aware_time(value) -> str | None:
    return None if value is None else iso(value)


def _json(value, _expression, _connection):
    if not isinstance(value, str):
        return value
    return _decoded(value)


def _decoded(text: str | bytes):
    """A JSON column's value as Django's JSONField reads it (json.loads; the text itself when that fails)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what only the standard library reads (NaN, integers beyond 64 bits)
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text if isinstance(text, str) else text.decode()


def _wire_time_of_text(raw: bytes) -> str:
    """The wire time (core.timefmt.iso) of a timestamp as SQLite stores it for Django: the text of a naive UTC
    datetime (`str()`: "2026-11-03 09:15:27" or "2026-11-03 09:15:27.999999"), cut to milliseconds as iso
    cuts. Any other text is read as Django reads it (django.utils.dateparse, a naive one in UTC)."""
    text = raw.decode()
    size = len(text)
    # The shape checked place by place, and the value by fromisoformat: it also reads week dates, commas and
    # zones, which slicing would get wrong.
    if (
        (size == 19 or (size == 26 and text[19] == "."))
        and text[10] == " "
        and text[4] == text[7] == "-"
        and text[13] == text[16] == ":"
    ):
        try:
            naive = datetime.fromisoformat(text).tzinfo is None
        except ValueError:
            naive = False
        if naive:
            return f"{text[:10]}T{text[11:23]}Z" if size == 26 else f"{text[:10]}T{text[11:19]}.000Z"
    value = parse_datetime(text)
    if value is None:
        raise ValueError(f"not a timestamp: {text!r}")
    return iso(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


sqlite3.register_converter(WIRE_TIME, _wire_time_of_text)
sqlite3.register_converter(JSON, _decoded)
sqlite3.register_converter(STORED_TEXT, bytes.decode)


def cursor_conversions(compiler) -> dict[int, str]:
    """{position: converter name} for the columns of a compiled `public_rows(...)` query that the cursor itself
    can turn into what PublicNode shows, when the query's SQL aliases them "name [converter]" (compiled_list
    does): on SQLite, opened with PARSE_COLNAMES, a plain timestamp column stored as naive UTC and a plain JSON
    column with the standard decoder. Empty elsewhere."""
    connection = compiler.connection
    if connection.vendor != "sqlite" or not connection.get_connection_params()["detect_types"] & sqlite3.PARSE_COLNAMES:
        return {}
    naive_is_utc = settings.USE_TZ and connection.timezone.utcoffset(None) == timedelta(0)
    conversions = {}
    for pos, (expression, _sql, _alias) in enumerate(compiler.select[: compiler.col_count]):
        if not isinstance(expression, Col):
            continue
        field = expression.output_field
        if isinstance(field, models.DateTimeField) and naive_is_utc:
            conversions[pos] = WIRE_TIME
        elif isinstance(field, models.JSONField) and not field.decoder:
            conversions[pos] = JSON
    return conversions


def _column_formatters(compiler, fields) -> list:
    """One function per column (or None: the value is used as it is), from the query's own fields."""
    django_converters = compiler.get_converters(fields)
    formatters = []
    for pos, expression in enumerate(fields):
        field = getattr(expression, "output_field", None)
        convs = django_converters.get(pos, ((), None))[0]
        if isinstance(field, models.DateTimeField):
            formatters.append(_time_formatter(convs, compiler.connection))
        elif isinstance(field, models.JSONField) and not field.decoder:
            formatters.append(_json)
        elif convs:
            formatters.append(_chain(convs))
        else:
            formatters.append(None)
    return formatters


def _chain(convs):
    def convert(value, expression, connection):
        for converter in convs:
            value = converter(value, expression, connection)
        return value

    return convert


def _time_formatter(convs, connection):
    """A timestamp column's formatter: straight to the wire format when the database's value is a datetime (naive
    ones in UTC), else Django's converters first (text from a backend that parses nothing)."""
    naive_is_utc = settings.USE_TZ and connection.timezone.utcoffset(None) == timedelta(0)
    fast = _naive_utc_time if naive_is_utc else _aware_time
    slow = _chain(convs)

    def convert(value, expression, connection):
        if value is None or (isinstance(value, datetime) and (naive_is_utc or value.tzinfo is not None)):
            return fast(value)
        return iso(slow(value, expression, connection))

    return convert


def _as_is(value):
    return value


def public_nodes(rows) -> list[dict]:
    """PublicNode of each row of `rows`, a sliced `public_rows(...)` queryset (one query)."""
    query = rows.query
    compiler = query.get_compiler(using=rows.db)
    results = compiler.execute_sql(MULTI)
    if results is None:  # an empty slice: Django asks nothing
        return []
    return RowReader(compiler).public_nodes((row for chunk in results for row in chunk), compiler.connection)


class RowReader:
    """How to turn the rows of a compiled `public_rows(...)` query into PublicNodes: the column names and one
    formatter per column, worked out once from the query's compiler (nodes.compiled_list keeps one per query
    shape and reuses it for every page of that shape)."""

    def __init__(self, compiler, converted=()):
        """`converted`: the positions of the columns the cursor gives as PublicNode shows them already
        (cursor_conversions)."""
        query = compiler.query
        fields = [s[0] for s in compiler.select[: compiler.col_count]]
        self.names = [*query.extra_select, *query.values_select, *query.annotation_select]
        self.formatters = [
            (pos, formatter, expression)
            for pos, formatter, expression in zip(
                range(len(self.names)), _column_formatters(compiler, fields), fields, strict=True
            )
            if formatter is not None and pos not in converted
        ]

    def public_nodes(self, rows, connection) -> list[dict]:
        """PublicNode of each of `rows`, the database's own tuples (`connection`: the one that read them)."""
        names, formatters, width = self.names, self.formatters, len(self.names)
        # Each row's dict is a copy of one with its keys, then filled: a copy takes the keys' table whole, where
        # dict(zip(...)) grows it key by key (four resizes for 43 keys) and zip(strict=True) tests every step;
        # the width is tested once a row instead. Same keys, same order, same values.
        keys = dict.fromkeys(names)
        out = []
        for raw in rows:
            if len(raw) != width:
                raise ValueError(f"a row of {len(raw)} columns for {width} names")
            if formatters:
                raw = list(raw)
                for pos, formatter, expression in formatters:
                    raw[pos] = formatter(raw[pos], expression, connection)
            row = keys.copy()
            row.update(zip(names, raw, strict=False))  # the width is tested above
            out.append(public_node(row, time=_as_is))
        return out

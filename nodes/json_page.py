"""The node list's page as JSON text, by position (docs/benchmarks.md, "Node list", "Sixth pass"): building 50 dicts
of 43 columns, then 50 PublicNode dicts, then encoding them, cost most of a page's CPU on SQLite, nearly all of it
in the interpreter.

So on SQLite a plain GET's page (nodes.compiled_list.page_json) reads the checked page SQL with the relayed
endpoint added to its select list (made there as nodes.public_node.endpoint_of makes it), takes each row's values
in PublicNode's order, and writes the page with a few calls for all its rows, none per value: the values of every
row in one list, encoded by orjson in one call with a mark between them (a byte no JSON text holds raw), split back
at the marks, and put between the pieces of PublicNode's text that do not change from row to row (its keys,
braces, the empty `circles`). Every value is encoded by orjson as the renderer encodes PublicNode's dicts, from
the same value: the cursor's own (JSON columns decoded by orjson, as nodes.public_list decodes them when orjson
can), the wire time of each timestamp as the cursor's converter makes it (wire_times: a page's at once when they
are all in Django's form), the circle-only hours sorted and the model file made by the builder's own functions.

The layout below follows nodes.public_node.public_node key for key; tests/nodes/test_json_page.py holds its key
tree equal to the builder's and the page's bytes equal to the renderer's over odd rows. A page orjson cannot
encode (a BLOB), whose fetch fails (a JSON text orjson refuses, text that is not UTF-8) or whose relayed rig has a
relay URL or an id that is not text, is built the ordinary way (one more query, for such a page only)."""

import itertools
import re
from operator import itemgetter

import orjson

from nodes.model_files import model_file
from nodes.models import Node
from nodes.public_list import _wire_time_of_text


def _sorted_hours(hours):
    return sorted(hours or ())


class C:
    """A column's value as the cursor gives it, through `then` if any."""

    def __init__(self, column: str, then=None):
        self.column, self.then = column, then


ENDPOINT = object()  # endpoint_url (nodes.public_node.endpoint_of, made in SQL: _endpoint)

# PublicNode (nodes.public_node.public_node), key for key; a dict is an object of the same layout, a list a
# constant.
LAYOUT = {
    "id": C("id"),
    "display_name": C("display_name"),
    "endpoint_url": ENDPOINT,
    "model_name": C("model_name"),
    "quantization": C("quantization"),
    "lora": C("lora"),
    "gpu": C("gpu"),
    "vram_gb": C("vram_gb"),
    "context_length": C("context_length"),
    "tuning_note": C("tuning_note"),
    "availability_note": C("availability_note"),
    "tags": C("tags"),
    "visibility": C("visibility"),
    "node_public_key": C("node_public_key"),
    "node_public_key_fingerprint": C("node_public_key_fingerprint"),
    "created_at": C("created_at"),
    "updated_at": C("updated_at"),
    "rarity_score": C("rarity_score"),
    "showcase": C("showcase"),
    "contribution": {
        "total": C("contribution_total"),
        "tier": C("contribution_tier"),
        "components": C("contribution_components"),
    },
    "health": {
        "status": C("status"),
        "last_seen_at": C("last_seen_at"),
        "latency_ms": C("latency_ms"),
        "uptime_ratio_24h": C("uptime_ratio_24h"),
    },
    "queue": {
        "active": C("queue_active"),
        "waiting": C("queue_waiting"),
        "max_active": C("queue_max_active"),
        "updated_at": C("queue_updated_at"),
    },
    "community_timing": {
        "samples_count": C("timing_samples_count"),
        "by_source": {"relay": C("timing_samples_relay"), "taster": C("timing_samples_taster")},
        "tok_per_sec_p50": C("tok_per_sec_p50"),
        "ttft_ms_p50": C("ttft_ms_p50"),
        "last_uploaded_at": C("timing_last_uploaded_at"),
    },
    "owner": {"id": C("owner__id"), "handle": C("owner__handle")},
    "reachability": C("reachability"),
    "circles": [],  # a list never says whom a rig is shared with
    "circle_only_hours": C("circle_only_hours", _sorted_hours),
    "model_file": C("model_identity", model_file),
}
# The layout's timestamps (the cursor gives their wire time) and JSON columns (decoded by the cursor).
TIMES = {"created_at", "updated_at", "last_seen_at", "queue_updated_at", "timing_last_uploaded_at"}
JSON_VALUES = {"tags", "showcase", "contribution_components", "circle_only_hours", "model_identity"}


def _endpoint(column) -> str:
    """nodes.public_node.endpoint_of in SQL: a direct rig's own URL; a relayed one's base on its relay, None
    without one. A relay URL or an id that is not text (a BLOB) gives a BLOB, which orjson refuses: the page is
    then built the ordinary way, which shows such a value as it always did."""
    reachability, relay, id_ = column("reachability"), column("relay__public_url"), column("id")
    return (
        f"CASE WHEN {reachability} IS NOT '{Node.Reachability.RELAYED}' THEN {column('endpoint_url')}"
        f" WHEN {relay} IS NULL THEN NULL"
        f" WHEN typeof({relay}) <> 'text' OR typeof({id_}) <> 'text' THEN X''"
        f" WHEN {relay} = '' THEN NULL"
        f" ELSE rtrim({relay}, '/') || '/n/' || {id_} || '/v1' END"
    )


def select_list(column) -> tuple[list[tuple[str, str | None]], tuple, tuple[bytes, ...]]:
    """(SELECT expressions, each with the column it reads (None: made in SQL), the functions to apply as
    (position, function), the row's text pieces: before the first value, between values, after the last) of the
    layout. `column(alias)` is the SQL of a select alias of the page query."""
    expressions, then, pieces, text = [], [], [], []

    def walk(layout: dict) -> None:
        text.append("{")
        for n, (key, value) in enumerate(layout.items()):
            text.append(("," if n else "") + orjson.dumps(key).decode() + ":")
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, list):
                text.append(orjson.dumps(value).decode())
            else:
                pieces.append("".join(text).encode())
                text.clear()
                if value is ENDPOINT:
                    expressions.append((_endpoint(column), None))
                else:
                    if value.then is not None:
                        then.append((len(expressions), value.then))
                    expressions.append((column(value.column), value.column))
        text.append("}")

    walk(LAYOUT)
    pieces.append("".join(text).encode())
    return expressions, tuple(then), tuple(pieces)


def _leaves(layout: dict):
    for value in layout.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        elif not isinstance(value, list):
            yield value


# A timestamp as Django stores it on SQLite with microseconds (`str()` of a naive UTC datetime) that
# datetime.fromisoformat reads, so that its wire time is a slice (nodes.public_list._wire_time_of_text): ASCII
# digits, years 1 to 9999, hours 0 to 23, minutes and seconds 0 to 59, and a day the month has; February 29th is
# left to fromisoformat, with every text of another form.
_STORED = (
    r"(?!0000)[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r" (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}"
)
_STORED_TIMES = re.compile(f"(?:{_STORED}\n)*{_STORED}")
_FIRST_23 = itemgetter(slice(0, 23))


def _wire_time(text: str | None) -> str | None:
    return None if text is None else _wire_time_of_text(text.encode())


def wire_times(texts: list) -> list | None:
    """The wire times (core.timefmt.iso) of a page's stored timestamps (text, or None): sliced all at once when
    every one is in Django's form with microseconds (_STORED), else each by _wire_time_of_text. None when one is
    not text (the page is then read the ordinary way, whose converter reads what SQLite holds as bytes)."""
    present = [text for text in texts if text is not None]
    if not all(type(text) is str for text in present):
        return None
    if not present:
        return texts
    joined = "\n".join(present)
    if _STORED_TIMES.fullmatch(joined) is None:
        return list(map(_wire_time, texts))
    wired = iter(map(str.__add__, map(_FIRST_23, joined.replace(" ", "T").split("\n")), itertools.repeat("Z")))
    return [None if text is None else next(wired) for text in texts]


# Between the values of a page, encoded in one orjson call: a byte no JSON text holds raw (orjson escapes it in a
# string), so that the output splits back into one text per value exactly.
_MARK = orjson.Fragment(b"\x01")


def _json_value(text):
    return None if text is None else orjson.loads(text)


def row_texts(rows, order, then: tuple, times: tuple, pieces: tuple[bytes, ...], json_values: tuple = ()):
    """Each row's PublicNode as JSON text, from rows that `order` (an itemgetter) turns into the values of
    select_list's expressions, the JSON columns at `json_values` as stored text (read by orjson; a text it refuses
    raises orjson.JSONDecodeError) and the timestamps at `times` as SQLite stores them (wire_times); None when orjson
    cannot encode a value or a timestamp is not text: the page is then built the ordinary way."""
    if not rows:
        return []
    width = len(pieces) - 1
    values = list(itertools.chain.from_iterable(map(order, rows)))
    if len(values) != width * len(rows):
        raise ValueError(f"{len(values)} values for {len(rows)} rows of {width}")
    for pos in json_values:
        values[pos::width] = map(_json_value, values[pos::width])
    for pos, function in then:
        values[pos::width] = map(function, values[pos::width])
    for pos in times:
        wired = wire_times(values[pos::width])
        if wired is None:
            return None
        values[pos::width] = wired
    marked = [_MARK] * (2 * len(values))
    marked[1::2] = values
    try:
        encoded = orjson.dumps(marked)
    except orjson.JSONEncodeError:
        return None
    written = encoded[3:-1].split(b",\x01,")  # [\x01,v1,\x01,v2,...,\x01,vn]
    parts = [None] * (2 * width + 1)
    parts[0::2] = pieces
    texts = []
    for start in range(0, len(written), width):
        parts[1::2] = written[start : start + width]
        texts.append(b"".join(parts))
    return texts


def page_body(rows, order, then: tuple, times: tuple, pieces: tuple[bytes, ...], json_values: tuple = ()):
    """(The page's JSON array of PublicNodes, how many), as row_texts writes them; None where it gives None."""
    texts = row_texts(rows, order, then, times, pieces, json_values)
    return None if texts is None else (b"[" + b",".join(texts) + b"]", len(texts))

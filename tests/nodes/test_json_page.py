"""The node list's page written by position (nodes.json_page, through nodes.compiled_list.page_json) is, byte for
byte, what the renderer writes for the PublicNode dicts of the same page (core.renderers.FastJSONRenderer over
nodes.compiled_list.page_nodes), for rows that differ in every way a value can: unicode, every control character
(the mark between values among them), quotes and backslashes, None wherever a column takes it, floats such as 1e16
and 0.9583333333333334, timestamps in other forms than Django's, odd JSON columns, values of another type than
their column's, relayed and direct rigs, a reported model file or none. A page it cannot write so (a BLOB, a JSON
text orjson refuses) goes down the ordinary path, which answers as it always did."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.db import connection
from django.test import Client

from core.paging import Page
from core.renderers import FastJSONRenderer
from nodes import compiled_list, json_page, queries, rarity
from nodes import services as node_services
from nodes.models import Contributor, Node
from nodes.public_node import PUBLIC_COLUMNS, public_node
from tracker import relays

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite_only]  # json_page runs on SQLite only

BASE = datetime(2026, 11, 3, 9, 15, 27, tzinfo=UTC)
CONTROL = "".join(map(chr, range(1, 32))) + "\x7f"
TEXTS = ["", "plain", 'quote " back \\ slash /', CONTROL, "\u2028\u2029 ’ 日本語 🦙", "a\x00b", "x' OR '1'='1"]
FLOATS = [None, 0.0, -0.0, 48.0, 0.1, 0.9583333333333334, 1e16, 1e-7, 1.5e300, 123456789.123, 5e-324]


@pytest.fixture
def fresh_shapes(monkeypatch):
    monkeypatch.setattr(compiled_list, "_shapes", {})
    monkeypatch.setattr(compiled_list, "WRITTEN", compiled_list.WrittenRows())
    return compiled_list._shapes


@pytest.fixture
def odd_nodes(db):
    relays.add_relay(relay_id="relay-a", public_url="https://relay-a.example.org//")
    relays.add_relay(relay_id="relay-b", public_url="")
    owners = [
        Contributor.objects.create(id=f"c_json{i}", handle=[None, "h", 'q"\\', "ラズ"][i], key_hash=f"{i:064x}")
        for i in range(4)
    ]
    nodes = []
    for i in range(60):
        text = TEXTS[i % len(TEXTS)]
        relayed = i % 3 == 0
        timed = i % 4
        nodes.append(
            Node(
                id=f"json-{i:03d}",
                owner=owners[i % len(owners)],
                display_name=text,
                reachability="relayed" if relayed else "direct",
                endpoint_url="" if relayed else f"https://rig{i}.example.com/v1?{text}",
                relay_id=["relay-a", "relay-b", None][i % 3] if relayed else None,
                model_name=TEXTS[(i + 1) % len(TEXTS)] or "Qwen",
                quantization="Q4_K_M",
                lora=TEXTS[(i + 2) % len(TEXTS)],
                gpu=["RTX 3090", "M2 Max", "rtx 4090"][i % 3],
                vram_gb=FLOATS[i % len(FLOATS)],
                context_length=[None, 0, 4096, 2**62][i % 4],
                tuning_note=TEXTS[(i + 3) % len(TEXTS)],
                availability_note=TEXTS[(i + 4) % len(TEXTS)],
                tags=(tags := [[], ["home"], ["日本語", 'q"', "\x01"], ["home", "a,b"]][i % 4]),
                tags_index=node_services.tags_index(tags),
                visibility="public",
                circle_only_hours=[[], [23, 0, 5], [12]][i % 3],
                node_public_key=[None, "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n"][i % 2],
                node_public_key_fingerprint=[None, "sha256:" + "A" * 43][i % 2],
                secret_hash=f"{i:064x}",
                combo_key=rarity.combo_key("RTX 3090", "Qwen", "Q4_K_M"),
                rarity_score=FLOATS[(i + 1) % len(FLOATS)] or 0.0,
                showcase=[[], [{"id": "cpu_rig", "label": "CPU \u2028 rig", "reason": 'no "GPU"'}]][i % 2],
                contribution_total=FLOATS[(i + 2) % len(FLOATS)] or 0.0,
                contribution_tier=["limited", "contributor", TEXTS[i % len(TEXTS)]][i % 3],
                contribution_components=[{}, {"existence": 1.0, "rarity": 0.9583333333333334, "big": 2**63 - 1}][i % 2],
                status=["available", "busy", "unknown"][i % 3],
                last_heartbeat_at=BASE,
                last_seen_at=[None, BASE, BASE.replace(microsecond=999_999)][i % 3],
                latency_ms=[None, 42, 0][i % 3],
                uptime_ratio_24h=FLOATS[(i + 3) % len(FLOATS)],
                queue_active=i % 3,
                queue_waiting=i % 5,
                queue_max_active=2,
                queue_updated_at=[None, BASE - timedelta(days=40, microseconds=1501)][i % 2],
                timing_samples_count=timed,
                timing_samples_taster=timed // 2,
                timing_samples_relay=timed - timed // 2,
                tok_per_sec_p50=FLOATS[(i + 4) % len(FLOATS)],
                ttft_ms_p50=FLOATS[(i + 5) % len(FLOATS)],
                timing_last_uploaded_at=[None, BASE][i % 2],
                model_identity=[None, {"sha256": "ab" * 32, "quantization": "Q4_K_M", "parameters": 7.6e9}, {}][i % 3],
            )
        )
    Node.objects.bulk_create(nodes)
    for i, node in enumerate(nodes):
        Node.objects.filter(pk=node.pk).update(created_at=BASE - timedelta(seconds=i), updated_at=BASE)
    return nodes


def _query(params=None):
    query = queries.parse_list_query(params or {"page_size": "200"})
    now = datetime.now(UTC)
    page = Page(query.page, query.page_size, Node.objects.listed(now=now).filter(queries.matching(query)).count())
    return query, page, now


def _render(data) -> bytes:
    return FastJSONRenderer().render(data, "application/json")


def _both(params=None):
    """(page_json's answer, rendered as the list renders it, and how many; the renderer's bytes for page_nodes'
    dicts)."""
    query, page, now = _query(params)
    written = compiled_list.page_json(query, page, now)
    expected = _render(compiled_list.page_nodes(query, page, now))
    return (None if written is None else (_render(orjson.Fragment(written[0])), written[1])), expected


def _set(node_id: str, column: str, value):
    with connection.cursor() as cursor:
        cursor.execute(f'UPDATE nodes_node SET "{column}" = %s WHERE id = %s', [value, node_id])  # noqa: S608


def test_sqlite_writes_the_renderers_bytes(odd_nodes, fresh_shapes):
    pages = ({"page_size": "200"}, {"page_size": "7", "page": "3"}, {"page_size": "7", "page": "99"})
    for order in queries.ORDERS:
        for filters in ({}, {"model": "qwen", "min_ctx": "0"}, {"tag": "home", "gpu": "rtx"}):
            for paging in pages:
                params = {**filters, **paging, "order": order}
                written, expected = _both(params)
                assert written is not None, params  # not the ordinary path
                assert written[0] == expected
                assert written[1] == len(orjson.loads(expected))
    assert len(orjson.loads(_both()[1])) == len(odd_nodes)
    assert all(shape is not None and shape.json_sql is not None for shape in fresh_shapes.values())
    assert 0 < len(orjson.loads(_both({"tag": "home", "gpu": "rtx", "page_size": "200"})[1])) < len(odd_nodes)


def test_the_answer_of_the_list_is_the_same_bytes(odd_nodes, fresh_shapes):
    """GET /api/nodes: a plain GET (page_json) and DRF's path (page_nodes' dicts) answer the same bytes."""
    plain = Client().get("/api/nodes?page_size=200")
    drf = Client().get("/api/nodes?page_size=200", HTTP_ACCEPT="application/json; indent=0")
    assert plain.status_code == drf.status_code == 200
    assert b"\\u2028" in plain.content and b"\xe2\x80\xa8" not in plain.content  # the renderer's escape, after
    assert orjson.loads(plain.content) == orjson.loads(drf.content)
    query, page, now = _query()
    assert orjson.loads(plain.content)["nodes"] == orjson.loads(compiled_list.page_json(query, page, now)[0])


def test_a_field_written_otherwise_is_seen(odd_nodes, fresh_shapes, monkeypatch):
    """The comparison above would fail for a field SQLite wrote otherwise: a key dropped, a value of another
    column, a timestamp's milliseconds."""
    _both()
    monkeypatch.setitem(json_page.LAYOUT, "lora", json_page.C("gpu"))
    fresh_shapes.clear()
    written, expected = _both()
    assert written is not None and written[0] != expected


@pytest.mark.parametrize(
    ("column", "value", "ordinary"),
    [
        ("context_length", 4096.5, False),  # a fraction in an integer column
        ("latency_ms", "12abc", False),  # text in an integer column
        ("vram_gb", "lots", False),  # text in a float column
        ("display_name", "a,\x01,b\x01", False),  # the mark between values, in a text
        ("contribution_components", '{"x": 1180591620717411303424}', False),  # beyond 64 bits: orjson, a float
        ("last_seen_at", "2026-11-03T09:15:27+02:00", False),  # another writer's timestamp (the cursor reads it)
        ("queue_updated_at", "2026-11-03 09:15:27.5", False),
        ("tags", "[1, 2.50, -0, 1E400]", True),  # infinity: only the standard library reads it
    ],
)
def test_odd_values_give_the_same_bytes(odd_nodes, fresh_shapes, column, value, ordinary):
    _set("json-005", column, value)
    written, expected = _both()
    if ordinary:
        assert written is None
    else:
        assert written is not None and written[0] == expected
    response = Client().get("/api/nodes?page_size=200")
    assert response.status_code == 200 and orjson.loads(response.content)["nodes"] == orjson.loads(expected)


def test_a_page_of_stored_times_is_sliced_at_once(odd_nodes, fresh_shapes, monkeypatch):
    """Every timestamp with microseconds, as Django stores them: the page's are sliced at once, to the same bytes."""
    odd = BASE.replace(microsecond=123_456)
    Node.objects.update(
        created_at=odd, updated_at=odd, last_seen_at=odd, queue_updated_at=None, timing_last_uploaded_at=odd
    )
    _both()
    monkeypatch.setattr(json_page, "_wire_time", None)  # one at a time would fail
    written, expected = _both()
    assert written is not None and written[0] == expected and b'"2026-11-03T09:15:27.123Z"' in expected


STORED = [
    "2026-11-03 09:15:27.999999",
    "0001-01-01 00:00:00.000000",
    "9999-12-31 23:59:59.999999",
    "2024-02-29 12:00:00.000001",  # leap day: left to fromisoformat
    "2026-02-29 12:00:00.000001",
    "2026-04-31 12:00:00.000001",
    "2026-13-01 12:00:00.000001",
    "0000-01-01 00:00:00.000000",
    "2026-12-31 24:00:00.000000",
    "2026-12-31 23:60:00.000000",
    "2026-12-31 23:59:60.000000",
    "２０２６-11-03 09:15:27.999999",
    "2026-11-03 09:15:27.99999９",
    "2026-11-03T09:15:27.999999",
    "2026-11-03 09:15:27",
]


def test_times_are_sliced_only_where_fromisoformat_reads_them():
    for year in (1900, 2000, 2023, 2024):
        for month in range(1, 13):
            for day in range(1, 32):
                STORED.append(f"{year:04d}-{month:02d}-{day:02d} 00:00:00.000001")
    for text in STORED:
        try:
            read = datetime.fromisoformat(text)
        except ValueError:
            read = None
        if json_page._STORED_TIMES.fullmatch(text):
            assert read is not None and read.tzinfo is None, text
            assert json_page.wire_times([text, None]) == [json_page._wire_time(text), None]
        elif read is not None and len(text) == 26 and text[10] == " " and text[5:10] != "02-29":
            raise AssertionError(f"{text!r} is left to one at a time")
    readable = [text for text in STORED if json_page._STORED_TIMES.fullmatch(text)]
    assert json_page.wire_times([None, *readable]) == [None, *map(json_page._wire_time, readable)]
    assert json_page.wire_times([None, "2026-11-03 09:15:27", *readable]) == [
        None,
        "2026-11-03T09:15:27.000Z",
        *map(json_page._wire_time, readable),
    ]
    assert json_page.wire_times([None, b"2026-11-03 09:15:27"]) is None


def test_a_blob_goes_the_ordinary_way(odd_nodes, fresh_shapes):
    """orjson refuses a BLOB (bytes); the ordinary path reads it as it always did."""
    _set("json-005", "lora", b"\x00\x01")
    written, _expected = _both()
    assert written is None


def test_the_layout_is_the_builders():
    """json_page.LAYOUT has PublicNode's keys, in its order, nested as it nests them."""
    row = dict.fromkeys(PUBLIC_COLUMNS)
    row["circle_only_hours"] = []

    def keys(value):
        return {k: keys(v) for k, v in value.items()} if isinstance(value, dict) else None

    built = public_node(row, time=lambda value: value)
    assert list(keys(built)) == list(json_page.LAYOUT)
    assert keys(built) == keys(json_page.LAYOUT)
    columns = {leaf.column for leaf in json_page._leaves(json_page.LAYOUT) if hasattr(leaf, "column")}
    assert columns | {"endpoint_url", "relay__public_url"} == set(PUBLIC_COLUMNS)


def test_a_row_written_lately_is_reused_only_while_every_value_is_the_same(odd_nodes, fresh_shapes, monkeypatch):
    """compiled_list.WrittenRows: a page asked again reuses its rows' text, and a row whose stored value changed is
    written again at once: never a rig as it was. The rows kept, all shapes together, stay under MAX_WRITTEN_ROWS."""
    written, expected = _both()
    assert written[0] == expected
    kept = compiled_list.WRITTEN.kept
    assert len(kept) == len(odd_nodes)
    writes = []
    row_texts = json_page.row_texts
    monkeypatch.setattr(json_page, "row_texts", lambda rows, *a: writes.append(len(rows)) or row_texts(rows, *a))
    assert _both() == (written, expected) and writes == []  # nothing written again
    for column, old, new in (
        ("status", "unavailable", "available"),  # json-001 is "busy" at first: each new value is one it never had
        ("rarity_score", 0.25, 0.5),
        ("vram_gb", 48, 24),
        ("tags", '["home"]', '["home", "gpu"]'),
        ("last_seen_at", "2026-11-03 09:15:28.000001", "2026-11-03 09:15:29.500000"),
    ):
        _set("json-001", column, old)
        first, expected = _both()
        _set("json-001", column, new)
        writes.clear()
        second, expected_now = _both()
        assert expected_now != expected, column  # the renderer shows the change...
        assert second[0] == expected_now and writes == [1], column  # ...and so does the page, writing one row
    monkeypatch.setattr(compiled_list, "MAX_WRITTEN_ROWS", 100)  # the bound holds for all shapes together
    for order in ("recent", "tok_per_sec", "context"):  # a new shape each, 60 rows each
        written, expected = _both({"page_size": "200", "order": order})
        assert written[0] == expected and len(kept) <= 100


def test_a_written_rows_key_tells_apart_values_python_finds_equal():
    """SQLite's column affinities turn 1.0 into 1 in an integer column and -0.0 into 0.0 in a real one, but a value
    of another type than its column's is kept as it is (see test_odd_values_give_the_same_bytes), and JSON writes
    these differently: the key holds each value's type and a float's exact bits."""
    key = compiled_list.WrittenRows.key
    assert key((0.0, "a")) != key((-0.0, "a")) and key((1, "a")) != key((1.0, "a")) != key((True, "a"))
    assert key(("1", None)) != key((1, None)) and key((0.5, "a")) == key((0.5, "a"))

"""The node list's fast paths (nodes.public_list.public_nodes: the database's own values, one formatter per column;
nodes.compiled_list.page_nodes: that, with the page's SQL compiled once per shape) give exactly what the one
PublicNode builder gives over `.values()` rows, for nodes that differ in every way the shape does: nulls, tags,
timestamps with and without microseconds, relayed and direct, community timing, owners with and without a handle,
circle-only hours, a reported model file; and circle rigs stay out of lists."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Q
from django.utils.dateparse import parse_datetime

from core.paging import Page
from core.timefmt import iso
from nodes import compiled_list, queries, rarity
from nodes import services as node_services
from nodes.models import Contributor, Node
from nodes.public_list import _decoded, _naive_utc_time, _wire_time_of_text, public_nodes
from nodes.public_node import public_node, public_rows
from tracker import relays

pytestmark = pytest.mark.django_db

BASE = datetime(2026, 11, 3, 9, 15, 27, tzinfo=UTC)


def _time(rng):
    """None, a whole second, or microseconds that truncation and rounding would tell apart."""
    return rng.choice([None, BASE, BASE.replace(microsecond=999_999), BASE - timedelta(days=40, microseconds=1501)])


@pytest.fixture
def varied_nodes(db):
    rng = random.Random(17)
    relay, _secret, _created = relays.add_relay(relay_id="relay-a", public_url="https://relay-a.example.org/")
    owners = [
        Contributor.objects.create(id=f"c_fast{i}", handle=f"fast{i}" if i % 2 else None, key_hash=f"{i:064x}")
        for i in range(4)
    ]
    nodes = []
    for i in range(90):
        tags = rng.sample(["home", "moe", "cpu", "日本語"], k=rng.randint(0, 3))
        gpu, model, quant = rng.choice(["RTX 3090", "M2 Max", "Pi 5"]), rng.choice(["Qwen", "Phi"]), "Q4_K_M"
        relayed = rng.random() < 0.3
        timed = rng.choice([0, 5])
        nodes.append(
            Node(
                id=f"fast-{i:03d}",
                owner=owners[i % len(owners)],
                display_name=rng.choice(["", f"Rig \u2028{i}", "ラズパイ"]),
                reachability="relayed" if relayed else "direct",
                endpoint_url="" if relayed else f"https://rig{i}.example.com/v1",
                relay=relay if relayed and i % 2 else None,
                model_name=model,
                quantization=quant,
                lora=rng.choice(["", "my-lora"]),
                gpu=gpu,
                vram_gb=(vram := rng.choice([None, 0, 12, 24.5])),
                vram_sort_key=vram if vram is not None else 1e12,
                context_length=rng.choice([None, 4096]),
                tuning_note=rng.choice(["", 'ngl 99\n"quoted" <b>']),
                availability_note=rng.choice(["", "evenings"]),
                tags=tags,
                tags_index=node_services.tags_index(tags),
                visibility=rng.choices(["public", "unlisted", "circle"], weights=[8, 1, 1])[0],
                circle_only_hours=rng.choice([[], [23, 0, 5]]),
                node_public_key=rng.choice([None, "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n"]),
                node_public_key_fingerprint=rng.choice([None, "sha256:" + "A" * 43]),
                secret_hash=f"{i:064x}",
                combo_key=rarity.combo_key(gpu, model, quant),
                rarity_score=rng.choice([0.0, 0.25, 1.0]),
                showcase=rng.choice([[], [{"id": "cpu_rig", "label": "CPU rig", "reason": "no GPU"}]]),
                contribution_total=rng.choice([0.0, 3.5]),
                contribution_tier=rng.choice(["limited", "contributor"]),
                contribution_components=rng.choice([{}, {"existence": 1.0, "rarity": 0.5, "note": 2.0}]),
                status=rng.choice(["available", "busy", "unavailable", "unknown"]),
                last_heartbeat_at=BASE,
                last_seen_at=_time(rng),
                latency_ms=rng.choice([None, 42]),
                uptime_ratio_24h=rng.choice([None, 0.5, 1.0]),
                queue_active=rng.randint(0, 2),
                queue_waiting=rng.randint(0, 3),
                queue_max_active=2,
                queue_updated_at=_time(rng),
                timing_samples_count=timed,
                timing_samples_taster=timed // 2,
                timing_samples_relay=timed - timed // 2,
                tok_per_sec_p50=48.25 if timed else None,
                ttft_ms_p50=180.0 if timed else None,
                timing_last_uploaded_at=_time(rng) if timed else None,
                model_identity=rng.choice([None, {"sha256": "ab" * 32, "size_bytes": 4_920_000_000}]),
            )
        )
    Node.objects.bulk_create(nodes)
    # auto_now(_add) ignore the values given above: give created_at and updated_at varied values too.
    for i, node in enumerate(nodes):
        Node.objects.filter(pk=node.pk).update(created_at=_time(rng) or BASE, updated_at=BASE + timedelta(seconds=i))
    return nodes


def test_fast_path_equals_the_builder(varied_nodes):
    listed = Node.objects.listed()
    assert 0 < listed.count() < len(varied_nodes)  # circle and unlisted rigs are among the nodes, not the list
    for order in queries.ORDERS:
        qs = public_rows(queries.apply(queries.ListQuery(_no_filters(), order, 1, 50), listed))
        expected = [public_node(r) for r in qs]
        assert public_nodes(qs) == expected
        assert public_nodes(qs.all()[5:25]) == expected[5:25]
    assert public_nodes(public_rows(listed.filter(Q(tags_index__contains=",home,")))) == [
        public_node(r) for r in public_rows(listed.filter(Q(tags_index__contains=",home,")))
    ]
    assert public_nodes(public_rows(listed).none()) == []


def test_what_the_fast_path_shows(varied_nodes):
    nodes = public_nodes(public_rows(Node.objects.listed().in_default_order()))
    by_id = {n["id"]: n for n in nodes}
    assert not any(n.visibility == "circle" and n.id in by_id for n in varied_nodes)
    assert all(n["circles"] == [] for n in nodes)  # a list never says whom a rig is shared with
    times = {n["health"]["last_seen_at"] for n in nodes} | {n["queue"]["updated_at"] for n in nodes}
    assert times == {None, "2026-11-03T09:15:27.000Z", "2026-11-03T09:15:27.999Z", "2026-09-24T09:15:26.998Z"}
    relayed = [n for n in nodes if n["reachability"] == "relayed"]
    assert {n["endpoint_url"] for n in relayed} - {None} == {
        f"https://relay-a.example.org/n/{n['id']}/v1" for n in relayed if n["endpoint_url"]
    }
    assert any(n["owner"]["handle"] is None for n in nodes) and any(n["owner"]["handle"] for n in nodes)


def test_time_formats_agree_with_iso():
    for dt in (BASE, BASE.replace(microsecond=999_999), BASE.replace(microsecond=1_000), BASE.replace(year=1999)):
        assert _naive_utc_time(dt.replace(tzinfo=None)) == iso(dt)
        assert _naive_utc_time(dt) == iso(dt)
    assert _naive_utc_time(None) is None


def _no_filters() -> dict:
    return queries.parse_list_query({}).filters


# The compiled-SQL path (nodes.compiled_list): the same PublicNodes as the QuerySet path, page by page, for every
# order and shape of filters, with values that LIKE and SQL quoting would misread if they were not parameters.
SHAPES = [
    {},
    {"gpu": "rtx", "min_vram": "12", "tag": "home"},
    {"model": "qw", "quantization": "q4_k", "status": "available", "min_ctx": "4096"},
    {"tag": "日本語", "min_vram": "0"},
    {"gpu": "3090", "model": "Phi"},
]
AWKWARD = ["RTX_3090", "100%", "a\\b", "x' OR '1'='1", '"); DROP TABLE nodes_node; --', "lrStandIngpuQ"]


def _ordinary(query, page, now):
    return public_nodes(compiled_list._page_rows("default", query, now, page.start, page.size))


def _both(params, now=None):
    query = queries.parse_list_query(params)
    now = now or datetime.now(UTC)
    page = Page(query.page, query.page_size, Node.objects.listed(now=now).filter(queries.matching(query)).count())
    return compiled_list.page_nodes(query, page, now), _ordinary(query, page, now)


@pytest.fixture
def fresh_shapes(monkeypatch):
    monkeypatch.setattr(compiled_list, "_shapes", {})
    return compiled_list._shapes


def test_compiled_path_equals_the_queryset_path(varied_nodes, fresh_shapes):
    seen = 0
    for order in queries.ORDERS:
        for shape in SHAPES:
            for page, size in ((1, 7), (2, 7), (3, 20), (1, 200)):
                fast, expected = _both({**shape, "order": order, "page": str(page), "page_size": str(size)})
                assert fast == expected
                seen += len(fast)
    assert seen > 500
    assert fresh_shapes and all(shape is not None for shape in fresh_shapes.values())  # none fell back


def test_compiled_path_takes_values_only_as_parameters(varied_nodes, fresh_shapes):
    Node.objects.filter(pk="fast-001").update(gpu="RTX_3090 100% a\\b x' OR '1'='1", visibility="public")
    for value in AWKWARD:
        for name in ("gpu", "model", "quantization", "tag"):
            fast, expected = _both({name: value})
            assert fast == expected
        assert [n["id"] for n in _both({"gpu": value})[0]] == (["fast-001"] if value in AWKWARD[:4] else [])
    shape = fresh_shapes[("default", "rarity", ("gpu",))]
    assert all(text not in shape.sql for text in ("RTX", "100%", "OR '1'", "DROP")) and "%s" in shape.sql
    assert Node.objects.count() == len(varied_nodes)


def test_compiled_path_lists_as_at_its_time(varied_nodes, fresh_shapes):
    """The current time is a parameter too: a ban hides a rig while it lasts, with the same compiled SQL."""
    node = next(n for n in _both({})[1])
    Node.objects.filter(pk=node["id"]).update(banned_until=BASE + timedelta(days=1))
    during, _ = _both({}, now=BASE)
    after, expected = _both({}, now=BASE + timedelta(days=2))
    assert node["id"] not in {n["id"] for n in during}
    assert node["id"] in {n["id"] for n in after} and after == expected
    assert len(fresh_shapes) == 1


def test_a_shape_that_compiles_otherwise_stays_on_the_queryset_path(varied_nodes, fresh_shapes, monkeypatch, caplog):
    real = compiled_list._compile

    def drifted(*args):
        shape = real(*args)
        return compiled_list.Shape(shape.sql.replace("IS NOT NULL", "IS NULL", 1), shape.slots, shape.reader)

    monkeypatch.setattr(compiled_list, "_compile", drifted)
    fast, expected = _both({"order": "recent"})
    assert fast == expected and len(fast) == 50
    assert fresh_shapes == {("default", "recent", ()): None}
    assert "compiles to other SQL" in caplog.text
    assert _both({"order": "recent", "page": "2"})[0] == _both({"order": "recent", "page": "2"})[1]


# SQLite: the compiled page query's timestamp and JSON columns are converted by the cursor itself (typed aliases,
# nodes.public_list.cursor_conversions), from the text SQLite stores; Django would read the same text otherwise.
def _as_django_reads_time(text: str) -> str:
    value = parse_datetime(text)
    return iso(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-03 09:15:27",
        "2026-11-03 09:15:27.999999",
        "2026-11-03 09:15:27.000999",
        "0999-01-02 03:04:05.678901",
        "2026-11-03T09:15:27Z",  # what other writers may store: read as Django reads it
        "2026-11-03 09:15:27+02:00",
        "2026-11-03 09:15:27.5",
        "2026-11-03 09:15:27,999999",
        "2026-W45-2 09:15:27.999999",
        "2026-11-03 09:15:27.99+0100",
    ],
)
def test_the_cursors_time_is_what_django_reads(text):
    assert _wire_time_of_text(text.encode()) == _as_django_reads_time(text)


@pytest.mark.parametrize("text", ["[]", '{"existence": 1.0, "note": 2.5}', "[1e16, 0.1]", '["日本語"]', "NaN", "oops"])
def test_the_cursors_json_is_what_django_reads(text):
    field = Node._meta.get_field("contribution_components")
    expected = field.from_db_value(text, None, None)
    decoded = _decoded(text.encode())
    assert decoded == expected or (decoded != decoded and expected != expected)  # NaN is not equal to itself
    assert type(decoded) is type(expected)


@pytest.mark.sqlite_only  # typed aliases are for SQLite's cursor (PARSE_COLNAMES) only
def test_sqlite_reads_the_page_through_its_converters(varied_nodes, fresh_shapes):
    assert connection.vendor == "sqlite"
    # Timestamps stored as other writers store them, next to Django's own forms.
    with connection.cursor() as cursor:
        for node_id, text in (("fast-000", "2026-11-03T09:15:27Z"), ("fast-003", "2026-11-03 11:15:27.5+02:00")):
            sql = "UPDATE nodes_node SET last_seen_at = %s, visibility = 'public' WHERE id = %s"
            cursor.execute(sql, [text, node_id])
    for shape in SHAPES:
        fast, expected = _both({**shape, "page_size": "200"})
        assert fast == expected
    fast = {n["id"]: n for n in _both({"page_size": "200"})[0]}
    assert fast["fast-000"]["health"]["last_seen_at"] == "2026-11-03T09:15:27.000Z"
    assert fast["fast-003"]["health"]["last_seen_at"] == "2026-11-03T09:15:27.500Z"
    shape = fresh_shapes[("default", "rarity", ())]
    assert shape.named and "%(p0)s" in shape.run_sql and "?" not in shape.run_sql
    typed = {typed.split('"')[1] for _plain, typed in shape.typed}
    assert typed == {
        *(f"{name} [lrwiretime]" for name in ("created_at", "updated_at", "last_seen_at", "queue_updated_at")),
        "timing_last_uploaded_at [lrwiretime]",
        *(f"{name} [lrjson]" for name in ("tags", "showcase", "contribution_components", "circle_only_hours")),
        "model_identity [lrjson]",
    }
    assert shape.reader.formatters == []  # nothing left to format in Python
    assert shape.run_sql.partition(" FROM ")[2] == shape.sql.partition(" FROM ")[2].replace("%s", "{}").format(
        *(f"%(p{n})s" for n in range(len(shape.param_names)))
    )


def test_a_row_of_another_width_is_refused(varied_nodes, fresh_shapes):
    _both({})
    reader = fresh_shapes[("default", "rarity", ())].reader
    width = len(reader.names)
    row = tuple([None] * (width - 1))
    with pytest.raises(ValueError, match="columns for"):
        reader.public_nodes([row], connection)
    with pytest.raises(ValueError, match="columns for"):
        reader.public_nodes([(*row, None, None)], connection)


def test_numbers_are_tested_before_substrings(db):
    # nodes.queries.matching: the cheap comparisons first, so that a page's substring searches run on fewer rows.
    shape = compiled_list._compile("default", "rarity", ("model", "gpu", "tag", "min_vram", "min_ctx"))
    where = shape.sql.partition(" WHERE ")[2]
    numbers = max(where.index('"vram_gb" >='), where.index('"context_length" >='))
    assert numbers < min(where.index('"gpu"'), where.index('"tags_index"'), where.index('"model_name"'))

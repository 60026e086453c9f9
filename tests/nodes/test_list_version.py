"""Row versions kept by the database (nodes.list_version) and the node list's page known by them (nodes.compiled_list,
page_json with `keys_first`): a version changes whenever anything a rig's row in the list is made of changes,
however it changed (the ORM, `.update()`, raw SQL, its owner's handle, its relay's URL or the relay's removal),
and a list whose count is kept answers with the texts it kept only while every row's version is the same: never a
rig as it was. On SQLite and on PostgreSQL alike; without the triggers, SQLite's list knows rows by their values,
as before."""

from datetime import UTC, datetime

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.paging import Page
from core.renderers import FastJSONRenderer
from nodes import compiled_list, list_version, queries
from nodes.models import Contributor, Node
from tests import factories
from tracker import relays

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_shapes(monkeypatch):
    monkeypatch.setattr(compiled_list, "_shapes", {})
    monkeypatch.setattr(compiled_list, "WRITTEN", compiled_list.WrittenRows())


@pytest.fixture
def listed(api, owner, taster):
    relays.add_relay(relay_id="relay-v", public_url="https://relay-v.example.org")
    rigs = []
    for i in range(12):
        node, secret = factories.make_node(owner if i % 2 else taster, gpu=f"RTX {3000 + i}", tags=["home"])
        factories.heartbeat(api, node, secret)
        rigs.append(node)
    Node.objects.filter(pk__in=[n.pk for n in rigs[:4]]).update(reachability="relayed", relay_id="relay-v")
    return rigs


def drop_triggers(names=None) -> None:
    """The list's triggers (`names`: some of them) dropped, as a migration that remakes a SQLite table does."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DROP TRIGGER {list_version.PG_TRIGGER[0]} ON nodes_node")
        else:
            for name in list_version.TRIGGERS:
                if names is None or name in names:
                    cursor.execute(f"DROP TRIGGER {name}")


def version(node_id: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT list_version FROM nodes_node WHERE id = %s", [node_id])
        return cursor.fetchone()[0]


def versions() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, list_version FROM nodes_node")
        return dict(cursor.fetchall())


def test_the_database_keeps_them_after_migrate(listed):
    assert list_version.installed(connection.vendor, connection.connection)
    assert len(set(versions().values())) == len(listed)  # random: one each


def test_every_way_a_row_changes_gives_it_a_new_version(listed):
    node = listed[5]
    seen = [version(node.id)]

    def changed() -> bool:
        seen.append(version(node.id))
        return seen[-1] not in seen[:-1]

    node.refresh_from_db()
    node.status = "busy"
    node.save()
    assert changed()
    Node.objects.filter(pk=node.pk).update(queue_waiting=3)
    assert changed()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE nodes_node SET display_name = 'raw' WHERE id = %s", [node.id])
    assert changed()
    Node.objects.filter(pk=node.pk).update(status=node.status)  # even an update that sets what is there
    assert changed()
    bulk = Node.objects.get(pk=node.pk)
    bulk.queue_active = 1
    Node.objects.bulk_update([bulk], ["queue_active"])
    assert changed()


def test_a_removed_relay_renews_its_rigs_versions(listed):
    """Django sets the rigs' relay to NULL, an UPDATE of theirs. A relay's URL and an owner's handle are in a kept
    row's key instead (test_a_page_known_by_its_versions_shows_every_change_at_once)."""
    relayed = {n.id for n in listed[:4]}
    before = versions()
    relays.remove_relay(relay_id="relay-v")
    after = versions()
    assert {i for i in before if before[i] != after[i]} == relayed


def test_a_rig_made_again_with_the_same_id_gets_another_version(listed):
    node = Node.objects.get(pk=listed[7].pk)
    old = version(node.id)
    node.delete()
    node.save(force_insert=True)
    assert version(node.id) != old


def _answer(params: dict) -> tuple[bytes, bytes, int]:
    """(page_json's page with keys first, the renderer's bytes for page_nodes' dicts, queries page_json made)."""
    query = queries.parse_list_query(params)
    now = datetime.now(UTC)
    page = Page(query.page, query.page_size, Node.objects.listed(now=now).filter(queries.matching(query)).count())
    with CaptureQueriesContext(connection) as ctx:
        written = compiled_list.page_json(query, page, now, keys_first=True)
    expected = FastJSONRenderer().render(compiled_list.page_nodes(query, page, now), "application/json")
    assert written is not None
    return written[0], expected, len(ctx.captured_queries)


def _shown(body: bytes) -> dict:
    return {n["id"]: n for n in orjson.loads(body)}


def test_a_page_known_by_its_versions_shows_every_change_at_once(listed, owner, fresh_shapes):
    params = {"page_size": "200"}
    written, expected, asked = _answer(params)
    assert (written, asked) == (expected, 2)  # nothing kept yet: the versions, then the page whole
    written, expected, asked = _answer(params)
    assert (written, asked) == (expected, 1)  # every row kept: the versions alone

    def after(change) -> dict:
        change()
        written, expected, asked = _answer(params)
        assert (written, asked) == (expected, 2)  # one row changed: read whole again
        again = _answer(params)
        assert again == (expected, expected, 1)
        return _shown(written)

    node, relayed = listed[5], listed[0]
    assert after(lambda: Node.objects.filter(pk=node.pk).update(status="busy"))[node.id]["health"]["status"] == "busy"
    assert (
        after(lambda: Contributor.objects.filter(pk=owner.contributor.id).update(handle="renamed"))[listed[1].id][
            "owner"
        ]["handle"]
        == "renamed"
    )
    moved = after(lambda: relays.add_relay(relay_id="relay-v", public_url="https://moved.example.org"))
    assert moved[relayed.id]["endpoint_url"] == f"https://moved.example.org/n/{relayed.id}/v1"
    assert after(lambda: relays.remove_relay(relay_id="relay-v"))[relayed.id]["endpoint_url"] is None


def test_the_versions_query_names_the_pages_rows_in_its_order(listed, fresh_shapes):
    """Shape.keys_sql is the checked page SQL with another select list: the same rows, in the same order, for
    every order, filter and page."""
    Node.objects.filter(pk__in=[n.pk for n in listed[::3]]).update(tok_per_sec_p50=None, context_length=None)
    for order in queries.ORDERS:
        for filters in ({}, {"gpu": "rtx 30", "min_vram": "1"}, {"tag": "home", "min_ctx": "0"}):
            for page in ({"page_size": "5", "page": "2"}, {"page_size": "200"}):
                params = {"order": order, **filters, **page}
                query = queries.parse_list_query(params)
                now = datetime.now(UTC)
                count = Node.objects.listed(now=now).filter(queries.matching(query)).count()
                page_ = Page(query.page, query.page_size, count)
                alias, shape = compiled_list._shape(query, page_, now)
                assert shape.keys_sql is not None, params
                keys = compiled_list._fetch(alias, shape, shape.keys_sql, query, page_, now)
                ids = [n["id"] for n in compiled_list.page_nodes(query, page_, now)]
                assert [key[0] for key in keys] == ids and ids, params


@pytest.mark.sqlite_only  # PostgreSQL's list without versions writes every page, as before (test_json_page)
def test_without_the_triggers_rows_are_known_by_their_values(listed, owner, fresh_shapes):
    drop_triggers({"nodes_node_list_version_update"})
    assert not list_version.installed(connection.vendor, connection.connection)
    written, expected, asked = _answer({"page_size": "200"})
    assert (written, asked) == (expected, 1)  # one query, as before versions
    shape = next(iter(compiled_list._shapes.values()))
    assert not shape.versioned and shape.keys_sql is None
    Contributor.objects.filter(pk=owner.contributor.id).update(handle="renamed")
    Node.objects.filter(pk=listed[3].pk).update(status="busy")  # no new version now: known by its values
    written, expected, _asked = _answer({"page_size": "200"})
    assert written == expected and b'"handle":"renamed"' in written
    assert _shown(written)[listed[3].id]["health"]["status"] == "busy"
    list_version.install(connection)  # what the next migrate does
    assert list_version.installed(connection.vendor, connection.connection)


def test_install_adds_the_column_back_after_a_table_is_remade(listed):
    """A migration that remakes nodes_node on SQLite (Django copies the columns it knows) drops the column and the
    triggers; post_migrate's install puts them back, with new versions for every row."""
    before = versions()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # the fixtures' deferred foreign key checks, before an ALTER TABLE
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    drop_triggers()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE nodes_node DROP COLUMN list_version")
    assert not list_version.installed(connection.vendor, connection.connection)
    list_version.install(connection)
    list_version.install(connection)  # twice: the same
    assert list_version.installed(connection.vendor, connection.connection)
    after = versions()
    assert set(after) == set(before) and not set(after.values()) & set(before.values())


def test_a_page_of_kept_texts_is_the_renderers_answer_with_odd_text(listed, settings, fresh_shapes, monkeypatch):
    """The kept texts go into the answer as they are (an orjson.Fragment): the answer, with U+2028/U+2029 escaped by
    the renderer over the whole, is byte for byte DRF's, whether the page was read whole or known by its versions."""
    from django.test import Client

    from nodes import api as nodes_api

    settings.NODE_LIST_EXACT_COUNT_UP_TO = 0  # the count kept after the first request: versions first
    odd = 'line\u2028sep \u2029 \u2019 \u65e5\u672c\u8a9e \U0001f999 "q" \\ \x01'
    Node.objects.filter(pk=listed[2].pk).update(display_name=odd, tuning_note=odd)
    path = "/api/nodes?page_size=200"
    assert Client().get(path).json()["count_is_estimate"] is False  # the count made, and kept
    answers = []
    for _ in range(2):  # versions first: the rows read whole where they are not known yet, then known
        with CaptureQueriesContext(connection) as ctx:
            fast = Client().get(path)
        answers.append((fast.content, len(ctx.captured_queries)))
    monkeypatch.setattr(nodes_api, "_plain_get", lambda request: False)
    drf = Client().get(path)
    assert drf.status_code == fast.status_code == 200
    # SQLite's whole read (the first request's) keeps each row's version with its text; PostgreSQL's keeps texts
    # only under the versions a keys query gave.
    assert answers == [(drf.content, 1 if connection.vendor == "sqlite" else 2), (drf.content, 1)]
    assert "\\u2028" in drf.content.decode() and "\u2028" not in drf.content.decode()


@pytest.mark.sqlite_only  # PostgreSQL alters a column in place
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_migration_that_remakes_the_nodes_table_runs_and_install_makes_them_again(listed, fresh_shapes):
    """Django alters a SQLite column by remaking the table: a new one, the rows copied, the old one dropped, the new
    one renamed. A trigger on another table whose body names nodes_node makes SQLite refuse that rename (an earlier
    version of nodes.list_version had such triggers, and every such migration failed). The remake drops the
    column and the node's triggers; install (post_migrate) makes them again."""
    from django.db import models

    old = Node._meta.get_field("gpu")
    wider = models.CharField(max_length=old.max_length + 1)
    wider.set_attributes_from_name("gpu")
    wider.model = Node
    with connection.schema_editor() as editor:
        editor.alter_field(Node, old, wider)
    assert not list_version.installed(connection.vendor, connection.connection)
    list_version.install(connection)
    assert list_version.installed(connection.vendor, connection.connection)
    with connection.schema_editor() as editor:
        editor.alter_field(Node, wider, old)
    list_version.install(connection)
    written, expected, _asked = _answer({"page_size": "200"})
    assert written == expected and len(_shown(written)) == len(listed)

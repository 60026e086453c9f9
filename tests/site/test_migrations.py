"""The migrations (issue 13): a database made by the migrations of 724fe5b (Contributor in tracker, nodes'
migrations split around tracker's) is upgraded by the current ones without losing or changing a row; a new database
applies one squashed migration per app, in the import direction; both chains end in the current models.

The upgrade runs as in production: `manage.py migrate` in a process of its own against a real database of the
suite's engine (a temp SQLite file, or a new PostgreSQL database beside the suite's). The starting point is built by
the verbatim migrations of 724fe5b (tests/site/migrations_724fe5b), not by the replaced migrations still in the
apps, which are kept only for `replaces` (and had upward dependencies dropped for the squash)."""

import json
import subprocess
import sys

import pytest
from django.apps import apps
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.state import ProjectState

from tests.processes import ROOT, fresh_database, tracker_env

ORDER = ["nodes", "tracker", "moderation", "showcase"]  # the import direction, bottom first
SQUASHED = {
    "nodes": "0001_squashed_0008_contributor_from_tracker",
    "tracker": "0001_squashed_0005_contributor_to_nodes",
    "moderation": "0001_squashed_0007_contributor_in_nodes",
    "showcase": "0001_squashed_0006_contributor_in_nodes",
}
# Migrations written since the squashes (issue 15's circles onwards): applied after their app's squash.
AFTER_SQUASH = {
    "nodes": ["0009_circles", "0010_model_identity", "0011_node_listed_order_filters"],
    "tracker": ["0006_token_circle"],
    "moderation": ["0008_moderators_view_circles"],
}
# Columns those later migrations added to existing tables, with the value every old row must get.
ADDED_COLUMNS = {
    "nodes_node": {"circle_only_hours": [], "model_identity": None},
    "tracker_tastingtoken": {"circle_id": None, "via_circle": False},
}
# A column the database's triggers keep (nodes.list_version, made by post_migrate after every migrate, the old
# state's included): a version per row, renewed by each migrate.
KEPT_BY_THE_DATABASE = {"nodes_node": "list_version"}
ADDED_TABLES = ["nodes_circle", "nodes_circleinvite", "nodes_circlemember", "nodes_node_circles"]
ADDED_MODELS = {("nodes", "circle"), ("nodes", "circleinvite"), ("nodes", "circlemember")}
TRANSITION = [
    "nodes.0008_contributor_from_tracker",
    "moderation.0007_contributor_in_nodes",
    "showcase.0006_contributor_in_nodes",
    "tracker.0005_contributor_to_nodes",
]
OLD_SETTINGS = "tests.site.migrations_724fe5b.settings"
SETTINGS = "luckrig_site.settings"


def run(env: dict, settings: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(  # noqa: S603 - our own interpreter and files
        [sys.executable, *args],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": settings},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def applying(output: str) -> list[str]:
    """The migrations `migrate` printed as applied ("  Applying nodes.0001_initial... OK")."""
    return [line.split()[1].rstrip(".") for line in output.splitlines() if line.strip().startswith("Applying")]


def step(env: dict, settings: str, name: str, *args: str):
    return json.loads(run(env, settings, "-m", "tests.site.migration_steps", name, *args).stdout)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A database migrated from zero by the current migrations: its schema and its groups' permissions."""
    tmp = tmp_path_factory.mktemp("fresh")
    with fresh_database(tmp) as url:
        env = tracker_env(url, tmp)
        applied = run(env, SETTINGS, "manage.py", "migrate", "--noinput").stdout
        yield {"applied": applied, "schema": step(env, SETTINGS, "schema"), "grants": step(env, SETTINGS, "grants")}


def test_a_new_database_applies_one_squashed_migration_per_app(fresh):
    ours = [name for name in applying(fresh["applied"]) if name.split(".")[0] in ORDER]
    assert sorted(ours) == sorted(
        [f"{app}.{SQUASHED[app]}" for app in ORDER] + [f"{a}.{n}" for a, names in AFTER_SQUASH.items() for n in names]
    )
    for app, names in AFTER_SQUASH.items():
        assert all(ours.index(f"{app}.{SQUASHED[app]}") < ours.index(f"{app}.{n}") for n in names)


@pytest.mark.parametrize("stray", [False, True], ids=["as-deployed", "with-a-stray-nodes-content-type"])
def test_a_database_made_by_724fe5b_is_upgraded_without_losing_a_row(tmp_path, fresh, stray):
    with fresh_database(tmp_path) as url:
        env = tracker_env(url, tmp_path)
        run(env, OLD_SETTINGS, "manage.py", "migrate", "--noinput")
        seeded = step(env, OLD_SETTINGS, "seed", *(["stray"] if stray else []))
        before = step(env, OLD_SETTINGS, "rows")
        before = {t: [_without_kept(t, row) for row in rows] for t, rows in before.items()}

        applied = run(env, SETTINGS, "manage.py", "migrate", "--noinput").stdout
        after = step(env, SETTINGS, "rows")
        facts = step(env, SETTINGS, "facts")
        schema = step(env, SETTINGS, "schema")
        check = run(env, SETTINGS, "manage.py", "makemigrations", "--check", "--dry-run")

    # The transition from 724fe5b, then what was written since the squashes.
    steps = applying(applied)
    assert [m for m in steps if m in TRANSITION] == TRANSITION
    assert sorted(m for m in steps if m not in TRANSITION) == sorted(
        f"{a}.{n}" for a, names in AFTER_SQUASH.items() for n in names
    )

    # Every row of every table is still there, unchanged, but for the content type that moved (and the accidental
    # one, with its permissions, that gave way to it).
    moved, stray_id = seeded["content_type_id"], seeded["stray_id"]
    changed = {"django_content_type", "auth_permission"}
    # Tables added since 724fe5b exist and are empty; every older row lost nothing.
    assert {t: after.pop(t) for t in ADDED_TABLES} == dict.fromkeys(ADDED_TABLES, [])
    after = {t: [_without_added(t, row) for row in rows] for t, rows in after.items()}
    added_types = {
        row["id"]
        for row in map(json.loads, after["django_content_type"])
        if (row["app_label"], row["model"]) in ADDED_MODELS
    }
    # The groups' grants on the added models (moderators may view circles) are new rows; the older ones stay.
    added_permissions = {
        p["id"] for p in map(json.loads, after["auth_permission"]) if p["content_type_id"] in added_types
    }
    granted = [json.loads(row) for row in after["auth_group_permissions"]]
    assert {(g["group_id"], g["permission_id"]) for g in granted if g["permission_id"] in added_permissions}
    after["auth_group_permissions"] = [
        row
        for row, g in zip(after["auth_group_permissions"], granted, strict=True)
        if g["permission_id"] not in added_permissions
    ]
    assert {t: r for t, r in after.items() if t not in changed} == {t: r for t, r in before.items() if t not in changed}
    assert before["contributor"] and after["contributor"] == before["contributor"]

    def content_types(dump, **move):
        out = []
        for row in map(json.loads, dump["django_content_type"]):
            if row["id"] == stray_id or row["id"] in added_types:
                continue
            out.append({**row, **move} if row["id"] == moved else row)
        return sorted(out, key=lambda r: r["id"])

    assert content_types(after) == content_types(before, app_label="nodes")
    permissions_before = [p for p in map(json.loads, before["auth_permission"]) if p["content_type_id"] != stray_id]
    permissions_after = [
        p for p in map(json.loads, after["auth_permission"]) if p["content_type_id"] not in added_types
    ]
    assert sorted(permissions_after, key=lambda p: p["id"]) == sorted(permissions_before, key=lambda p: p["id"])

    assert facts == {
        "contributors": [["c_ada", "ada", "a", 12.5, "contributor", 0], ["c_bob", None, "b", 0.0, "limited", 3]],
        "owners": {"rig-1": "c_ada", "rig-2": "c_bob"},
        "ada_nodes": ["rig-1"],
        "rig_relay": "relay-1",
        "relay_nodes": ["rig-1"],
        "bob_tokens": ["jti-1"],
        "token": ["c_bob", "rig-1"],
        "bob_timing": ["jti-1"],
        "timing_contributor": "c_bob",
        "bob_replays": ["rp_1"],
        "replay": ["c_bob", "rs_1"],
        "flag_contributor": "c_bob",
        "usage_report_node": "rig-1",
        "relay_report_relay": "relay-1",
        "ban": ["c_ada", True],
        # The admin's history of the contributor follows it: same content type row, now nodes'.
        "log_entry": ["nodes", "contributor", moved, "c_ada"],
        "stale_content_types": [],
        # Moderators keep every grant they had, the contributor ones now under nodes.
        "moderators": fresh["grants"]["Moderators"],
        "moderator_may": [True, True],
        # Recorded as applied: the replaced migrations and the squashes, so the replaced files can go later.
        "applied": sorted(
            [f"{app}.{name}" for app, name in replaced_migrations()]
            + [f"{a}.{n}" for a, n in SQUASHED.items()]
            + [f"{a}.{n}" for a, names in AFTER_SQUASH.items() for n in names]
        ),
    }
    assert "nodes.view_contributor" in facts["moderators"] and "nodes.change_contributor" in facts["moderators"]

    # The upgraded database has the schema of a new one (tables, columns, keys, indexes, checks; only the names
    # Django derived from the old table name differ), and the models need no new migration.
    assert schema["contributor"]["name"] == "nodes_contributor"
    assert schema == fresh["schema"]
    assert "No changes detected" in check.stdout


def _without_kept(table: str, row: str) -> str:
    """A dumped row less the column the database keeps (KEPT_BY_THE_DATABASE), which must be a whole number."""
    column = KEPT_BY_THE_DATABASE.get(table)
    if column is None:
        return row
    values = json.loads(row)
    if column in values:
        assert type(values.pop(column)) is int, table
    return json.dumps(values, sort_keys=True)


def _without_added(table: str, row: str) -> str:
    """A row dumped after the upgrade, less the columns added since 724fe5b, which must hold their defaults."""
    added = ADDED_COLUMNS.get(table)
    if not added:
        return row
    values = json.loads(_without_kept(table, row))
    for column, default in added.items():
        # A JSON column reads back as text on SQLite and as its value on PostgreSQL.
        assert values.pop(column) in (default, json.dumps(default)), (table, column)
    return json.dumps(values, sort_keys=True)


def replaced_migrations() -> list[tuple[str, str]]:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return [key for app in ORDER for key in loader.disk_migrations[(app, SQUASHED[app])].replaces]


@pytest.mark.parametrize("squashed", [True, False], ids=["squashed", "replaced-chain"])
def test_both_chains_end_in_the_current_models(squashed):
    """The squashed migrations (a new database) and the chain they replace (a database made before) build the
    same state, which is the models': a database on either path needs no further migration."""
    loader = MigrationLoader(None, ignore_no_migrations=True, replace_migrations=squashed)
    changes = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps)).changes(graph=loader.graph)
    assert changes == {}


def test_each_apps_migrations_depend_only_on_apps_below_it():
    """The migration graph follows the import direction too: nodes' migrations depend on no other app of ours."""
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    wrong = []
    for app in ORDER:
        below = set(ORDER[: ORDER.index(app) + 1])
        for key in graph.nodes:
            if key[0] != app:
                continue
            for parent in graph.node_map[key].parents:
                if parent.key[0] in ORDER and parent.key[0] not in below:
                    wrong.append(f"{key} depends on {parent.key}")
    assert not wrong, "\n".join(wrong)
    assert sorted(key for key in graph.nodes if key[0] in ORDER) == sorted(
        [*SQUASHED.items(), *((a, n) for a, names in AFTER_SQUASH.items() for n in names)]
    )

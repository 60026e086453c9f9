"""A version per listed row, kept by the database itself (docs/benchmarks.md, "Eighth pass"): the node list keeps
each row's JSON text in the process (nodes.compiled_list.WrittenRows), and with a version the database changes
whenever the row changes, a page whose rows are all known is one small query for each row's key, not every value of
every row read into Python.

The version is `nodes_node.list_version`, a column the ORM does not know (so that no `save()` ever writes a stale
value back), renewed by a trigger on every INSERT and every UPDATE of a node, whatever the statement (the ORM,
`.update()`, the admin, raw SQL). A version never comes back, so a kept text is never shown for a row that changed,
even one deleted and made again with the same id: on SQLite it is `random()` (64 bits: 2^-64 a pair), on PostgreSQL
the next value of a sequence. A row's text also shows its owner's handle and, for a relayed rig, its relay's URL:
those come with the version in the row's key (nodes.compiled_list), read in the same query, so they need no trigger
on another table (such a trigger would name nodes_node in its body, and SQLite then refuses the rename with which
Django remakes a table in a migration).

On SQLite the trigger changes the version only while the statement it follows left it as it was: its own UPDATE
sets a new one, so it cannot fire itself again even with `recursive_triggers` on. On PostgreSQL the trigger runs
BEFORE the write and sets the new row's version itself.

Django drops a SQLite table's triggers and unknown columns when a migration remakes the table, so `install` runs
after every `migrate` (post_migrate, nodes.apps), on either database, in one transaction: the column is added when
missing, the triggers made again, the sequence moved past every version in use (a restored dump brings back an
older sequence), and every version renewed, so that no text kept before the migration matches after it. The list
uses versions only where `installed` finds the column and these very triggers (and function); elsewhere it keys
rows on their values (SQLite) or writes every page (PostgreSQL) as before."""

from django.db import transaction

COLUMN = "list_version"

TRIGGERS = {
    "nodes_node_list_version_insert": (
        "CREATE TRIGGER nodes_node_list_version_insert AFTER INSERT ON nodes_node FOR EACH ROW"
        " BEGIN UPDATE nodes_node SET list_version = random() WHERE rowid = NEW.rowid; END"
    ),
    "nodes_node_list_version_update": (
        "CREATE TRIGGER nodes_node_list_version_update AFTER UPDATE ON nodes_node FOR EACH ROW"
        " WHEN NEW.list_version IS OLD.list_version"
        " BEGIN UPDATE nodes_node SET list_version = random() WHERE rowid = NEW.rowid; END"
    ),
}
# Triggers an earlier version made on the contributors' and relays' tables: dropped by install.
_OBSOLETE = {
    "nodes_contributor": (
        "nodes_contributor_list_version_insert",
        "nodes_contributor_list_version_update",
        "nodes_contributor_list_version_delete",
        "nodes_contributor_list_version",
    ),
    "nodes_relay": (
        "nodes_relay_list_version_insert",
        "nodes_relay_list_version_update",
        "nodes_relay_list_version_delete",
        "nodes_relay_list_version",
    ),
}

_HAS_COLUMN = "SELECT 1 FROM pragma_table_info('nodes_node') WHERE name = ?"

# PostgreSQL: the sequence, the function the trigger runs (its body as pg_proc keeps it) and the trigger.
SEQUENCE = "nodes_node_list_version_seq"
PG_FUNCTION = ("nodes_node_list_version", f"BEGIN NEW.list_version := nextval('{SEQUENCE}'); RETURN NEW; END")
PG_TRIGGER = (
    "nodes_node_list_version",
    "BEFORE INSERT OR UPDATE ON nodes_node FOR EACH ROW EXECUTE FUNCTION nodes_node_list_version()",
)


def install(connection) -> None:
    """The column (when missing), the triggers made again and every version renewed, on a SQLite or PostgreSQL
    `connection`, in one transaction; nothing where the nodes table is missing (a migrate back to before it)."""
    if connection.vendor not in ("sqlite", "postgresql") or "nodes_node" not in connection.introspection.table_names():
        return
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        if connection.vendor == "postgresql":
            _install_postgresql(cursor, tables)
            return
        for table, names in _OBSOLETE.items():
            for name in names if table in tables else ():
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        cursor.execute(_HAS_COLUMN.replace("?", "%s"), [COLUMN])
        if cursor.fetchone() is None:
            cursor.execute(f"ALTER TABLE nodes_node ADD COLUMN {COLUMN} integer NOT NULL DEFAULT 0")
        for name, sql in TRIGGERS.items():
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            cursor.execute(sql)
        cursor.execute(f"UPDATE nodes_node SET {COLUMN} = random()")  # noqa: S608 - constants only


def _install_postgresql(cursor, tables: set) -> None:
    for table, names in _OBSOLETE.items():
        for name in names if table in tables else ():
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    cursor.execute("DROP FUNCTION IF EXISTS nodes_owner_list_version(), nodes_relay_list_version()")
    cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")
    cursor.execute(f"ALTER TABLE nodes_node ADD COLUMN IF NOT EXISTS {COLUMN} bigint NOT NULL DEFAULT 0")
    name, body = PG_FUNCTION
    cursor.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$")
    name, definition = PG_TRIGGER
    cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON nodes_node")
    cursor.execute(f"CREATE TRIGGER {name} {definition}")
    # Past every version in use: after a restored dump the sequence could give one again.
    past = f"SELECT setval('{SEQUENCE}', GREATEST(nextval('{SEQUENCE}'), MAX({COLUMN}) + 1)) FROM nodes_node"  # noqa: S608
    cursor.execute(past)
    cursor.execute(f"UPDATE nodes_node SET {COLUMN} = 0")  # noqa: S608 - constants only; the trigger renews it


def installed(vendor: str, connection) -> bool:
    """Whether the database has the column and exactly this trigger (on PostgreSQL with this function, enabled).
    `connection`: the DB-API connection itself, read with no Django cursor: nodes.compiled_list asks once per page
    shape and process, when it compiles the shape, and that catalog read is no query of the request that happens
    to compile it."""
    if vendor == "postgresql":
        return _installed_postgresql(connection)
    if vendor != "sqlite":
        return False
    if not connection.execute(_HAS_COLUMN, [COLUMN]).fetchall():
        return False
    found = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    return {name: sql for name, sql in found if name in TRIGGERS} == TRIGGERS


def _installed_postgresql(connection) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = 'nodes_node' AND column_name = %s",
            [COLUMN],
        )
        if cursor.fetchone() is None:
            return False
        cursor.execute(
            "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = current_schema() AND p.proname = %s",
            [PG_FUNCTION[0]],
        )
        if cursor.fetchall() != [(PG_FUNCTION[1],)]:
            return False
        cursor.execute(
            "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgname = %s"
            " AND c.relname = 'nodes_node' AND n.nspname = current_schema()",
            [PG_TRIGGER[0]],
        )
        return cursor.fetchone() is not None

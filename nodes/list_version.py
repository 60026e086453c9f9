"""A version per listed row, kept by the database itself (docs/benchmarks.md, "Eighth pass"): the node list keeps
each row's JSON text in the process (nodes.compiled_list.WrittenRows), and with a version the database changes
whenever anything the text is made of changes, a page whose rows are all known is one small query for
`(id, version)`, not every value of every row read into Python.

The version is `nodes_node.list_version`, a column the ORM does not know (so that no `save()` ever writes a stale
value back), renewed by triggers:
- on every INSERT and every UPDATE of a node, whatever the statement (the ORM, `.update()`, the admin, raw SQL);
- on the node rows of a contributor whose id or handle changes, and of one inserted or deleted (its handle is in the
  row's text);
- on the node rows of a relay whose id or public URL changes, and of one inserted or deleted (a relayed rig's
  endpoint is made from its relay's URL).
A version never comes back, so a kept text is never shown for a row that changed, even one deleted and made again
with the same id: on SQLite it is `random()` (64 bits: 2^-64 a pair), on PostgreSQL the next value of a sequence.
On SQLite each trigger changes the version only while the statement it follows left it as it was: its own UPDATE
sets a new one, so it cannot fire itself again even with `recursive_triggers` on. On PostgreSQL the node's trigger
runs BEFORE the write and sets the new row's version itself.

Django drops a SQLite table's triggers and unknown columns when a migration remakes the table, so `install` runs
after every `migrate` (post_migrate, nodes.apps), on either database: the column is added when missing, the
triggers made again, and every version renewed, so that no text kept before the migration matches after it. The
list uses versions only where `installed` finds the column and these very triggers (and functions); elsewhere it
keys rows on their values (SQLite) or writes every page (PostgreSQL) as before."""

COLUMN = "list_version"

# The node rows whose version a contributor's or relay's change renews (`{ids}`: the OLD and NEW ids it touches).
_RENEW_OWNED = "UPDATE nodes_node SET list_version = random() WHERE owner_id IN ({ids});"
_RENEW_RELAYED = "UPDATE nodes_node SET list_version = random() WHERE relay_id IN ({ids});"

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
    "nodes_contributor_list_version_insert": (
        "CREATE TRIGGER nodes_contributor_list_version_insert AFTER INSERT ON nodes_contributor FOR EACH ROW"
        f" BEGIN {_RENEW_OWNED.format(ids='NEW.id')} END"
    ),
    "nodes_contributor_list_version_update": (
        "CREATE TRIGGER nodes_contributor_list_version_update AFTER UPDATE ON nodes_contributor FOR EACH ROW"
        " WHEN NEW.handle IS NOT OLD.handle OR NEW.id IS NOT OLD.id"
        f" BEGIN {_RENEW_OWNED.format(ids='OLD.id, NEW.id')} END"
    ),
    "nodes_contributor_list_version_delete": (
        "CREATE TRIGGER nodes_contributor_list_version_delete AFTER DELETE ON nodes_contributor FOR EACH ROW"
        f" BEGIN {_RENEW_OWNED.format(ids='OLD.id')} END"
    ),
    "nodes_relay_list_version_insert": (
        "CREATE TRIGGER nodes_relay_list_version_insert AFTER INSERT ON nodes_relay FOR EACH ROW"
        f" BEGIN {_RENEW_RELAYED.format(ids='NEW.id')} END"
    ),
    "nodes_relay_list_version_update": (
        "CREATE TRIGGER nodes_relay_list_version_update AFTER UPDATE ON nodes_relay FOR EACH ROW"
        " WHEN NEW.public_url IS NOT OLD.public_url OR NEW.id IS NOT OLD.id"
        f" BEGIN {_RENEW_RELAYED.format(ids='OLD.id, NEW.id')} END"
    ),
    "nodes_relay_list_version_delete": (
        "CREATE TRIGGER nodes_relay_list_version_delete AFTER DELETE ON nodes_relay FOR EACH ROW"
        f" BEGIN {_RENEW_RELAYED.format(ids='OLD.id')} END"
    ),
}


_HAS_COLUMN = "SELECT 1 FROM pragma_table_info('nodes_node') WHERE name = ?"


TABLES = ("nodes_node", "nodes_contributor", "nodes_relay")

# PostgreSQL: the functions the triggers run (their bodies, as pg_proc keeps them) and the triggers.
SEQUENCE = "nodes_node_list_version_seq"


def _renew(column: str) -> str:
    # The node's own BEFORE UPDATE trigger gives each touched row its next version.
    update = f"UPDATE nodes_node SET list_version = 0 WHERE {column}"  # noqa: S608 - constants only
    return (
        f"BEGIN IF TG_OP <> 'INSERT' THEN {update} = OLD.id; END IF;"
        f" IF TG_OP <> 'DELETE' THEN {update} = NEW.id; END IF;"
        " RETURN NULL; END"
    )


PG_FUNCTIONS = {
    "nodes_node_list_version": f"BEGIN NEW.list_version := nextval('{SEQUENCE}'); RETURN NEW; END",
    "nodes_owner_list_version": _renew("owner_id"),
    "nodes_relay_list_version": _renew("relay_id"),
}
PG_TRIGGERS = {
    ("nodes_node", "nodes_node_list_version"): "BEFORE INSERT OR UPDATE ON nodes_node FOR EACH ROW"
    " EXECUTE FUNCTION nodes_node_list_version()",
    ("nodes_contributor", "nodes_contributor_list_version"): "AFTER INSERT OR DELETE ON nodes_contributor"
    " FOR EACH ROW EXECUTE FUNCTION nodes_owner_list_version()",
    ("nodes_contributor", "nodes_contributor_list_version_update"): "AFTER UPDATE ON nodes_contributor FOR EACH ROW"
    " WHEN (OLD.handle IS DISTINCT FROM NEW.handle OR OLD.id IS DISTINCT FROM NEW.id)"
    " EXECUTE FUNCTION nodes_owner_list_version()",
    ("nodes_relay", "nodes_relay_list_version"): "AFTER INSERT OR DELETE ON nodes_relay"
    " FOR EACH ROW EXECUTE FUNCTION nodes_relay_list_version()",
    ("nodes_relay", "nodes_relay_list_version_update"): "AFTER UPDATE ON nodes_relay FOR EACH ROW"
    " WHEN (OLD.public_url IS DISTINCT FROM NEW.public_url OR OLD.id IS DISTINCT FROM NEW.id)"
    " EXECUTE FUNCTION nodes_relay_list_version()",
}


def install(connection) -> None:
    """The column (when missing), the triggers made again and every version renewed, on a SQLite or PostgreSQL
    `connection`; nothing where a table is missing (a migrate back to before them)."""
    if connection.vendor not in ("sqlite", "postgresql"):
        return
    if not set(TABLES) <= set(connection.introspection.table_names()):
        return
    if connection.vendor == "postgresql":
        _install_postgresql(connection)
        return
    with connection.cursor() as cursor:
        cursor.execute(_HAS_COLUMN.replace("?", "%s"), [COLUMN])
        if cursor.fetchone() is None:
            cursor.execute(f"ALTER TABLE nodes_node ADD COLUMN {COLUMN} integer NOT NULL DEFAULT 0")
        for name, sql in TRIGGERS.items():
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            cursor.execute(sql)
        cursor.execute(f"UPDATE nodes_node SET {COLUMN} = random()")  # noqa: S608 - constants only


def _install_postgresql(connection) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")
        cursor.execute(f"ALTER TABLE nodes_node ADD COLUMN IF NOT EXISTS {COLUMN} bigint NOT NULL DEFAULT 0")
        for name, body in PG_FUNCTIONS.items():
            cursor.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$")
        for (table, name), definition in PG_TRIGGERS.items():
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            cursor.execute(f"CREATE TRIGGER {name} {definition}")
        cursor.execute(f"UPDATE nodes_node SET {COLUMN} = 0")  # noqa: S608 - constants only; the trigger renews it


def installed(vendor: str, connection) -> bool:
    """Whether the database has the column and exactly these triggers (and on PostgreSQL these functions).
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
            "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = current_schema() AND p.proname = ANY(%s)",
            [list(PG_FUNCTIONS)],
        )
        if dict(cursor.fetchall()) != PG_FUNCTIONS:
            return False
        cursor.execute(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE NOT t.tgisinternal AND t.tgname = ANY(%s)",
            [[name for _table, name in PG_TRIGGERS]],
        )
        return set(cursor.fetchall()) == set(PG_TRIGGERS)

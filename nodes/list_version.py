"""A version per listed row, kept by SQLite itself (docs/benchmarks.md, "Eighth pass"): the node list keeps each
row's JSON text in the process (nodes.compiled_list.WrittenRows), and with a version the database changes whenever
anything the text is made of changes, a page whose rows are all known is one small query for `(id, version)`, not
45 values a row read into Python and compared.

The version is `nodes_node.list_version`, a column the ORM does not know (so that no `save()` ever writes a stale
value back), set to `random()` (64 bits) by triggers:
- on every INSERT and every UPDATE of a node, whatever the statement (the ORM, `.update()`, the admin, raw SQL);
- on the node rows of a contributor whose id or handle changes, and of one inserted or deleted (its handle is in the
  row's text);
- on the node rows of a relay whose id or public URL changes, and of one inserted or deleted (a relayed rig's
  endpoint is made from its relay's URL).
A random value never repeats a version a process kept (2^-64 a pair), so a kept text is never shown for a row
that changed, even one deleted and made again with the same id. Each trigger changes the version only while the
statement it follows left it as it was: its own UPDATE sets a new one, so it cannot fire itself again even with
SQLite's `recursive_triggers` on.

Only on SQLite, where the list's JSON path runs (nodes.compiled_list.page_json). Django drops a table's triggers
and unknown columns when a migration remakes the table, so `install` runs after every `migrate` (post_migrate,
nodes.apps): the column is added back when missing, the triggers made again, and every version renewed, so that no
text kept before the migration matches after it. The list uses versions only where `installed` finds the column
and these very triggers; elsewhere it keys rows on their values as before."""

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


def install(connection) -> None:
    """The column (when missing), the triggers made again and every version renewed, on a SQLite `connection`;
    nothing where a table is missing (a migrate back to before them)."""
    if connection.vendor != "sqlite" or not set(TABLES) <= set(connection.introspection.table_names()):
        return
    with connection.cursor() as cursor:
        cursor.execute(_HAS_COLUMN.replace("?", "%s"), [COLUMN])
        if cursor.fetchone() is None:
            cursor.execute(f"ALTER TABLE nodes_node ADD COLUMN {COLUMN} integer NOT NULL DEFAULT 0")
        for name, sql in TRIGGERS.items():
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            cursor.execute(sql)
        cursor.execute(f"UPDATE nodes_node SET {COLUMN} = random()")  # noqa: S608 - constants only


def installed(connection) -> bool:
    """Whether a SQLite database has the column and exactly these triggers. `connection`: the DB-API connection
    itself (sqlite3), read with no Django cursor: nodes.compiled_list asks once per page shape and process, when it
    compiles the shape, and that catalog read is no query of the request that happens to compile it."""
    if not connection.execute(_HAS_COLUMN, [COLUMN]).fetchall():
        return False
    found = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    return {name: sql for name, sql in found if name in TRIGGERS} == TRIGGERS

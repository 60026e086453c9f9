"""Which tests depend on the database engine the suite runs on.

`make test` runs the whole suite on SQLite, then again on PostgreSQL. Only the tests that reach the suite's
database can answer differently the second time: those that use Django's database in-process (pytest-django's
fixtures or its `django_db` mark) and those that start a tracker process on "a database of the suite's engine"
(`tests.processes.fresh_database`, through `tests.agents.running_tracker` or the session `tracker`). The rest
(agents against fakes, the relay's own tests, files that make their own PostgreSQL database whichever engine the
suite runs on) would only repeat themselves: `pytest --engine-dependent-only` deselects them (reported as
deselected, never as skipped).

Found from the fixtures each test asks for (the whole closure) and from the source of the test's module and of
each of those fixtures: a test that reaches the database in a way neither shows would be deselected wrongly, so
the rule errs towards keeping a test (a whole module is kept when it names `fresh_database` or `running_tracker`).
"""

import functools
import inspect

# pytest-django's fixtures that open the test database, and the session tracker (tests/conftest.py) that runs on
# a database of the suite's engine.
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "django_db_setup",
        "live_server",
        "tracker",
    }
)
# Names whose presence in a module or fixture means a tracker process on the suite's engine.
ENGINE_NAMES = ("fresh_database", "running_tracker")

OPTION = "--engine-dependent-only"


@functools.cache
def _source_names_engine(obj) -> bool:
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return True  # cannot tell: keep the test
    return any(name in source for name in ENGINE_NAMES)


def depends_on_engine(item) -> bool:
    if item.get_closest_marker("django_db"):
        return True
    names = set(getattr(item, "fixturenames", ()))
    if names & DATABASE_FIXTURES:
        return True
    module = getattr(item, "module", None)
    if module is None or _source_names_engine(module):
        return True
    fixtureinfo = getattr(item, "_fixtureinfo", None)
    for name in names:
        for fixturedef in fixtureinfo.name2fixturedefs.get(name, ()) if fixtureinfo else ():
            if _source_names_engine(fixturedef.func):
                return True
    return False


def add_option(parser) -> None:
    parser.addoption(
        OPTION,
        action="store_true",
        help="run only the tests that reach the suite's database (the PostgreSQL pass of `make test`)",
    )


def suite_on_sqlite() -> bool:
    """The suite's own engine, as the settings pytest-django loaded say (DATABASE_URL, SQLite by default)."""
    from django.conf import settings

    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"


def deselect_engine_independent(config, items) -> None:
    """With the option, the tests that cannot answer differently on this engine; on any engine, the tests marked
    `sqlite_only` (SQLite's own code path) when the suite runs on another."""
    only_dependent, on_sqlite = config.getoption(OPTION), suite_on_sqlite()
    if not only_dependent and on_sqlite:
        return
    kept, dropped = [], []
    for item in items:
        not_here = bool(item.get_closest_marker("sqlite_only")) and not on_sqlite
        (dropped if not_here or (only_dependent and not depends_on_engine(item)) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

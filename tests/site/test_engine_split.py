"""The PostgreSQL pass of `make test` runs only the tests that reach the suite's database (tests/engine_split.py):
what it keeps and drops is checked on files whose tests are known, by collecting them as `make` does."""

import subprocess
import sys

from tests.processes import ROOT

FILES = [
    "tests/nodes/test_pure_rules.py",  # pure functions: no database
    "tests/node_agent/test_cli.py",  # the session tracker for all but one test
    "tests/site/test_daphne.py",  # its own tracker fixture, on a fresh database of the suite's engine
    "tests/site/test_migrations.py",  # fresh_database in its helpers
    "tests/nodes/test_badges.py",  # pure badge rules
    "tests/nodes/test_node_list.py",  # the db fixture
]


def collected(*options: str) -> tuple[set[str], str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *options, *FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return {line for line in out.splitlines() if "::" in line}, out


def test_the_postgresql_pass_keeps_every_test_that_reaches_the_database_and_only_those():
    everything, _ = collected()
    kept, summary = collected("--engine-dependent-only")
    dropped = everything - kept
    assert kept < everything and f"({len(dropped)} deselected)" in summary
    files_of = lambda ids: {i.split("::")[0] for i in ids}  # noqa: E731
    assert files_of(dropped) == {
        "tests/nodes/test_pure_rules.py",
        "tests/nodes/test_badges.py",
        "tests/node_agent/test_cli.py",
    }
    assert [i for i in dropped if i.startswith("tests/node_agent/test_cli.py")] == [
        "tests/node_agent/test_cli.py::test_serve_without_a_configuration_says_what_is_missing"
    ]
    for kept_whole in ("tests/site/test_daphne.py", "tests/site/test_migrations.py", "tests/nodes/test_node_list.py"):
        assert {i for i in everything if i.startswith(kept_whole)} <= kept, kept_whole

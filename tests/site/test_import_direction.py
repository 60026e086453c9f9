"""The tracker's apps import one way: core <- nodes <- tracker <- moderation <- showcase, and luckrig_site (the
settings and wiring on top) is imported by none of them. The agent and the relay import no Django and none of the
tracker's packages (their own tests also run them without Django installed: tests/node_agent/test_install.py).

Read statically (every `import` and `from ... import` in every module, deferred imports inside functions
included), so an import hidden in a rarely called function cannot slip through."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACKER_PACKAGES = ["core", "nodes", "tracker", "moderation", "showcase", "luckrig_site"]
# What each package may import among the repository's own packages (itself always).
ALLOWED = {
    "core": set(),
    "nodes": {"core"},
    "tracker": {"core", "nodes"},
    "moderation": {"core", "nodes", "tracker"},
    "showcase": {"core", "nodes", "tracker", "moderation"},
    "luckrig_site": {"core", "nodes", "tracker", "moderation", "showcase"},
    "node_agent": set(),
    "relay": {"node_agent"},
}
OURS = set(ALLOWED)
NO_DJANGO = {"node_agent", "relay"}
DJANGO_WORLD = {"django", "rest_framework", "channels", "daphne", "drf_spectacular", "django_ratelimit", "axes"}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules_of(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "egg-info" not in str(p))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_packages_below_it(package):
    wrong = []
    for path in modules_of(package):
        for name in imported_top_levels(path) & OURS - {package} - ALLOWED[package]:
            wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(NO_DJANGO))
def test_the_agent_and_the_relay_import_no_django(package):
    wrong = []
    for path in modules_of(package):
        for name in imported_top_levels(path) & (DJANGO_WORLD | set(TRACKER_PACKAGES)):
            wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def later():\n    from tracker.models import Contributor\n    import django.db\n")
    assert {"tracker", "django"} <= imported_top_levels(sneaky)

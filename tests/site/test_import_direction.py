"""The tracker's apps import one way: core <- nodes <- tracker <- moderation <- showcase, and luckrig_site (the
settings and wiring on top) is imported by none of them. The agent and the relay import no Django and none of the
tracker's packages (their own tests also run them without Django installed: tests/node_agent/test_install.py).

Read statically (every `import` and `from ... import` in every module, deferred imports inside functions
included), so an import hidden in a rarely called function cannot slip through. Foreign keys follow the same
direction (issue 13): a model's relations point at its own app or an app below it, read from the app registry."""

import ast
from pathlib import Path

import pytest
from django.apps import apps
from django.db import models
from django.test.utils import isolate_apps

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
# The apps with models, bottom first: a relation may point at its own app, one below it, or outside ours (auth).
MODEL_ORDER = ["core", "nodes", "tracker", "moderation", "showcase"]
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
    sneaky.write_text("def later():\n    from tracker.models import TastingToken\n    import django.db\n")
    assert {"tracker", "django"} <= imported_top_levels(sneaky)


def wrong_way_relations(model_classes) -> list[str]:
    """Every ForeignKey, OneToOneField and ManyToManyField declared on these models that points at an app of ours
    above the model's own."""
    wrong = []
    for model in model_classes:
        app = model._meta.app_label
        if app not in MODEL_ORDER:
            continue
        for field in model._meta.get_fields():
            if not field.is_relation or field.auto_created or field.related_model is None:
                continue  # reverse accessors are the other model's fields; a generic relation names no model
            target = field.related_model._meta.app_label
            if target in MODEL_ORDER and MODEL_ORDER.index(target) > MODEL_ORDER.index(app):
                wrong.append(f"{model._meta.label}.{field.name} -> {field.related_model._meta.label}")
    return wrong


def test_every_relation_points_at_its_own_app_or_one_below():
    ours = [m for m in apps.get_models() if m._meta.app_label in MODEL_ORDER]
    assert {m._meta.app_label for m in ours} == {"nodes", "tracker", "moderation", "showcase"}
    assert not wrong_way_relations(ours)


@isolate_apps("nodes", "tracker")
def test_the_relation_check_sees_a_wrong_way_foreign_key():
    class Person(models.Model):  # noqa: DJ008
        class Meta:
            app_label = "tracker"

    class Rig(models.Model):  # noqa: DJ008
        owner = models.ForeignKey(Person, on_delete=models.CASCADE)
        tasters = models.ManyToManyField(Person, related_name="+")
        keeper = models.OneToOneField(Person, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "nodes"

    class Token(models.Model):  # noqa: DJ008
        rig = models.ForeignKey(Rig, on_delete=models.CASCADE)  # down the direction: fine

        class Meta:
            app_label = "tracker"

    assert sorted(wrong_way_relations([Person, Rig, Token])) == [
        "nodes.Rig.keeper -> tracker.Person",
        "nodes.Rig.owner -> tracker.Person",
        "nodes.Rig.tasters -> tracker.Person",
    ]

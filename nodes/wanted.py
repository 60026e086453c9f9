"""Wanted models (issue 16): the catalog's models that few or no rigs serve, rarest first, so that an owner
choosing what to pull adds breadth rather than one more copy of the common model. LuckRig is a showcase of
breadth: a model nobody serves is the most wanted.

A rig serves a catalog model when the file it reports (`model_identity`, nodes/model_files.py) has the catalog
entry's sha256, the same test as "matches catalog". Only listed rigs count (public, in service, reported in:
Node.objects.listed()) that are live now (available or busy): a circle or unlisted rig is never counted, so the
numbers reveal nothing about them. The answer is the same for everyone and changes slowly, so it is cached for
CACHE_SECONDS; one grouped query builds it. (A model page counts from the grouped rows it reads anyway:
showcase/model_views.py.) Only a suggestion: the owner pulls (`luckrig-node pull NAME`), the
tracker never does."""

import functools
import json

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count

from nodes.model_files import CATALOG_FILE
from nodes.models import Node

CACHE_KEY = "nodes:wanted-models:1"
CACHE_SECONDS = 60
LIVE_STATUSES = (Node.Status.AVAILABLE, Node.Status.BUSY)


@functools.cache
def catalog() -> tuple[dict, ...]:
    """The catalog's entries (nodes/model_catalog.json), read once per process."""
    return tuple(json.loads(CATALOG_FILE.read_text())["models"])


def rigs_by_sha256(digests: list[str]) -> dict[str, int]:
    """How many listed, live rigs report a model file with each of these sha256 (one grouped query)."""
    rows = (
        Node.objects.listed()
        .filter(status__in=LIVE_STATUSES, model_identity__sha256__in=digests)
        .order_by()
        .values("model_identity__sha256")
        .annotate(n=Count("id"))
    )
    return {r["model_identity__sha256"]: r["n"] for r in rows}


def from_counts(counts: dict[str, int]) -> list[dict]:
    """The wanted list for these counts of listed live rigs by sha256: the catalog entries with fewer than
    WANTED_MAX_RIGS, fewest first (ties in catalog order), each with its pull command. Pure."""
    found = [
        {
            "name": e["name"],
            "file": e["file"],
            "sha256": e["sha256"],
            "size": e.get("size"),
            "licence": e.get("licence"),
            "source": e.get("source"),
            "rigs": counts.get(e["sha256"], 0),
            "pull": f"luckrig-node pull {e['name']}",
        }
        for e in catalog()
        if counts.get(e["sha256"], 0) < settings.WANTED_MAX_RIGS
    ]
    found.sort(key=lambda w: w["rigs"])  # stable: equal counts keep the catalog's order
    return found


def wanted_models() -> list[dict]:
    """from_counts over the database (one grouped query), cached for CACHE_SECONDS."""
    found = cache.get(CACHE_KEY)
    if found is None:
        found = from_counts(rigs_by_sha256([e["sha256"] for e in catalog()]))
        cache.set(CACHE_KEY, found, CACHE_SECONDS)
    return found

"""`GET /api/models/wanted` (nodes/wanted.py): the catalog's models that few or no listed live rigs serve, by the
sha256 of the file each rig reports, fewest first and under WANTED_MAX_RIGS; circle, unlisted, taken-down and
offline rigs never counted; the answer cached for a minute."""

import re

import pytest
from django.core.cache import cache
from django.utils import timezone

from nodes import wanted
from nodes.models import Node
from tests import factories

A, B, C = ("a" * 64, "b" * 64, "c" * 64)
CATALOG = tuple(
    {
        "name": f"{name}:1b-q4_0",
        "file": f"{name}.Q4_0.gguf",
        "url": f"https://huggingface.co/o/{name}/resolve/main/{name}.Q4_0.gguf",
        "sha256": digest,
        "size": 1000 + i,
        "licence": "Apache-2.0",
        "source": f"https://huggingface.co/o/{name}",
    }
    for i, (name, digest) in enumerate([("alpha", A), ("beta", B), ("gamma", C)])
)


@pytest.fixture
def catalog(monkeypatch):
    monkeypatch.setattr(wanted, "catalog", lambda: CATALOG)


def rig(owner, sha256: str, **fields) -> Node:
    """A rig that reported a model file with `sha256`: listed and available unless `fields` say otherwise."""
    node, _ = factories.make_node(owner)
    row = {"status": "available", "last_heartbeat_at": timezone.now()} | fields
    Node.objects.filter(pk=node.pk).update(model_identity={"model": "m", "sha256": sha256, "size": 1}, **row)
    return node


def listing(api) -> list[tuple[str, int]]:
    status, body = api.get("/api/models/wanted")
    assert status == 200 and body["schema_version"] == 1
    return [(w["name"].split(":")[0], w["rigs"]) for w in body["wanted"]]


@pytest.mark.django_db
def test_the_least_served_catalog_models_come_first_and_well_served_ones_are_left_out(api, owner, catalog, settings):
    settings.WANTED_MAX_RIGS = 3
    for _ in range(3):
        rig(owner, A)  # alpha: 3 rigs, enough
    rig(owner, C, status="busy")  # gamma: 1 (busy is live)
    assert listing(api) == [("beta", 0), ("gamma", 1)]
    _, body = api.get("/api/models/wanted")
    assert body["wanted"][0] == {
        "name": "beta:1b-q4_0",
        "file": "beta.Q4_0.gguf",
        "sha256": B,
        "size": 1001,
        "licence": "Apache-2.0",
        "source": "https://huggingface.co/o/beta",
        "rigs": 0,
        "pull": "luckrig-node pull beta:1b-q4_0",
    }

    cache.clear()
    settings.WANTED_MAX_RIGS = 4  # the threshold is a setting: alpha's 3 rigs are now few enough
    assert listing(api) == [("beta", 0), ("gamma", 1), ("alpha", 3)]
    cache.clear()
    settings.WANTED_MAX_RIGS = 1
    assert listing(api) == [("beta", 0)]


@pytest.mark.django_db
def test_circle_unlisted_taken_down_and_offline_rigs_are_not_counted(api, owner, catalog):
    rig(owner, A, visibility="circle")
    rig(owner, A, visibility="unlisted")
    rig(owner, A, taken_down_at=timezone.now())
    rig(owner, A, status="unavailable")
    rig(owner, A, last_heartbeat_at=None)  # registered, never reported in: not a listed rig
    rig(owner, B)
    assert listing(api) == [("alpha", 0), ("gamma", 0), ("beta", 1)]  # equal counts keep the catalog's order


@pytest.mark.django_db
def test_the_answer_is_cached_for_a_minute(api, owner, catalog, django_assert_num_queries):
    assert listing(api) == [("alpha", 0), ("beta", 0), ("gamma", 0)]
    rig(owner, A)
    with django_assert_num_queries(0):
        assert listing(api) == [("alpha", 0), ("beta", 0), ("gamma", 0)]  # the cached answer
    cache.delete(wanted.CACHE_KEY)  # a minute later, as far as the cache is concerned
    assert listing(api) == [("beta", 0), ("gamma", 0), ("alpha", 1)]


@pytest.mark.django_db
def test_the_real_catalog_is_offered_with_its_pull_command(api):
    _, body = api.get("/api/models/wanted")
    assert [w["pull"] for w in body["wanted"]] == ["luckrig-node pull smollm2:135m-instruct-q4_1"]


@pytest.mark.django_db
def test_a_model_page_shows_the_wanted_models_with_their_escaped_pull_commands(client, owner, catalog, monkeypatch):
    odd = {**CATALOG[1], "name": "beta:<b>1b</b>"}  # a catalog name is data, never markup
    monkeypatch.setattr(wanted, "catalog", lambda: (CATALOG[0], odd, CATALOG[2]))
    serving = rig(owner, A)
    Node.objects.filter(pk=serving.pk).update(model_name="Alpha-1B")
    rig(owner, A, visibility="circle")  # never counted, on the page either
    html = client.get("/models/alpha-1b/", HTTP_ACCEPT="text/html").content.decode()
    section = html[html.index("data-wanted>") : html.index("</section>", html.index("data-wanted>"))]
    assert "Wanted on LuckRig" in section
    assert "<code data-wanted-pull>luckrig-node pull beta:&lt;b&gt;1b&lt;/b&gt;</code>" in section
    assert "<b>1b</b>" not in section
    items = re.findall(r'data-wanted-model="([^"]+)".*?data-wanted-rigs>· ([^<]+)</span>', section, re.S)
    assert items == [
        ("beta:&lt;b&gt;1b&lt;/b&gt;", "served by no rig yet"),
        ("gamma:1b-q4_0", "served by no rig yet"),
        ("alpha:1b-q4_0", "served by 1 rig"),
    ]

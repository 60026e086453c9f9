"""The home page and cards through Django's test client: the live shelf, the coverage picture, what a card says
(demo, offline, plurals, rarity only when rare), and the site's own 404 page under DEBUG.
(In a real browser, at phone and desktop sizes: tests/browser/test_design.py.)"""

import re
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from nodes.models import Node
from showcase import coverage, display
from tests import factories

pytestmark = pytest.mark.django_db
HTML = {"HTTP_ACCEPT": "text/html"}
DEMO = "apple-m3-max-qwen2-5-14b-instruct-q5-k-m"


def rig(api, person, **fields) -> Node:
    node, secret = factories.make_node(person, **fields)
    factories.heartbeat(api, node, secret)
    return node


def home(client, path="/") -> str:
    response = client.get(path, **HTML)
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, marker: str, end: str) -> str:
    start = html.index(marker)
    return html[start : html.index(end, start)]


@pytest.fixture
def client():
    return Client()


def test_the_live_shelf_comes_first_with_a_taste_action_and_leaves_offline_rigs_to_the_map(client, api, owner):
    call_command("seed_demo")  # three rigs that no longer serve, rarest of all
    live = rig(api, owner, gpu="NVIDIA GeForce RTX 3060", display_name="Live one")
    gone = rig(api, owner, gpu="AMD Radeon RX 6800", display_name="Gone one")
    Node.objects.filter(pk=gone.pk).update(last_heartbeat_at=timezone.now() - timedelta(days=2), status="unavailable")
    html = home(client)
    shelf = section(html, 'class="live-shelf"', "</section>")
    assert html.index('class="live-shelf"') < html.index('id="map"')
    assert f'href="/nodes/{live.id}/#taste"' in shelf and "Live one" in shelf
    assert "Gone one" not in shelf and DEMO not in shelf
    rigs_map = html[html.index('id="map"') :]
    assert DEMO in rigs_map and "Gone one" in rigs_map


def test_the_shelf_says_so_when_no_rig_serves(client, api, owner):
    call_command("seed_demo")
    shelf = section(home(client), 'class="live-shelf"', "</section>")
    assert "No rig is serving right now." in shelf and 'href="/contribute/"' in shelf and "#taste" not in shelf


def card_of(html: str, node_id: str) -> str:
    rigs_map = html[html.index('id="map"') :]
    start = rigs_map.index(f'data-node="{node_id}"')
    return rigs_map[start : rigs_map.index("</article>", start)]


def test_a_demo_rig_says_it_is_an_example_and_offers_no_tasting(client):
    call_command("seed_demo")
    card = card_of(home(client), DEMO)
    assert "An example listing from the proof of concept" in card and ">example<" in card
    assert "#taste" not in card and "Offline: last seen" not in card


def test_an_offline_rig_says_when_it_was_last_seen(client, api, owner):
    gone = rig(api, owner, display_name="Gone one")
    seen = timezone.now() - timedelta(days=3, hours=2)
    Node.objects.filter(pk=gone.pk).update(last_heartbeat_at=seen, last_seen_at=seen, status="unavailable")
    card = card_of(home(client), gone.id)
    assert "Offline: last seen 3\xa0days ago" in card and seen.strftime("%Y-%m-%d") in card
    assert "#taste" not in card


def test_cards_count_samples_with_proper_plurals(client, api, owner):
    one = rig(api, owner, gpu="RTX 3060", display_name="One sample")
    many = rig(api, owner, gpu="RTX 3070", display_name="Twelve samples")
    Node.objects.filter(pk=one.pk).update(timing_samples_count=1, tok_per_sec_p50=40.0, ttft_ms_p50=300)
    Node.objects.filter(pk=many.pk).update(timing_samples_count=12, tok_per_sec_p50=50.0, ttft_ms_p50=200)
    html = home(client)
    assert "p50, 1 sample<" in card_of(html, one.id)
    assert "p50, 12 samples<" in card_of(html, many.id)
    assert "samples" not in card_of(html, one.id)


def test_a_card_title_is_the_display_name_else_gpu_and_model_without_vendor_words():
    base = {"display_name": "", "gpu": "NVIDIA GeForce RTX 5090", "model_name": "Qwen3-35B-A3B", "id": "x"}
    assert display.human_title(base) == "RTX 5090 · Qwen3-35B-A3B"
    assert display.human_title({**base, "display_name": "My rig"}) == "My rig"
    assert display.short_gpu("AMD Radeon RX 7900 XTX") == "RX 7900 XTX"
    assert display.short_gpu("Intel(R) Arc(TM) A770 Graphics") == "Arc A770"
    assert display.short_gpu("Apple M3 Max") == "Apple M3 Max"
    assert display.short_gpu("NVIDIA") == "NVIDIA"  # nothing left: the raw name


def test_the_rarity_line_is_said_only_of_a_rare_rig():
    assert display.rarity_line(1) == "The only rig with this GPU, model and quant"
    assert "two" in display.rarity_line(2)
    assert display.rarity_line(3) == "" and display.rarity_line(None) == ""


def row(gpu, model, quant, vram, status, n) -> dict:
    return {"gpu": gpu, "model_name": model, "quantization": quant, "vram_gb": vram, "status": status, "n": n}


def test_the_coverage_picture_counts_families_models_quants_and_the_vram_range():
    rows = [
        row("NVIDIA GeForce RTX 4090", "Qwen", "Q4_K_M", 24, "available", 3),
        row("NVIDIA GeForce RTX 3060", "Qwen", "Q8_0", 12, "busy", 1),
        row("Apple M3 Max", "Llama", "Q4_K_M", 48, "unavailable", 1),
        row("AMD Ryzen 9 CPU", "Phi", "Q4_0", 0, "unavailable", 2),
    ]
    out = coverage.summarize(rows)
    assert out["counts"] == {"listed": 7, "available": 3, "busy": 1, "unavailable": 3, "unknown": 0}
    families, models, quants = out["tiles"]
    assert [(r["label"], r["n"]) for r in families.rows] == [
        ("NVIDIA Ada Lovelace", 3),
        ("CPU", 2),
        ("Apple M3", 1),
        ("NVIDIA Ampere", 1),
    ]
    assert families.rows[0]["width"] == coverage.BAR_W and families.rows[1]["width"] < coverage.BAR_W
    assert models.total == 3 and quants.rows[0]["label"] == "Q4_K_M" and quants.rows[0]["n"] == 4
    assert "NVIDIA Ada Lovelace: 3 rigs" in families.alt and "Apple M3: 1 rig" in families.alt
    vram = out["vram"]
    assert (vram["low"], vram["high"]) == ("12", "48")
    assert [d["label"] for d in vram["dots"]] == ["12 GB", "24 GB", "48 GB"]
    xs = [d["x"] for d in vram["dots"]]
    assert xs == sorted(xs) and vram["x0"] <= xs[0] and xs[-1] <= vram["x1"]
    assert "shared memory or CPU: 2 rigs" in vram["alt"]


def test_the_coverage_picture_folds_the_long_tail_into_others():
    rows = [row(f"RTX {i}", f"M{i}", "Q4", None, "available", 1) for i in range(8)]
    families, models, _quants = coverage.summarize(rows)["tiles"]
    assert len(models.rows) == coverage.TOP and models.others == 3 and "others: 3 rigs" in models.alt
    assert coverage.summarize(rows)["vram"] is None


def test_the_home_page_draws_the_coverage_picture_with_text_alternatives(client, api, owner):
    rig(api, owner, gpu="NVIDIA GeForce RTX 4090", vram_gb=24)
    rig(api, owner, gpu="Apple M2 Ultra", vram_gb=192)
    html = home(client)
    pictures = re.findall(r'<svg class="cov-[a-z]+"[^>]*role="img" aria-label="([^"]+)"', html)
    assert len(pictures) == 4 and all(alt.strip() for alt in pictures)
    assert any("VRAM from 24 GB to 192 GB" in alt for alt in pictures)


def test_filters_fold_and_count_the_active_ones(client, api, owner):
    rig(api, owner, gpu="Apple M2 Ultra")
    plain = home(client)
    assert '<details class="filters-fold" data-open-wide>' in plain and "data-active-filters" not in plain
    narrowed = home(client, "/?gpu=apple&min_ctx=1000&order=rarity")
    assert '<details class="filters-fold" data-open-wide open>' in narrowed
    assert re.search(r"data-active-filters>2 active<", narrowed)  # the default order is not a filter


def test_the_home_page_cost_stays_constant_with_live_rigs(client, api, owner):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def cost():
        with CaptureQueriesContext(connection) as ctx:
            home(client)
        return len(ctx.captured_queries)

    rig(api, owner, gpu="RTX 0")
    few = cost()
    for i in range(1, 12):
        rig(api, owner, gpu=f"RTX {i}", model_name=f"Model {i % 3}")
    assert cost() == few <= 4


@pytest.mark.parametrize("path", ["/nodes/no-such-rig/", "/replays/no-such-replay/", "/no/such/page/"])
def test_a_missing_page_is_the_sites_own_styled_404_even_under_debug(client, settings, path):
    settings.DEBUG = True
    response = client.get(path, **HTML)
    html = response.content.decode()
    assert response.status_code == 404
    assert "/static/showcase/site.css" in html and "See every listed rig" in html  # styled, with a way back
    assert "DEBUG = True" not in html  # not Django's technical page (its inline styles are blocked by the CSP)
    assert "style=" not in html and "<style" not in html


def test_the_api_keeps_its_json_404_under_debug(client, settings):
    settings.DEBUG = True
    response = client.get("/api/nodes/no-such-rig")
    assert response.status_code == 404 and response.json()["code"] == "node_not_found"
    response = client.get("/no/such/page/")  # no text/html: an API client
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")
    assert Counter(k for k in response.json()) == Counter(["schema_version", "error", "code"])


def test_the_queue_map_colours_the_load_by_fullness_and_says_it_in_words(client, api, owner):
    full, secret = factories.make_node(owner, display_name="Full rig")
    factories.heartbeat(api, full, secret, active=2, waiting=1, max_active=2)
    roomy, secret = factories.make_node(owner, gpu="RTX 3090", display_name="Roomy rig")
    factories.heartbeat(api, roomy, secret, active=1, max_active=4)
    html = client.get("/queue/", **HTML).content.decode()

    def row(node):
        start = html.index(f'<tr data-node="{node.id}"')
        return html[start : html.index("</tr>", start)]

    # optimum 0, so the browser draws a value past `high` as bad (red), between `low` and `high` amber, else green.
    assert 'max="2" low="1.0" high="1.5" optimum="0" value="2"' in row(full)
    assert "2 of 2 slots · full" in row(full)
    assert 'max="4" low="2.0" high="3.5" optimum="0" value="1"' in row(roomy)
    assert "1 of 4 slots<" in row(roomy) and "full" not in row(roomy)
    assert 'class="reach reach-direct" data-reachability' in row(full)
    assert display.fill_levels(0, 0) == {"low": 0.5, "high": 0.5, "full": False}


def test_the_header_reaches_every_part_of_the_site_and_marks_where_you_are(client):
    """Rig against rig, the replays and My rigs are features, not dead ends: the header links them all, and
    every link it offers answers a page."""
    html = home(client, "/replays/")
    nav = section(html, '<nav aria-label="Main"', "</nav>")
    links = re.findall(r'href="([^"]+)"', nav)
    for path in ("/", "/compare/", "/queue/", "/replays/", "/contribute/", "/my/rigs/", "/about/trust/"):
        assert path in links
    for path in links:
        assert client.get(path, **HTML).status_code == 200, path
    assert re.search(r'href="/replays/" aria-current="page"', nav)

"""The design in a real browser, at a phone's size (390×844) and a laptop's (1366×900), in English and Japanese:
the live shelf and a Taste action in the first screen, no page scrolls sideways, every form field has a label,
every picture and chart a text alternative, demo and offline rigs say what they are, the queue map's bars, the
styled 404. The harness fails any page with a JS error or a CSP violation."""

import pytest

from tests.browser.conftest import another_taster, sideways_overflow
from tests.browser.test_site import APPLE, PI

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
LANGS = {"en": {"locale": "en-US"}, "ja": {"locale": "ja-JP", "extra_http_headers": {"Accept-Language": "ja"}}}


def open_page(new_page, size: str, lang: str):
    return new_page(**SIZES[size], **LANGS[lang])


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_the_live_shelf_and_a_taste_action_are_in_the_first_screen(site, rig, new_page, shot, size, lang):
    page = open_page(new_page, size, lang)
    page.goto("/")
    height = page.viewport_size["height"]
    shelf = page.locator(".live-shelf")
    taste = shelf.locator(f'article[data-node="{rig.node_id}"] a[data-taste]')
    assert taste.get_attribute("href") == f"/nodes/{rig.node_id}/#taste"
    box = taste.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height, (size, lang, box)
    heading = shelf.locator("h2").bounding_box()
    assert heading["y"] + heading["height"] <= height
    # The shelf holds serving rigs only: the demo rigs (rarest of all, long gone) stay on the map below.
    assert shelf.locator(f'article[data-node="{APPLE}"]').count() == 0
    assert page.locator(f'#map article[data-node="{APPLE}"]').count() == 1
    shot(page, f"home-{size}-{lang}")
    taste.click()
    page.wait_for_url(site.url(f"/nodes/{rig.node_id}/#taste"))


def pages(rig) -> list[str]:
    return [
        "/",
        f"/nodes/{rig.node_id}/",
        f"/compare/?ids={APPLE},{PI}",
        "/queue/",
        "/contribute/",
        "/my/circles/",
        "/about/trust/",
        "/replays/open/",
        "/nodes/no-such-rig/",
    ]


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(el => !(el.labels && el.labels.length))
    .filter(el => !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
    .map(el => el.outerHTML.slice(0, 160))"""
NO_ALT = """() => [
    ...[...document.querySelectorAll('img')].filter(el => !el.hasAttribute('alt')),
    ...[...document.querySelectorAll('svg[role=img]')].filter(el => !(
        (el.getAttribute('aria-label') || '').trim() ||
        (el.getAttribute('aria-labelledby') || '').trim() ||
        (el.querySelector(':scope > title') && el.querySelector(':scope > title').textContent.trim()))),
    ...[...document.querySelectorAll('svg:not([role]):not([aria-hidden=true])')]
        .filter(el => !el.closest('[aria-hidden=true]')),
  ].map(el => el.outerHTML.slice(0, 160))"""


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
def test_no_page_scrolls_sideways_and_every_field_and_picture_is_labelled(site, rig, new_page, size, lang):
    page = open_page(new_page, size, lang)
    for path in pages(rig):
        page.goto(path)
        page.wait_for_load_state("load")
        overflow, wide = sideways_overflow(page)
        assert overflow <= 1, (size, lang, path, overflow, wide)
        assert page.evaluate(UNLABELLED) == [], (size, lang, path)
        assert page.evaluate(NO_ALT) == [], (size, lang, path)


def test_the_coverage_picture_describes_the_network(site, rig, page):
    page.goto("/")
    pictures = page.locator(".coverage svg[role=img]")
    assert pictures.count() == 4
    families = pictures.first.get_attribute("aria-label")
    assert families.startswith("GPU families:") and "rig" in families
    vram = page.locator(".coverage svg.cov-vram").get_attribute("aria-label")
    assert vram.startswith("VRAM from ") and "48 GB" in vram  # the demo Apple M3 Max


def test_demo_and_offline_rigs_say_what_they_are_and_offer_no_tasting(site, rig, page):
    page.goto("/")
    demo = page.locator(f'#map article[data-node="{APPLE}"]')
    assert "example" in demo.locator(".card-head").inner_text()
    assert "proof of concept" in demo.inner_text()
    assert demo.locator("a[data-taste]").count() == 0
    live = page.locator(f'#map article[data-node="{rig.node_id}"]')
    assert live.locator("a[data-taste]").count() == 1
    # No score, no unlabelled bars, no fingerprint on a card: those stay on the rig page.
    for card in (demo, live):
        assert card.locator("meter").count() == 0 and "scarcity" not in card.inner_text()
        assert card.locator("[data-copy-source]").count() == 0


def test_filters_are_folded_on_a_phone_and_show_how_many_apply(site, rig, new_page):
    phone = open_page(new_page, "phone", "en")
    phone.goto("/")
    fold = phone.locator("details.filters-fold")
    assert fold.get_attribute("open") is None and not phone.locator('input[name="gpu"]').is_visible()
    fold.locator("summary").click()
    phone.fill('input[name="gpu"]', "apple")
    phone.fill('input[name="min_ctx"]', "1000")
    phone.click('form.filters button[type="submit"]')
    phone.wait_for_url("**/?*gpu=apple*")
    assert phone.locator("details.filters-fold[open] [data-active-filters]").inner_text() == "2 active"
    desktop = open_page(new_page, "desktop", "en")
    desktop.goto("/")
    assert desktop.locator('input[name="gpu"]').is_visible()  # a laptop shows the form unfolded


def test_the_tokens_apply_and_follow_the_system_dark_mode(site, rig, new_page):
    colours = []
    for scheme, bg in (("light", "#f5f7fa"), ("dark", "#0c1016")):
        page = new_page(color_scheme=scheme)
        page.goto("/")
        # The token block parsed (a stray comment end once dropped it, and every var() with it).
        assert page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bg').trim()") == bg
        colours.append(page.evaluate("getComputedStyle(document.body).backgroundColor"))
        primary = page.locator(".live-shelf a.btn-primary").first
        assert primary.evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"
    assert colours[0] != colours[1], colours


def test_a_missing_rig_is_the_sites_styled_404_with_a_way_back(site, page, shot):
    response = page.goto("/nodes/no-such-rig/")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Not found"
    assert page.locator(".site-header .brand").is_visible()
    # Styled by the site's stylesheet: a button, not a bare link.
    back = page.locator(".error-page a.btn-primary")
    assert back.evaluate("el => getComputedStyle(el).borderRadius") not in ("", "0px")
    shot(page, "not-found")
    back.click()
    page.wait_for_url(site.url("/"))


METER_STATE = "el => ({value: el.value, max: el.max, low: el.low, high: el.high, optimum: el.optimum})"


def test_the_queue_map_shows_reachability_and_a_load_bar_coloured_by_fullness(site, rig, page, shot):
    page.goto("/queue/")
    page.locator("[data-live-state]", has_text="live").wait_for()
    row = page.locator(f'tr[data-node="{rig.node_id}"]')
    assert row.locator("[data-reachability]").inner_text() == "direct"
    assert row.locator("[data-reachability]").get_attribute("title").startswith("Direct:")
    meter = row.locator("meter[data-load]")
    idle = meter.evaluate(METER_STATE)
    assert idle["value"] == 0 and idle["optimum"] == 0 and idle["value"] <= idle["low"]  # green: room
    assert row.locator("[data-fill-text]").inner_text() == "0 of 1 slots"
    with another_taster(site, rig, 0.25) as done:  # about 5 s of generation
        row.locator("[data-fill-text]", has_text="1 of 1 slots · full").wait_for(timeout=8000)
        busy = meter.evaluate(METER_STATE)
        assert busy["value"] == busy["max"] == 1 and busy["value"] > busy["high"]  # past `high`: drawn red
        shot(page, "queue-map-full")
        assert done.wait(30)
        row.locator("[data-fill-text]", has_text="0 of 1 slots").wait_for(timeout=8000)

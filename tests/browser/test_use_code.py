"""The "Use from code" box in Chromium (issue 14): its Copy buttons put the exact code on the clipboard, from the
keyboard, and select the text when the Clipboard API is missing or refused; the rig page's model name leads to
the model's page, whose box routes by model; both fit a phone (390×844) without the page scrolling sideways.
A relay is registered and reports in for these tests only, so that the site has a gateway URL to give."""

import pytest
import requests

from nodes.model_names import model_key
from tests.browser.conftest import sideways_overflow

pytestmark = pytest.mark.browser

RELAY_ID = "browser-gateway"
RELAY_URL = "https://gateway.example.org"
GATEWAY = RELAY_URL + "/v1"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
CLIPBOARD = {"permissions": ["clipboard-read", "clipboard-write"]}
# No Clipboard API (a plain-http site) and a browser that refuses the old copy command: only selecting is left.
NO_CLIPBOARD = """
Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined, configurable: true });
document.execCommand = () => false;
"""


@pytest.fixture
def gateway(site):
    """A live relay (one heartbeat: live for a minute), removed afterwards so that no other test's relayed rig is
    ever sent to it (it is not a running relay)."""
    secret = site.manage("relay", "add", RELAY_ID, RELAY_URL).strip().splitlines()[-1]
    try:
        beat = requests.post(
            site.url(f"/api/relays/{RELAY_ID}/heartbeat"),
            json={"schema_version": 1, "version": "0.1.0", "tunnels": [], "open_streams": 0},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        )
        assert beat.status_code == 200, beat.text
        assert requests.get(site.url("/api/gateway"), timeout=10).json()["base_url"] == GATEWAY
        yield GATEWAY
    finally:
        site.manage("relay", "remove", RELAY_ID)


def copy_with_keyboard(page, button, key: str) -> str:
    """Focus the button, press `key` on it, wait for its word; what the clipboard then holds."""
    button.focus()
    page.keyboard.press(key)
    page.wait_for_function("b => b.textContent === 'Copied'", arg=button.element_handle())
    return page.evaluate("navigator.clipboard.readText()")


def test_the_copy_buttons_copy_the_exact_code_from_the_keyboard(site, rig, gateway, new_page, shot):
    page = new_page(**CLIPBOARD)
    page.goto(f"/nodes/{rig.node_id}/")
    box = page.locator("[data-use-code=rig]")
    assert box.locator("[data-gateway-url]").inner_text() == gateway
    assert box.locator("[data-model-string]").inner_text() == f"rig:{rig.node_id}"
    python = box.locator('[data-snippet="python"]').text_content()
    curl = box.locator('[data-snippet="curl"]').text_content()
    assert f'base_url="{gateway}"' in python and f'model="rig:{rig.node_id}"' in python
    assert f"curl {gateway}/chat/completions" in curl and f'"model": "rig:{rig.node_id}"' in curl
    buttons = box.locator("button[data-copy]")
    assert buttons.count() == 2
    assert copy_with_keyboard(page, buttons.nth(0), "Enter") == python.strip()
    assert box.locator("[data-copy-status]").inner_text() == "Copied"  # said to screen readers too
    assert copy_with_keyboard(page, buttons.nth(1), "Space") == curl.strip()
    box.scroll_into_view_if_needed()
    shot(page, "rig-use-from-code")


def test_without_the_clipboard_api_copy_selects_the_code_and_says_how_to_copy_it(site, rig, gateway, new_page):
    page = new_page()
    page.add_init_script(NO_CLIPBOARD)
    page.goto(f"/nodes/{rig.node_id}/")
    box = page.locator("[data-use-code=rig]")
    assert page.evaluate("navigator.clipboard") is None
    button = box.locator("button[data-copy]").first
    button.click()
    assert box.locator("[data-copy-status]").inner_text() == "Selected: press Ctrl+C (⌘C on a Mac) to copy it."
    assert button.inner_text() == "Selected"
    selected = page.evaluate("window.getSelection().toString()")
    assert selected == box.locator('[data-snippet="python"]').text_content()


def test_the_model_page_from_the_rig_page_routes_by_model_and_fits_a_phone(site, rig, gateway, new_page, shot):
    key = model_key(site.node(rig.node_id)["model_name"])
    page = new_page(**PHONE, **CLIPBOARD)
    page.goto(f"/nodes/{rig.node_id}/")
    overflow, wide = sideways_overflow(page)
    assert overflow <= 1, ("rig page", overflow, wide)
    page.locator("[data-model-link]").click()
    page.wait_for_url(site.url(f"/models/{key}/"))
    assert page.locator(f'article[data-node="{rig.node_id}"]').count() == 1
    box = page.locator("[data-use-code=model]")
    assert box.locator("[data-model-string]").inner_text() == key
    python = box.locator('[data-snippet="python"]').text_content()
    assert f'base_url="{gateway}"' in python and f'model="{key}"' in python
    assert copy_with_keyboard(page, box.locator("button[data-copy]").first, "Enter") == python.strip()
    overflow, wide = sideways_overflow(page)
    assert overflow <= 1, ("model page", overflow, wide)
    # The code scrolls sideways inside its own box on a phone; the box itself stays within the screen.
    edge = box.bounding_box()
    assert edge["x"] >= 0 and edge["x"] + edge["width"] <= 390 + 1, edge
    shot(page, "model-page-phone")

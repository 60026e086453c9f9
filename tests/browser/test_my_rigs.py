"""An operator fixes their rigs in the browser: "My rigs" lists the rigs the contributor key in this browser owns
and changes them through PATCH /api/nodes/<id>; the tracker's refusal shows beside the field it names; without a
key the page says where to find or make one. The contribute page states how each tier is earned, with numbers."""

import re

import pytest
import requests

from tracker import scores

pytestmark = pytest.mark.browser


def with_key(page, key: str) -> None:
    """This browser holds `key`, as after "Use this key" on the contribute page."""
    page.goto("/contribute/")
    page.evaluate("key => localStorage.setItem('luckrig.contributor_key', key)", key)


@pytest.fixture
def owner(site):
    """A contributor key with two rigs of its own (registrations: they need no agent to be edited)."""
    key = site.contributor()
    first, _ = site.register(key, None, display_name="Attic K80", quantization="Q4_K_M", context_length=4096)
    second, _ = site.register(key, None, tuning_note="ngl 99")
    return key, first, second


def node(site, node_id: str) -> dict:
    return requests.get(site.url(f"/api/nodes/{node_id}"), timeout=10).json()["node"]


def test_my_rigs_lists_the_rigs_this_key_owns(site, page, owner, shot):
    key, first, second = owner
    with_key(page, key)
    page.goto("/my/rigs/")
    cards = page.locator("[data-rig]")
    cards.first.wait_for()
    assert cards.count() == 2
    assert page.locator("[data-my-state]").inner_text().startswith("2 rig(s) owned by")
    one = page.locator(f'[data-rig][data-node-id="{first}"]')
    assert one.locator("[data-rig-link]").inner_text() == "Attic K80"
    assert one.locator("[data-rig-link]").get_attribute("href") == f"/nodes/{first}/"
    # Every field is labelled and filled with what the tracker has.
    assert one.get_by_label("Quantization").input_value() == "Q4_K_M"
    assert one.get_by_label("Context length (tokens)").input_value() == "4096"
    other = page.locator(f'[data-rig][data-node-id="{second}"]')
    assert other.get_by_label("Tuning note").input_value() == "ngl 99"
    assert other.locator("[data-rig-link]").inner_text() == second  # no display name yet: its id
    assert page.locator("[data-no-key]").is_hidden()
    shot(page, "my-rigs")


def test_my_rigs_saves_only_what_changed_and_says_so(site, page, owner):
    key, first, _ = owner
    with_key(page, key)
    page.goto("/my/rigs/")
    card = page.locator(f'[data-rig][data-node-id="{first}"]')
    card.wait_for()
    before = node(site, first)
    card.get_by_label("Display name").fill("Attic K80, undervolted")
    card.get_by_label("Quantization").fill("Q5_K_M")
    card.get_by_label("Tags").fill("quiet, Undervolted")
    card.get_by_label("Tuning note").fill("ngl 99, flash attention on")
    card.get_by_role("button", name="Save changes").click()
    result = card.locator("[data-rig-result]")
    result.filter(has_text="Saved.").wait_for()
    text = result.inner_text()
    assert "Quantization: Q4_K_M → Q5_K_M" in text and "Tags: (none) → quiet, undervolted" in text
    assert "Display name: Attic K80 → Attic K80, undervolted" in text and "Context length" not in text
    after = node(site, first)
    assert (after["display_name"], after["quantization"], after["tags"]) == (
        "Attic K80, undervolted",
        "Q5_K_M",
        ["quiet", "undervolted"],
    )
    assert after["tuning_note"] == "ngl 99, flash attention on" and after["context_length"] == before["context_length"]
    assert card.locator("[data-rig-link]").inner_text() == "Attic K80, undervolted"

    # Saving again with nothing changed sends nothing.
    card.get_by_role("button", name="Save changes").click()
    result.filter(has_text="Nothing to save").wait_for()
    assert node(site, first)["updated_at"] == after["updated_at"]

    # After a reload the page shows what the tracker now has.
    page.reload()
    card.get_by_label("Tags").wait_for()
    assert card.get_by_label("Tags").input_value() == "quiet, undervolted"


def test_a_refused_value_is_shown_beside_its_field_and_nothing_is_saved(site, page, owner, shot):
    key, first, _ = owner
    with_key(page, key)
    page.goto("/my/rigs/")
    card = page.locator(f'[data-rig][data-node-id="{first}"]')
    card.wait_for()
    card.get_by_label("Context length (tokens)").fill("0")
    card.get_by_label("Display name").fill("never saved")
    card.get_by_role("button", name="Save changes").click()
    error = card.locator('[data-field="context_length"] [data-error]')
    error.wait_for()
    assert error.inner_text() == "Ensure this value is greater than or equal to 1."
    field = card.get_by_label("Context length (tokens)")
    assert field.get_attribute("aria-invalid") == "true"
    assert error.get_attribute("id") in field.get_attribute("aria-describedby")
    assert card.locator("[data-rig-result]").inner_text() == "Not saved: see the field marked above."
    assert page.evaluate("document.activeElement.name") == "context_length"
    assert node(site, first)["display_name"] == "Attic K80"  # the whole change was refused
    shot(page, "my-rigs-refused")

    card.get_by_label("Tags").fill("good, not a tag!")
    field.fill("8192")
    card.get_by_role("button", name="Save changes").click()
    tags_error = card.locator('[data-field="tags"] [data-error]')
    tags_error.wait_for()
    assert "may only hold lowercase letters, digits and . _ + -" in tags_error.inner_text()
    assert error.is_hidden()  # the earlier error is gone once that field is fine

    card.get_by_label("Tags").fill("good")
    card.get_by_role("button", name="Save changes").click()
    card.locator("[data-rig-result]").filter(has_text="Saved.").wait_for()
    assert tags_error.is_hidden() and card.get_by_label("Tags").get_attribute("aria-invalid") is None
    assert node(site, first)["context_length"] == 8192 and node(site, first)["display_name"] == "never saved"


def test_another_keys_rigs_are_not_editable_and_a_stale_key_is_explained(site, page, owner):
    _key, first, _ = owner
    stranger = site.contributor()
    with_key(page, stranger)
    page.goto("/my/rigs/")
    page.locator("[data-my-state]", has_text="owns no rig yet").wait_for()
    assert page.locator("[data-rig]").count() == 0
    # A PATCH with the stranger's key, as this page would send it, is refused by the tracker.
    r = page.evaluate(
        "([id, key]) => window.LuckRig.sendJSON('PATCH', '/api/nodes/' + id, {display_name: 'mine now'}, key)"
        ".then(r => [r.status, r.data.code])",
        [first, stranger],
    )
    assert r == [403, "not_owner"] and node(site, first)["display_name"] == "Attic K80"

    with_key(page, "lrk_" + "x" * 43)  # a key this tracker never issued
    page.goto("/my/rigs/")
    page.locator("[data-my-state]", has_text="does not know this contributor key").wait_for()
    assert page.locator("[data-no-key]").is_visible()


def test_without_a_key_the_page_says_how_to_get_or_paste_one(site, page, owner, shot):
    key, first, _ = owner
    page.goto("/my/rigs/")
    page.locator("[data-my-state]", has_text="No contributor key in this browser yet.").wait_for()
    panel = page.locator("[data-no-key]")
    assert panel.is_visible() and "~/.config/luckrig/identity.json" in panel.inner_text()
    assert panel.get_by_role("link", name="Create one on the Contribute page").get_attribute("href") == "/contribute/"
    shot(page, "my-rigs-no-key")
    page.get_by_label("Your contributor key (lrk_…)").fill(key)
    page.get_by_role("button", name="Use this key").click()
    page.locator(f'[data-rig][data-node-id="{first}"]').wait_for()
    assert panel.is_hidden()
    assert page.evaluate("localStorage.getItem('luckrig.contributor_key')") == key


def test_the_contribute_page_states_how_each_tier_is_earned_with_numbers(site, page, shot):
    page.goto("/contribute/")
    taster = page.locator("[data-earn-taster]").inner_text()
    # The site runs with the default threshold (1): two shares at full standing reach it.
    points = f"{scores.TIMING_POINTS_PER_SAMPLE:g}"
    assert f"earns {points} points × your key's standing" in taster
    assert re.search(r"\b2 shared timings from a key 72 hours old reach the threshold of 1\b", taster)
    operator = page.locator("[data-earn-operator]").inner_text()
    assert "It earns nothing until it has served someone else" in operator
    assert "gives 2 points of discovery, enough for the threshold of 1" in operator
    assert page.locator('[data-axis="existence"] td').first.inner_text().startswith("0.2 a day")
    install = page.locator("[data-install]").inner_text()
    assert "pip install ./luckrig/node_agent" in install and f"luckrig-node join --tracker {site.base}" in install
    page.locator("[data-earn]").scroll_into_view_if_needed()
    shot(page, "contribute-earn")
    page.locator("[data-my-rigs-link]").click()
    page.wait_for_url(site.url("/my/rigs/"))


def test_my_rigs_and_contribute_fit_a_phone(site, new_page, owner, shot):
    key, first, _ = owner
    phone = new_page(viewport={"width": 390, "height": 844})
    with_key(phone, key)
    wide = "document.documentElement.scrollWidth > document.documentElement.clientWidth"
    assert not phone.evaluate(wide), "the contribute page scrolls sideways on a phone"
    phone.goto("/my/rigs/")
    phone.locator(f'[data-rig][data-node-id="{first}"]').wait_for()
    assert not phone.evaluate(wide), "My rigs scrolls sideways on a phone"
    shot(phone, "my-rigs-phone")


def test_a_refusal_naming_an_odd_field_is_still_explained(site, page, owner):
    """The `field` of a refusal comes from the server: a name that is no CSS identifier (or holds RegExp
    characters) must not break the page; the refusal is then said in the result line."""
    key, first, _ = owner
    odd = 'x"] ,*(['

    def refuse(route):
        if route.request.method != "PATCH":
            route.continue_()
            return
        route.fulfill(status=400, json={"error": odd + ": no such field here", "code": "invalid_field", "field": odd})

    with_key(page, key)
    page.route(f"**/api/nodes/{first}", refuse)
    page.goto("/my/rigs/")
    card = page.locator(f'[data-rig][data-node-id="{first}"]')
    card.wait_for()
    card.get_by_label("Display name").fill("renamed")
    card.get_by_role("button", name="Save changes").click()
    result = card.locator("[data-rig-result]")
    result.filter(has_text="no such field here").wait_for()
    assert "Could not reach the tracker" not in result.inner_text()
    assert node(site, first)["display_name"] == "Attic K80"

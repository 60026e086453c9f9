"""The model page's "Wanted on LuckRig" section in Chromium (issue 16): the catalog models few or no rigs serve,
each with its pull command and how many rigs serve it, the same count `GET /api/models/wanted` gives. On a demo
rig's model page (seed_demo), against the live tracker (`site`)."""

import re

import pytest
import requests

from nodes.model_names import model_key

pytestmark = pytest.mark.browser
PI = "raspberry-pi-5-llama3-2-1b-q4-k-m"  # a demo rig (seed_demo)


def test_a_model_page_suggests_the_wanted_models_with_their_pull_commands(site, page, shot):
    wanted = requests.get(site.url("/api/models/wanted"), timeout=10).json()["wanted"]
    assert wanted and wanted[0]["pull"] == f"luckrig-node pull {wanted[0]['name']}"
    page.goto(f"/models/{model_key(site.node(PI)['model_name'])}/")
    section = page.locator("[data-wanted]")
    assert section.get_by_role("heading").inner_text() == "Wanted on LuckRig"
    for w in wanted:
        item = section.locator(f'[data-wanted-model="{w["name"]}"]')
        assert item.locator("[data-wanted-pull]").inner_text() == w["pull"]
        says = item.locator("[data-wanted-rigs]").inner_text()
        expected = "served by no rig yet" if w["rigs"] == 0 else rf"served by {w['rigs']} rigs?"
        assert re.fullmatch(rf"· {expected}", says), says
    shot(page, "model-page-wanted")

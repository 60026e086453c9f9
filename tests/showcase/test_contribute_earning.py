"""The contribute page explains how a taster and how an operator earn the contributor tier with the numbers the
tracker really uses: the threshold from the settings, each rate and cap from tracker.scores. The "My rigs" page
exists and is linked from the contribute page. (In a real browser: tests/browser/test_my_rigs.py.)"""

import re

import pytest
from django.test import Client

from tracker import scores

pytestmark = pytest.mark.django_db


def contribute(**headers) -> str:
    response = Client().get("/contribute/", HTTP_ACCEPT="text/html", **headers)
    assert response.status_code == 200
    return response.content.decode()


def text_of(html: str, marker: str) -> str:
    """The text of the element carrying `marker`, tags removed and spaces collapsed."""
    start = html.index(marker)
    block = html[start : html.index("</div>", start)]
    return " ".join(re.sub(r"<[^>]+>", " ", block.split(">", 1)[1]).split())


def test_the_taster_route_is_stated_with_the_settings_threshold_and_the_scoring_rates(settings):
    settings.CONTRIBUTOR_THRESHOLD = 1.0
    taster = text_of(contribute(), "data-earn-taster")
    assert f"earns {scores.TIMING_POINTS_PER_SAMPLE:g} points × your key's standing, up to 10 points" in taster
    assert "grows from 0.1 when it is new to 1 after 72 hours" in taster
    assert "2 shared timings from a key 72 hours old reach the threshold of 1 (20 from a brand-new key)" in taster

    settings.CONTRIBUTOR_THRESHOLD = 3.0  # the page follows the setting, not a number written into it
    assert "6 shared timings from a key 72 hours old reach the threshold of 3 (60 from a brand-new key)" in text_of(
        contribute(), "data-earn-taster"
    )


def test_the_operator_route_states_the_first_rule_and_what_each_axis_gives(settings):
    settings.CONTRIBUTOR_THRESHOLD = 1.0
    html = contribute()
    operator = text_of(html, "data-earn-operator")
    assert "It earns nothing until it has served someone else: 1 weighted taster" in operator
    assert "or 2 anonymous tasters from other networks, or 10 brand-new keys" in operator
    assert (
        "the first taster of full standing alone gives 2 points of discovery, enough for the threshold of 1" in operator
    )
    rows = dict(re.findall(r'<tr data-axis="(\w+)"><th scope="row">[^<]+</th><td>(.*?)</td>', html))
    assert rows["existence"].startswith("0.2 a day") and rows["usage"].startswith("0.5 a request")
    assert "at most 3 per taster and day" in rows["usage"] and rows["discovery"].startswith(
        "2 for each distinct taster"
    )
    assert rows["rarity"].startswith("5 × the rig") and "1 + its length ÷ 120 characters" in rows["note"]

    settings.CONTRIBUTOR_THRESHOLD = 5.0  # one taster is no longer enough, and the page stops saying it is
    operator = text_of(contribute(), "data-earn-operator")
    assert "gives 2 points of discovery, toward the threshold of 5" in operator and "enough" not in operator


def test_the_contribute_page_shows_the_install_line_and_links_my_rigs(settings):
    settings.SITE_URL = "https://luckrig.example"
    html = contribute()
    assert "pip install ./luckrig/node_agent" in html
    assert "luckrig-node join --tracker https://luckrig.example" in html
    assert 'href="/my/rigs/"' in html


def test_my_rigs_renders_its_form_and_no_rig_data():
    response = Client().get("/my/rigs/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    html = response.content.decode()
    assert "data-rig-template" in html and 'name="context_length"' in html and "identity.json" in html
    assert "/static/showcase/my_rigs.js" in html and "lrk_" not in html.replace("(lrk_…)", "")

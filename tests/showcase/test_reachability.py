"""Direct and relayed rigs on the website (Django's test client): the cards, rig pages and comparisons say which
a rig is and why it matters, a relayed rig's endpoint is its relay's URL, and the plain-http notice concerns only
what the browser would really call. (Tasting a relayed rig in a real browser: tests/browser/test_relayed.py.)"""

import json
import re

import pytest
from django.test import Client
from django.utils import timezone

from nodes.models import Node, Relay, TimingSample
from nodes.services import refresh_timing
from tests import factories

pytestmark = pytest.mark.django_db
HTML = {"HTTP_ACCEPT": "text/html"}
RELAYED_HELP = "the rig&#x27;s agent dials out to a relay, so the rig needs no open port"
DIRECT_HELP = "Direct: tasters call the rig&#x27;s own URL."
DIRECT_NOTICE = "This rig&#x27;s endpoint is plain http, which browsers refuse to call from this https page."
RELAY_NOTICE = "This rig is tasted through its relay, and the relay&#x27;s address is plain http"


def page(path, status=200, **extra) -> str:
    response = Client().get(path, **HTML, **extra)
    assert response.status_code == status, (path, response.status_code)
    return response.content.decode()


def add_relay(relay_id: str = "eu-1", url: str = "https://relay-eu-1.example.org") -> Relay:
    """A live relay (as if it had just sent a heartbeat): relayed nodes registered now are assigned to it."""
    return Relay.objects.create(id=relay_id, public_url=url, secret_hash=relay_id * 8, last_heartbeat_at=timezone.now())


def relayed_node(person, **fields) -> Node:
    node, _secret = factories.make_node(person, endpoint_url=None, **fields)
    assert node.is_relayed
    return node


def serving(*nodes: Node) -> None:
    """As if the rigs' agents were serving: the rig page offers its tasting panel only then."""
    Node.objects.filter(pk__in=[n.pk for n in nodes]).update(status="available")


def card_of(html: str, node_id: str) -> str:
    card = html[html.index(f'data-node="{node_id}"') :]
    return card[: card.index("</article>")]


def reach_of(html: str) -> tuple[str, str]:
    """(title, text) of the first reachability badge in `html`."""
    found = re.search(r'<span class="reach reach-\w+" data-reachability title="([^"]*)">([^<]*)</span>', html)
    assert found, "no reachability badge"
    return found.group(1), found.group(2)


def taste_config(html: str) -> dict:
    found = re.search(r'<script id="lr-taste" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def test_cards_say_whether_a_rig_is_relayed_or_direct_and_why_it_matters(api, owner):
    add_relay()
    direct, secret = factories.make_node(owner, display_name="Open port rig")
    factories.heartbeat(api, direct, secret)  # only rigs that reported in are listed
    relayed, secret = factories.make_node(owner, endpoint_url=None, display_name="Behind NAT rig")
    assert relayed.is_relayed
    factories.heartbeat(api, relayed, secret)
    html = page("/")
    title, text = reach_of(card_of(html, relayed.id))
    assert text == "relayed"
    assert RELAYED_HELP in title and "the relay can read plain-mode prompts" in title
    title, text = reach_of(card_of(html, direct.id))
    assert (title, text) == (DIRECT_HELP, "direct")


def test_a_relayed_rigs_page_shows_its_relay_url_as_the_endpoint(owner):
    add_relay(url="https://relay-eu-1.example.org/")
    node = relayed_node(owner)
    serving(node)
    relay_url = f"https://relay-eu-1.example.org/n/{node.id}/v1"
    html = page(f"/nodes/{node.id}/")
    assert f"<code data-endpoint>{relay_url}</code>" in html
    assert reach_of(html)[1] == "relayed"
    help_text = re.search(r"<p class=\"muted reach-note\" data-reach-help>([^<]*)</p>", html).group(1)
    assert RELAYED_HELP in help_text
    assert "like the rig&#x27;s operator, the relay can read plain-mode prompts" in help_text
    # The tasting panel calls the relay (the same value as the API's PublicNode), never a URL of the rig's own.
    config = taste_config(html)
    assert config["endpoint_url"] == relay_url == Client().get(f"/api/nodes/{node.id}").json()["node"]["endpoint_url"]
    assert config["reachability"] == "relayed"
    # The acknowledgement before tasting names the relay too.
    assert "the rig's operator, and the relay that carries it, can read this prompt" in html


def test_a_direct_rigs_page_shows_its_own_url(owner):
    node, _ = factories.make_node(owner, endpoint_url="https://my-rig.example.net/v1")
    serving(node)
    html = page(f"/nodes/{node.id}/")
    assert "<code data-endpoint>https://my-rig.example.net/v1</code>" in html
    assert reach_of(html) == (DIRECT_HELP, "direct") and "/n/" not in taste_config(html)["endpoint_url"]
    assert taste_config(html)["reachability"] == "direct"
    assert "the relay that carries it" not in html


def test_a_relayed_rig_with_no_relay_says_it_has_no_endpoint_right_now(owner):
    node = relayed_node(owner)  # no relay is registered at all
    assert node.relay_id is None
    serving(node)
    html = page(f"/nodes/{node.id}/")
    assert "none right now: no relay is carrying this rig" in html and reach_of(html)[1] == "relayed"
    # Nothing to call: the panel says so instead of offering a form.
    assert 'data-taste-closed="no-endpoint"' in html and 'id="lr-taste"' not in html


def test_compare_has_a_reachability_row(owner):
    add_relay()
    direct, _ = factories.make_node(owner, display_name="Rig A")
    relayed = relayed_node(owner, display_name="Rig B")
    html = page(f"/compare/?ids={direct.id},{relayed.id}")
    row = re.search(r'<tr class="(differs)?"><th scope="row">Reachability.*?</tr>', html, re.S)
    assert row and row.group(1) == "differs"
    assert re.findall(r"<td>(\w+)</td>", row.group(0)) == ["direct", "relayed"]


def test_the_plain_http_notice_shows_only_for_a_direct_http_rig_on_an_https_page(owner):
    http_rig, _ = factories.make_node(owner, endpoint_url="http://203.0.113.7:8788/v1")
    https_rig, _ = factories.make_node(owner, endpoint_url="https://my-rig.example.net/v1")
    add_relay()
    relayed = relayed_node(owner)
    # A relayed node has no URL of its own in use; even a stale one in the row must not decide what is said.
    Node.objects.filter(pk=relayed.pk).update(endpoint_url="http://192.168.1.20:8788/v1")
    serving(http_rig, https_rig, relayed)

    html = page(f"/nodes/{http_rig.id}/", secure=True)
    assert "data-mixed-content" in html and DIRECT_NOTICE in html and "luckrig-node taste" in html
    for node in (https_rig, relayed):
        html = page(f"/nodes/{node.id}/", secure=True)
        assert "data-mixed-content" not in html, node.id
    assert taste_config(html)["endpoint_url"].startswith("https://relay-eu-1.example.org/n/")
    # From a plain-http page (a local tracker) the browser calls an http rig without complaint.
    assert "data-mixed-content" not in page(f"/nodes/{http_rig.id}/")


def test_a_relayed_rig_behind_an_http_relay_is_explained_as_the_relays_address(owner):
    add_relay(url="http://relay.example.org")
    node = relayed_node(owner)
    serving(node)
    html = page(f"/nodes/{node.id}/", secure=True)
    assert RELAY_NOTICE in html and DIRECT_NOTICE not in html
    # The panel's own check says the same, per reachability (strings handed over as JSON).
    strings = json.loads(re.search(r'<script id="lr-strings" type="application/json">(.*?)</script>', html, re.S)[1])
    assert strings["mixed_content"]["relayed"].startswith("This rig is tasted through its relay")
    assert strings["mixed_content"]["direct"].startswith("This rig's endpoint is plain http")


def test_relayed_and_direct_are_said_in_japanese(owner):
    add_relay()
    node = relayed_node(owner)
    html = page(f"/nodes/{node.id}/", HTTP_ACCEPT_LANGUAGE="ja")
    title, text = reach_of(html)
    assert text != "relayed" and "relay" not in title
    assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text + title)


def test_a_rig_page_says_how_many_timing_samples_its_relay_measured(owner):
    add_relay()
    node = relayed_node(owner)
    for i, source in enumerate(["taster", "taster", "relay"]):
        TimingSample.objects.create(
            node=node, jti=f"j{i}", source=source, created_at=timezone.now(), tok_per_sec=40.0 + i, ttft_ms=300.0
        )
    refresh_timing(node, uploaded_at=timezone.now())
    html = page(f"/nodes/{node.id}/")
    assert "n=<span data-community-n>3</span>" in html
    assert "1 of these was measured by the relay that carried the tasting" in html
    assert "or by the relay that carried a tasting; never reported by the rig itself" in html
    direct, _ = factories.make_node(owner)
    assert "data-relay-samples" not in page(f"/nodes/{direct.id}/")

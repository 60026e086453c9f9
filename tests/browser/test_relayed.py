"""Tasting a relayed rig from the site in Chromium: the rig's agent listens on 127.0.0.1 only and its node has no
public URL; its agent dials out to a live `luckrig-relay`, and the page's tasting panel reaches the rig through
that relay (checked on the wire: the browser never calls the agent's own port). From an https page, a plain-http
URL is refused before a token is spent, in words that say whose URL it is (the rig's, or its relay's)."""

import re

import pytest
import requests

from tests.agents import AgentStarter, RelayStarter
from tests.browser.conftest import RIG_DELAY, RIG_WORDS, allow_console_errors
from tests.browser.test_site import texts_until, wait_for
from tests.node_agent.fakes import FakeOpenAI

pytestmark = [pytest.mark.browser, pytest.mark.relay]
ANSWER = "".join(RIG_WORDS)
NAME = "Relayed browser rig · smollm2-fake"


@pytest.fixture
def relayed(site, tmp_path):
    """(relay, agent): a relay registered with `site` and an agent (default --host 127.0.0.1) whose node was
    registered without an endpoint_url, tastable through the relay. Afterwards the agent and the relay are
    stopped and the node deleted, so that the session's other pages do not list a rig that is gone."""
    relays, agents = RelayStarter(site, tmp_path), AgentStarter(site, tmp_path)
    key = site.contributor()
    agent = None
    with FakeOpenAI() as fake:
        fake.words, fake.delay = list(RIG_WORDS), RIG_DELAY
        try:
            relay = relays.start()
            register = {"display_name": NAME, "gpu": "Fake GPU (behind NAT)"}
            agent = agents.start(fake.base, key=key, relayed=True, register=register)
            yield relay, agent
        finally:
            agents.stop_all()
            relays.stop_all()
            if agent is not None:
                gone = requests.delete(
                    f"{site.base}/api/nodes/{agent.node_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
                )
                assert gone.status_code == 204, gone.text


def test_a_relayed_rig_is_tasted_from_the_site_through_its_relay(site, relayed, page, shot):
    relay, agent = relayed
    relay_v1 = f"{relay.base}/n/{agent.node_id}/v1"
    # The node has no URL of its own: the tracker derives its public one from the relay.
    assert site.execute("SELECT endpoint_url, reachability FROM nodes_node WHERE id = %s", (agent.node_id,)) == [
        ("", "relayed")
    ]
    assert site.node(agent.node_id)["endpoint_url"] == relay_v1
    calls = []
    page.on("request", lambda r: calls.append(r.url) if r.method in ("POST", "OPTIONS") else None)

    page.goto("/")
    card = page.locator(f'#map article[data-node="{agent.node_id}"]')  # the map's card (the live shelf has one too)
    assert card.locator("[data-reachability]").inner_text() == "relayed"
    assert "dials out to a relay" in card.locator("[data-reachability]").get_attribute("title")

    page.goto(f"/nodes/{agent.node_id}/")
    assert page.locator("[data-endpoint]").inner_text() == relay_v1
    assert page.locator("[data-reachability]").inner_text() == "relayed"
    assert "the relay can read plain-mode prompts" in page.locator("[data-reach-help]").inner_text()
    assert page.locator("[data-mixed-content]").count() == 0

    page.fill("#taste-prompt", "Say some words through the relay")
    page.check("[data-ack]")
    page.click("[data-taste-go]")
    partial = texts_until(page.locator("[data-taste-output]"), ANSWER, timeout=20)
    assert len(partial) >= 2, f"the answer did not arrive progressively through the relay: {partial}"
    page.locator("[data-taste-status]", has_text="Done.").wait_for()
    timing = page.locator("[data-taste-timing]").inner_text()
    assert "measured by this browser" in timing
    ttft = float(re.search(r"time to first token\s+([\d.]+) ms", timing).group(1))
    tps = float(re.search(r"tokens per second\s+([\d.]+)", timing).group(1))
    assert ttft > 0 and tps > 0
    shot(page, "rig-relayed-tasted")

    # On the wire: the browser called the relay (the CORS preflight, then the request), never the agent itself.
    assert relay_v1 + "/chat/completions" in calls
    assert not [url for url in calls if url.startswith(agent.base)], calls

    # The relay witnessed the tasting too: its own measurement joins the community timing, said on the page.
    wait_for(lambda: site.node(agent.node_id)["community_timing"]["by_source"]["relay"] >= 1, timeout=15)
    page.reload()
    assert "measured by the relay that carried the tasting" in page.locator("[data-relay-samples]").inner_text()

    # The agent dies: its relay tells the tracker at once, and the open page's pill turns "unavailable" live
    # (the queue stream carries the status), without a reload.
    pill = page.locator("h1 [data-status]")
    page.locator("[data-live-state]", has_text="live").first.wait_for()
    assert pill.inner_text() == "available"
    agent.proc.kill()
    page.locator("h1 [data-status].status-unavailable").wait_for(timeout=15_000)
    assert pill.inner_text() == "unavailable"


HTTPS_SITE = "https://luckrig.test"


def serve_as_https(page, site) -> list[str]:
    """Show `site` to `page` as if it were served at HTTPS_SITE behind a TLS proxy (a route forwards each request
    with X-Forwarded-Proto: https, which the tracker trusts when DEBUG is off). Returns the POSTs the page made."""
    posts = []

    def forward(route):
        request = route.request
        if request.method == "POST":
            posts.append(request.url)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        response = route.fetch(
            url=site.base + request.url.removeprefix(HTTPS_SITE), headers=headers | {"x-forwarded-proto": "https"}
        )
        route.fulfill(response=response)

    page.route(HTTPS_SITE + "/**", forward)
    # Routes carry HTTP only: the live queue's websocket to the pretend host cannot connect, and says so.
    allow_console_errors(page, r"WebSocket connection to 'wss://luckrig\.test/")
    return posts


def test_from_an_https_page_plain_http_urls_are_refused_in_words_that_fit_the_rig(site, rig, relayed, page):
    _relay, agent = relayed
    posts = serve_as_https(page, site)
    # The relayed rig's relay is plain http here: the sentence is about the relay's address, not the rig.
    page.goto(f"{HTTPS_SITE}/nodes/{agent.node_id}/")
    assert page.evaluate("location.protocol") == "https:"
    notice = page.locator("[data-mixed-content]").inner_text()
    assert notice.startswith("This rig is tasted through its relay, and the relay's address is plain http")
    page.fill("#taste-prompt", "hello")
    page.check("[data-ack]")
    page.click("[data-taste-go]")
    page.locator("[data-taste-status]", has_text="the relay's address is plain http").wait_for()
    # A direct rig at a plain-http URL: the rig's own endpoint is named.
    page.goto(f"{HTTPS_SITE}/nodes/{rig.node_id}/")
    assert page.locator("[data-mixed-content]").inner_text().startswith("This rig's endpoint is plain http")
    page.fill("#taste-prompt", "hello")
    page.check("[data-ack]")
    page.click("[data-taste-go]")
    page.locator("[data-taste-status]", has_text="This rig's endpoint is plain http").wait_for()
    assert not [url for url in posts if "/api/tokens" in url], "a token was spent on a rig the page cannot call"

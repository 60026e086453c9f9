"""The rig page, tasting first (issue 12): the panel in the first screen, a conversation of several turns with
temperature and max tokens, the answer as safe Markdown, the acknowledgement remembered, no form where nothing
can be tasted, and all of it from the keyboard. Against the live tracker (`site`) and agent (`rig`)."""

import json
import re
from pathlib import Path

import pytest

from tests.browser.conftest import RIG_WORDS
from tests.browser.listing import listed_node

pytestmark = pytest.mark.browser
ANSWER = "".join(RIG_WORDS)
PI = "raspberry-pi-5-llama3-2-1b-q4-k-m"  # a demo rig (seed_demo)
IN_VIEW = "e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight; }"


def taste(page, prompt: str, timeout: float = 15_000) -> None:
    """Send `prompt` as the next turn and wait until the rig has answered it."""
    turns = page.locator(".turn").count()
    page.fill("#taste-prompt", prompt)
    page.click("[data-taste-go]")
    page.locator(".turn").nth(turns).locator("[data-taste-timing]").wait_for(timeout=timeout)  # drawn at the end
    page.locator("[data-taste-status]", has_text="Done.").wait_for()


def chat_requests(sent: list) -> list:
    return [r for r in sent if r.url.endswith("/chat/completions")]


@pytest.mark.parametrize("language", ["en", "ja"])
@pytest.mark.parametrize(
    "size",
    [
        {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
        {"viewport": {"width": 1366, "height": 900}},
    ],
    ids=["phone", "desktop"],
)
def test_the_tasting_panel_is_in_the_first_screen(site, rig, new_page, shot, size, language):
    page = new_page(**size, locale=language, extra_http_headers={"Accept-Language": language})
    page.goto(f"/nodes/{rig.node_id}/")
    assert page.locator("html").get_attribute("lang") == language
    for what in ("#taste-title", "#taste-prompt", "[data-ack]", "[data-taste-go]"):
        assert page.locator(what).evaluate(IN_VIEW), f"{what} is not in the first screen"
    # The spec comes after the panel.
    taste_top = page.locator("#taste").evaluate("e => e.getBoundingClientRect().top")
    assert page.locator("#spec-title").evaluate("e => e.getBoundingClientRect().top") > taste_top
    shot(page, f"rig-first-screen-{size['viewport']['width']}" + ("" if language == "en" else f"-{language}"))


def test_a_conversation_sends_every_turn_and_spends_one_token_until_it_is_used_up(site, rig, page, shot):
    sent = []
    page.on("request", lambda r: sent.append(r))
    page.goto(f"/nodes/{rig.node_id}/")
    page.check("[data-ack]")
    before = len(rig.upstream.requests)
    taste(page, "What is a rig?")
    first = page.locator(".turn").nth(0)
    assert first.locator("[data-turn-prompt]").inner_text() == "What is a rig?"
    assert first.locator("[data-taste-output]").inner_text().strip() == ANSWER.strip()
    assert page.locator("#taste-prompt").input_value() == ""  # ready for the next message
    assert page.locator("[data-prompt-label]").inner_text() == "Your next message"
    taste(page, "And a second one?")
    shot(page, "rig-conversation")

    # The rig was sent the whole conversation: the first question, its answer, then the second question.
    assert rig.upstream.requests[-1]["messages"] == [
        {"role": "user", "content": "What is a rig?"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "And a second one?"},
    ]
    assert len(rig.upstream.requests) == before + 2
    # The second turn's replay is its own prompt and answer, with the first turn as `messages`.
    second = page.locator(".turn").nth(1)
    with page.expect_download() as download:
        second.locator("[data-download]").click()
    replay = json.loads(Path(download.value.path()).read_text())
    assert replay["prompt"] == "And a second one?" and replay["response"] == ANSWER
    assert replay["messages"] == [
        {"role": "user", "content": "What is a rig?"},
        {"role": "assistant", "content": ANSWER},
    ]

    # An anonymous token holds 3 requests: turns 1-3 spend one token, turn 4 gets a new one.
    taste(page, "Third")
    taste(page, "Fourth")
    tokens = [r for r in sent if r.url.endswith("/api/tokens")]
    bearers = [r.headers["authorization"] for r in chat_requests(sent)]
    assert len(tokens) == 2 and len(bearers) == 4
    assert bearers[0] == bearers[1] == bearers[2] != bearers[3]
    assert len(rig.upstream.requests[-1]["messages"]) == 7  # three answered turns and the fourth question

    # A new conversation starts from nothing.
    page.click("[data-new-conversation]")
    assert page.locator(".turn").count() == 0 and page.locator("[data-prompt-label]").inner_text() == "Your prompt"
    taste(page, "Fresh start")
    assert rig.upstream.requests[-1]["messages"] == [{"role": "user", "content": "Fresh start"}]
    # ... on the token that still has requests left.
    assert len([r for r in sent if r.url.endswith("/api/tokens")]) == 2
    assert chat_requests(sent)[-1].headers["authorization"] == bearers[3]


def test_a_later_turn_publishes_with_the_conversation_before_it_and_each_turn_keeps_its_own_buttons(site, rig, page):
    page.goto(f"/nodes/{rig.node_id}/")
    page.check("[data-ack]")
    taste(page, "Question one")
    taste(page, "Question two")
    first, second = page.locator(".turn").nth(0), page.locator(".turn").nth(1)
    # Both turns spent one token, and the tracker takes one replay per token: the second turn publishes, and
    # the first one's Publish then says why it cannot.
    second.locator("[data-publish]").click()
    link = second.locator("[data-after-status] a")
    link.wait_for()
    first.locator("[data-publish]").click()
    first.locator("[data-after-status]", has_text="already published").wait_for()
    assert first.locator("[data-after-status] a").count() == 0
    link.click()
    page.wait_for_url(re.compile(r"/replays/rp_"))
    assert page.locator("[data-replay-prompt]").inner_text() == "Question two"
    earlier = page.locator("[data-replay-earlier] li")
    assert earlier.count() == 2
    assert earlier.nth(0).inner_text() == "Taster Question one"
    assert earlier.nth(1).inner_text().startswith("Rig " + RIG_WORDS[0].strip())


def test_temperature_and_max_tokens_are_sent_and_bounded(site, rig, page):
    sent = []
    page.on("request", lambda r: sent.append(r))
    page.goto(f"/nodes/{rig.node_id}/")
    page.check("[data-ack]")
    page.click("[data-taste-options] summary")
    error = page.locator("[data-param-error]")

    page.fill("#taste-temperature", "3")
    assert error.inner_text() == "Temperature must be a number from 0 to 2."
    page.fill("#taste-max-tokens", "100000")  # an anonymous token answers up to 256 tokens a request
    assert error.inner_text() == "Temperature must be a number from 0 to 2."
    page.fill("#taste-temperature", "0.4")
    assert "from 1 to 256" in error.inner_text()
    # While a value is out of range, any call to the rig is caught (and refused) here.
    caught, allowed = [], []

    def guard(route):
        if allowed:
            route.continue_()
        else:
            caught.append(route.request.url)
            route.abort()

    page.route("**/chat/completions", guard)
    page.fill("#taste-prompt", "too long")
    page.click("[data-taste-go]")
    assert page.locator(".turn").count() == 0 and error.is_visible()

    page.fill("#taste-max-tokens", "5")
    assert not error.is_visible()
    allowed.append(True)
    taste(page, "Five words, please")
    # Nothing was sent for the refused submit: no call while they were caught, and one call in all.
    assert caught == [] and len(chat_requests(sent)) == 1 and page.locator(".turn").count() == 1
    body = rig.upstream.requests[-1]
    assert body["temperature"] == 0.4 and body["max_tokens"] == 5
    # The fake model stops at max_tokens: five words.
    assert page.locator(".turn [data-taste-output]").inner_text().strip() == "".join(RIG_WORDS[:5]).strip()
    # With a token issued the bound is the token's own per-request cap, limits.max_output_tokens (256), never its
    # whole budget (limits.max_output_tokens_total).
    page.fill("#taste-max-tokens", "100000")
    assert "from 1 to 256" in error.inner_text()
    assert page.locator("[data-max-tokens-help]").inner_text().startswith("1 to 256 ")


HOSTILE = [
    "# Title\n\n",
    "Some **bold** and `code`.\n\n",
    "- one\n- two\n\n",
    "<script>window.__pwned = 1</script>\n\n",
    '<img src=x onerror="window.__pwned = 2">\n\n',
    "[click](javascript:window.__pwned=3) and [a page](https://example.com/docs)\n\n",
    '<iframe src="/"></iframe>\n\n',
    "![pixel](http://127.0.0.1:9/pixel.png)\n\n",
    "| n | name |\n|--:|:-:|\n| 1 | two |\n\n",
    # Links that must not become links: an entity-spelled javascript:, an autolink, a data: URL; and an image
    # that must not be fetched (it becomes a plain link with its alt text).
    "[ent](jav&#x61;script:window.__pwned=4)\n\n",
    "<javascript:window.__pwned=5>\n\n",
    "[data](data:text/html,<script>window.__pwned=6</script>)\n\n",
    "![x](http://example.invalid/x.png)\n",
]


def test_the_answer_is_rendered_as_markdown_and_hostile_html_stays_inert(site, rig, page, shot):
    sent = []
    page.on("request", lambda r: sent.append(r.url))
    page.goto(f"/nodes/{rig.node_id}/")
    page.check("[data-ack]")
    words, rig.upstream.words = rig.upstream.words, list(HOSTILE)
    try:
        taste(page, "Answer in Markdown")
    finally:
        rig.upstream.words = words
    out = page.locator(".turn [data-taste-output]")
    assert out.locator("h1").inner_text() == "Title"
    assert out.locator("strong").inner_text() == "bold" and out.locator("code").inner_text() == "code"
    assert out.locator("li").all_inner_texts() == ["one", "two"]
    # Raw HTML is shown as text, never made into elements; the javascript: link is not a link.
    assert out.locator("script, img, iframe, [onerror], [style]").count() == 0
    text = out.inner_text()
    assert "<script>window.__pwned = 1</script>" in text and '<img src=x onerror="window.__pwned = 2">' in text
    assert "<iframe" in text and "[click](javascript:window.__pwned=3)" in text
    links = out.locator("a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    # Images are links, not loaded; nothing else became a link.
    assert hrefs == ["https://example.com/docs", "http://127.0.0.1:9/pixel.png", "http://example.invalid/x.png"]
    assert "ent" not in links.all_inner_texts() and "data" not in links.all_inner_texts()
    assert "javascript:window.__pwned=5" in text and "data:text/html" in text
    assert not [u for u in sent if "example.invalid" in u]
    assert links.first.get_attribute("rel") == "nofollow noopener noreferrer"
    assert links.first.get_attribute("target") == "_blank"  # following a link keeps the conversation
    assert not [u for u in sent if "pixel.png" in u]
    # A table's alignment is a class (markdown-it writes a style attribute, which the CSP refuses).
    assert out.locator("td.md-align-right").inner_text() == "1"
    assert page.evaluate("window.__pwned") is None
    shot(page, "rig-markdown")


def test_a_request_the_rig_gives_back_does_not_use_up_the_token(site, rig, page):
    """A rig that answers queue_full (or token_busy) did not spend one of the token's requests: after one such
    refusal, an anonymous token's three requests still serve three answered turns."""
    sent, refused = [], []
    page.on("request", lambda r: sent.append(r))

    def queue_full_once(route):
        if refused:
            route.continue_()
            return
        refused.append(route.request.url)
        route.fulfill(
            status=503,
            headers={"Access-Control-Allow-Origin": "*", "Retry-After": "5"},
            json={"error": {"code": "queue_full", "message": "queue is full", "type": "rate_limit"}},
        )

    page.route("**/chat/completions", queue_full_once)
    page.goto(f"/nodes/{rig.node_id}/")
    page.check("[data-ack]")
    page.fill("#taste-prompt", "First try")
    page.click("[data-taste-go]")
    page.locator(".turn [data-turn-note]", has_text="queue is full").wait_for(timeout=15_000)
    for prompt in ("One", "Two", "Three"):
        taste(page, prompt)
    tokens = [r for r in sent if r.url.endswith("/api/tokens")]
    bearers = {r.headers["authorization"] for r in chat_requests(sent)}
    assert len(refused) == 1 and len(tokens) == 1 and len(bearers) == 1


def test_the_acknowledgement_is_remembered_in_this_browser(site, rig, page):
    page.goto(f"/nodes/{rig.node_id}/")
    ack = page.locator("[data-ack]")
    assert not ack.is_checked()
    ack.check()
    page.reload()
    assert page.locator("[data-ack]").is_checked()
    page.locator("[data-ack]").uncheck()  # and forgotten when unticked
    page.reload()
    assert not page.locator("[data-ack]").is_checked()


def test_a_demo_rig_says_it_is_an_example_and_offers_no_form(site, page):
    sent = []
    page.on("request", lambda r: sent.append(r.url))
    page.goto(f"/nodes/{PI}/")
    closed = page.locator("#taste [data-taste-closed=demo]")
    assert "example from the demo data" in closed.inner_text()
    assert page.locator("#taste form, #taste-prompt, #lr-taste").count() == 0
    closed.locator("a").click()  # and points to the live rigs
    page.wait_for_url(site.url("/"))
    assert not [u for u in sent if "/api/tokens" in u]


def test_an_offline_rig_says_when_it_was_last_seen_and_offers_no_form(site, page, shot):
    node_id = listed_node(site, "http://127.0.0.1:9/v1", display_name="Offline browser rig")
    site.execute(
        "UPDATE nodes_node SET status = 'unavailable', last_seen_at = %s WHERE id = %s",
        ("2026-11-30 21:05:00", node_id),
    )
    page.goto(f"/nodes/{node_id}/")
    closed = page.locator("#taste [data-taste-closed=offline]")
    assert "offline: it was last seen 2026-11-30 21:05 UTC" in closed.inner_text()
    assert page.locator("#taste form, #taste-prompt").count() == 0
    shot(page, "rig-offline")


def test_a_relayed_rig_with_no_relay_says_so_and_offers_no_form(site, page):
    node_id = listed_node(site, None, display_name="Relayed browser rig")
    site.execute("UPDATE nodes_node SET status = 'available', relay_id = NULL WHERE id = %s", (node_id,))
    page.goto(f"/nodes/{node_id}/")
    assert page.locator("h1 [data-status]").inner_text() == "available"
    closed = page.locator("#taste [data-taste-closed=no-endpoint]")
    assert "no relay carrying it" in closed.inner_text()
    assert page.locator("#taste form, #taste-prompt").count() == 0


def test_a_conversation_from_the_keyboard_alone(site, rig, page):
    page.goto(f"/nodes/{rig.node_id}/")
    for _ in range(60):  # from the top of the page, Tab until the prompt has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "taste-prompt":
            break
    assert page.evaluate("document.activeElement.id") == "taste-prompt"
    page.keyboard.type("keyboard prompt")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # the acknowledgement
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Taste
    page.locator(".turn [data-taste-output]", has_text=ANSWER.strip()).wait_for(timeout=15_000)
    page.locator("[data-taste-status]", has_text="Done.").wait_for()
    # The options open from the keyboard too.
    page.focus("#taste-prompt")
    page.keyboard.type("second, cooler")
    for _ in range(4):  # ack, Taste, New conversation, the options' summary
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # the system message: fixed for this conversation
    assert page.evaluate("document.activeElement.id") == "taste-system"
    assert page.evaluate("document.activeElement.readOnly") is True
    page.keyboard.press("Tab")
    page.keyboard.type("0.2")  # temperature
    page.keyboard.press("Enter")  # submits the form
    page.locator(".turn").nth(1).locator("[data-taste-output]", has_text=ANSWER.strip()).wait_for(timeout=15_000)
    assert rig.upstream.requests[-1]["temperature"] == 0.2
    # Starting over from the keyboard.
    page.locator("[data-new-conversation]").focus()
    page.keyboard.press("Enter")
    assert page.locator(".turn").count() == 0
    assert page.evaluate("document.activeElement.id") == "taste-prompt"
    assert re.search(r"\S", page.locator("[data-taste-status]").inner_text()) is None


def test_a_public_key_conversation_keeps_going(site, rig, page):
    page.goto(f"/nodes/{rig.node_id}/")
    page.check("[data-ack]")
    page.click("[data-taste-options] summary")
    page.check("input[name=mode][value=public-key]")
    taste(page, "Sealed one")
    taste(page, "Sealed two")
    assert page.locator(".turn").nth(1).locator("[data-taste-output]").inner_text().strip() == ANSWER.strip()
    # The rig opened the whole conversation: both questions and the first answer.
    assert rig.upstream.requests[-1]["messages"] == [
        {"role": "user", "content": "Sealed one"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Sealed two"},
    ]

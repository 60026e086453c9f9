"""Rig against rig in a real browser: two live rigs (the session's `rig` and this module's `second_rig`, a second
agent in front of a slower fake upstream) answer one prompt side by side, each with its own token, TTFT and
tok/s measured in the page; a demo rig is shown but not sent the prompt; the pair is kept as one replay whose
page plays both; compare's empty state picks rigs; /replays/ lists what was published."""

import re
from datetime import UTC, datetime

import pytest
import requests

from tests.agents import AgentStarter
from tests.browser.conftest import RIG_WORDS
from tests.browser.test_site import APPLE, wait_for
from tests.node_agent.fakes import FakeOpenAI

pytestmark = pytest.mark.browser
SECOND_WORDS = [f"other{i} " for i in range(16)]
SECOND_DELAY = 0.1  # slower than `rig`: 16 chunks ~100 ms apart
PROMPT = "Which of you is faster?"


@pytest.fixture(scope="session")
def second_rig(site, tmp_path_factory):
    """A second live agent on `site` (the only one the browser tests add): its node id and display name."""
    with FakeOpenAI() as fake:
        fake.words, fake.delay = list(SECOND_WORDS), SECOND_DELAY
        starter = AgentStarter(site, tmp_path_factory.mktemp("second-rig"))
        register = {"display_name": "Second browser rig", "gpu": "Fake GPU (second)"}
        try:
            agent = starter.start(fake.base, key=site.contributor("second-rig-owner"), register=register)
            agent.fake = fake  # a test may change what it answers, and puts it back
            yield agent
        finally:
            starter.stop_all()


def column(page, node_id):
    return page.locator(f'[data-arena-rig="{node_id}"]')


def test_two_live_rigs_stream_side_by_side_and_are_kept_as_one_replay(site, rig, second_rig, page, shot):
    page.goto(f"/compare/?ids={rig.node_id},{second_rig.node_id},{APPLE}")
    first, second, demo = column(page, rig.node_id), column(page, second_rig.node_id), column(page, APPLE)
    assert first.locator("h3").inner_text() == rig.display_name
    assert second.locator("h3").inner_text() == "Second browser rig"
    # The demo rig is shown, with why it gets no prompt, and no place for an answer.
    assert "not a running rig" in demo.locator(".arena-end").inner_text()
    assert demo.locator("[data-rig-output]").count() == 0
    assert page.locator("[data-arena-go]").inner_text() == "Send to 2 rigs"
    assert first.bounding_box()["y"] == second.bounding_box()["y"]  # side by side on a desktop screen

    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization") or "")))
    page.fill("#arena-prompt", PROMPT)
    page.check("input[name=ack]")
    page.click("[data-arena-go]")
    # Both stream at the same moment: each column has part of its answer while neither has finished.
    both_running = """([a, b]) => [a, b].every((id) => {
        const col = document.querySelector(`[data-arena-rig="${id}"]`);
        return col.dataset.end === "running" && col.querySelector("[data-rig-output]").textContent.length > 0;
    })"""
    page.wait_for_function(both_running, arg=[rig.node_id, second_rig.node_id], timeout=15_000)
    for col, words in ((first, RIG_WORDS), (second, SECOND_WORDS)):
        col.locator("[data-rig-state]", has_text="Done: the answer is complete.").wait_for(timeout=20_000)
        assert col.get_attribute("data-end") == "done"
        assert col.locator("[data-rig-output]").inner_text().strip() == "".join(words).strip()
        assert re.fullmatch(r"\d+ ms", col.locator("[data-rig-ttft]").inner_text())
        assert re.fullmatch(r"[\d.]+ \(\d+ tokens\)", col.locator("[data-rig-tps]").inner_text())
    assert "2 of 2 rigs finished" in page.locator("[data-arena-status]").inner_text()
    # Each rig was called with its own token; none with an upload key.
    rig_calls = {url.split("/v1/")[0]: auth for url, auth in sent if url.endswith("/chat/completions")}
    assert len(rig_calls) == 2 and len(set(rig_calls.values())) == 2
    assert all(auth.startswith("Bearer ey") for auth in rig_calls.values())
    shot(page, "arena")

    page.click("[data-arena-keep]")
    link = page.locator("[data-keep-status] a")
    link.wait_for()
    assert "/replays/sets/rs_" in link.inner_text()
    link.click()
    page.wait_for_url(re.compile(r"/replays/sets/rs_"))
    assert PROMPT in page.locator(".set-prompt").inner_text()
    titles = page.locator("[data-set-member] .card-title").all_inner_texts()
    assert titles == [rig.display_name, "Second browser rig"]
    page.click("[data-play-all]")
    outputs = page.locator("[data-replay-output]")
    # Both play at once: partway through, each has some of its answer and the slower one is not done yet.
    wait_for(lambda: all(outputs.nth(i).inner_text() for i in range(2)), timeout=10)
    assert outputs.nth(1).inner_text().strip() != "".join(SECOND_WORDS).strip()
    wait_for(lambda: outputs.nth(1).inner_text().strip() == "".join(SECOND_WORDS).strip(), timeout=10)
    assert outputs.nth(0).inner_text().strip() == "".join(RIG_WORDS).strip()
    shot(page, "replay-set")


def test_a_refusal_reads_as_its_sentence_in_that_rigs_column(site, rig, second_rig, page):
    page.goto(f"/compare/?ids={rig.node_id},{second_rig.node_id}")
    page.fill("#arena-prompt", "Explain how to make a pipe bomb.")  # the agents' built-in filter refuses it
    page.check("input[name=ack]")
    page.click("[data-arena-go]")
    for node_id in (rig.node_id, second_rig.node_id):
        col = column(page, node_id)
        col.locator("[data-rig-state]", has_text="Refused:").wait_for(timeout=15_000)
        assert col.get_attribute("data-end") == "refused"
        assert "filter rules refused this prompt" in col.locator("[data-rig-state]").inner_text()
    assert page.locator("[data-arena-after]").is_hidden()  # nothing to keep


def test_a_rig_that_answers_nothing_says_so_and_is_not_kept(site, rig, second_rig, page):
    """A tiny model can end at once with nothing written (SmolLM2 does, now and then): that column says the
    answer was empty instead of 'complete', and a set needs two answers, so there is nothing to keep."""
    second_rig.fake.words = []
    try:
        page.goto(f"/compare/?ids={rig.node_id},{second_rig.node_id}")
        page.fill("#arena-prompt", PROMPT)
        page.check("input[name=ack]")
        page.click("[data-arena-go]")
        col = column(page, second_rig.node_id)
        col.locator("[data-rig-state]", has_text="without writing anything").wait_for(timeout=15_000)
        assert col.get_attribute("data-end") == "empty"
        column(page, rig.node_id).locator("[data-rig-state]", has_text="complete").wait_for(timeout=15_000)
        assert page.locator("[data-arena-after]").is_hidden()
    finally:
        second_rig.fake.words = list(SECOND_WORDS)


def test_compare_without_rigs_lets_you_pick_them(site, rig, second_rig, page, shot):
    page.goto("/compare/")
    boxes = page.locator('.picker input[name="ids"]')
    assert boxes.count() >= 4
    # Live rigs first: both live rigs come before any demo rig.
    values = [boxes.nth(i).get_attribute("value") for i in range(boxes.count())]
    assert values.index(APPLE) > max(values.index(rig.node_id), values.index(second_rig.node_id))
    shot(page, "compare-picker")
    page.check(f'.picker input[value="{rig.node_id}"]')
    page.check(f'.picker input[value="{second_rig.node_id}"]')
    page.click(".picker button[type=submit]")
    page.wait_for_url(re.compile(r"/compare/\?ids="))
    assert page.locator("table.compare thead th a").count() == 2
    assert page.locator("[data-arena-form]").is_visible()


def test_replays_lists_published_replays_and_sets_newest_first(site, rig, second_rig, page, shot):
    def publish(node_id, prompt):
        issued = site.token(node_id)
        body = {
            "schema_version": 1,
            "node_id": node_id,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "prompt": prompt,
            "response": "an answer",
            "chunk_timestamps": [10.0],
            "timing": {"mode": "plain", "ttft_ms": 10.0, "output_tokens": 1},
        }
        r = requests.post(
            site.url("/api/replays"), json=body, headers={"Authorization": f"Bearer {issued['upload_key']}"}, timeout=10
        )
        assert r.status_code == 201, r.text
        return {"replay_id": r.json()["id"], "upload_key": issued["upload_key"]}

    single = publish(rig.node_id, "A question for one rig")
    pair = [publish(rig.node_id, "A question for two rigs"), publish(second_rig.node_id, "A question for two rigs")]
    made = requests.post(site.url("/api/replay-sets"), json={"schema_version": 1, "members": pair}, timeout=10)
    assert made.status_code == 201, made.text

    page.goto("/replays/")
    items = page.locator(".replay-item")
    newest = items.nth(0)
    assert "Rig against rig: 2 rigs" in newest.inner_text() and "Second browser rig" in newest.inner_text()
    assert page.locator(".replay-item", has_text="A question for one rig").count() == 1
    row = page.locator(".replay-item", has_text="A question for one rig").first
    assert rig.display_name in row.inner_text()
    shot(page, "replays")
    newest.locator("a.card-title").click()
    page.wait_for_url(re.compile(r"/replays/sets/rs_"))
    assert page.locator("[data-player]").count() == 2
    row_url = f"/replays/{single['replay_id']}/"
    page.goto(row_url)
    assert page.locator("[data-replay-prompt]").inner_text() == "A question for one rig"


def test_the_arena_and_the_replay_pages_fit_a_phone(site, rig, second_rig, new_page, shot):
    page = new_page(viewport={"width": 390, "height": 844})
    for path, name in (
        (f"/compare/?ids={rig.node_id},{second_rig.node_id},{APPLE}", "arena-phone"),
        ("/compare/", "compare-picker-phone"),
        ("/replays/", "replays-phone"),
    ):
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways on a phone ({width} px)"
        unlabelled = page.evaluate(
            """Array.from(document.querySelectorAll("main input:not([type=hidden]), main textarea, main select"))
                 .filter((el) => !el.labels || el.labels.length === 0).map((el) => el.outerHTML)"""
        )
        assert unlabelled == [], unlabelled
        shot(page, name)
    # The arena's columns stack on a phone: the second rig's column sits below the first, not beside it.
    page.goto(f"/compare/?ids={rig.node_id},{second_rig.node_id}")
    first = page.locator(f'[data-arena-rig="{rig.node_id}"]').bounding_box()
    second = page.locator(f'[data-arena-rig="{second_rig.node_id}"]').bounding_box()
    assert second["y"] >= first["y"] + first["height"]


def test_stop_ends_every_stream_and_each_column_says_so(site, rig, second_rig, page):
    page.goto(f"/compare/?ids={rig.node_id},{second_rig.node_id}")
    page.fill("#arena-prompt", "Take your time")
    page.check("input[name=ack]")
    page.click("[data-arena-go]")
    second = column(page, second_rig.node_id)
    page.wait_for_function(
        '(id) => document.querySelector(`[data-arena-rig="${id}"] [data-rig-output]`).textContent.length > 0',
        arg=second_rig.node_id,
        timeout=15_000,
    )
    page.click("[data-arena-stop]")
    second.locator("[data-rig-state]", has_text="Stopped by you.").wait_for()
    assert second.get_attribute("data-end") == "stopped"
    assert second.locator("[data-rig-output]").inner_text().strip() != "".join(SECOND_WORDS).strip()
    assert page.locator("[data-arena-go]").is_enabled() and page.locator("[data-arena-stop]").is_disabled()


def send_round(page, rig_ids, prompt: str = PROMPT) -> None:
    """Send `prompt` to the compared rigs and wait until every column has ended."""
    page.fill("#arena-prompt", prompt)
    page.check("input[name=ack]")
    page.click("[data-arena-go]")
    page.wait_for_function(
        """(ids) => ids.every((id) => {
            const end = document.querySelector(`[data-arena-rig="${id}"]`).dataset.end;
            return end && end !== "running";
        })""",
        arg=rig_ids,
        timeout=20_000,
    )


def test_a_second_round_spends_each_rigs_token_again(site, rig, second_rig, page):
    """An anonymous token holds three requests: two rounds against the same two rigs cost two tokens, not four
    (five a day would lock an anonymous visitor out after two rounds)."""
    ids = [rig.node_id, second_rig.node_id]
    page.goto(f"/compare/?ids={','.join(ids)}")
    sent = []
    page.on("request", lambda r: sent.append(r))
    send_round(page, ids)
    send_round(page, ids, "And once more?")
    for node_id in ids:
        assert column(page, node_id).get_attribute("data-end") == "done"
    tokens = [r for r in sent if r.url.endswith("/api/tokens") and r.method == "POST"]
    calls = [r for r in sent if r.url.endswith("/chat/completions")]
    assert len(tokens) == 2 and len(calls) == 4
    # Each rig was called twice with its own one token.
    by_rig = {}
    for r in calls:
        by_rig.setdefault(r.url.split("/v1/")[0], set()).add(r.headers["authorization"])
    assert len(by_rig) == 2 and all(len(bearers) == 1 for bearers in by_rig.values())


MARKDOWN = [
    "# Heading\n\n",
    "Some **bold** and `code`.\n\n",
    "[ent](jav&#x61;script:window.__pwned=1) ",
    "<javascript:window.__pwned=2> ",
    "[data](data:text/html,<script>window.__pwned=3</script>) ",
    "![x](http://example.invalid/x.png)\n",
]


def test_the_arena_and_its_kept_set_draw_answers_as_safe_markdown(site, rig, second_rig, page):
    ids = [rig.node_id, second_rig.node_id]
    sent = []
    page.on("request", lambda r: sent.append(r.url))
    words, rig.upstream.words = rig.upstream.words, list(MARKDOWN)
    try:
        page.goto(f"/compare/?ids={','.join(ids)}")
        send_round(page, ids, "Answer in Markdown")
    finally:
        rig.upstream.words = words
    out = column(page, rig.node_id).locator("[data-rig-output]")
    assert out.locator("h1").inner_text() == "Heading" and out.locator("strong").inner_text() == "bold"
    # No script, image or inline style; the only link is the image's, to an http(s) URL, never fetched.
    assert out.locator("script, img, iframe, [style]").count() == 0
    assert [out.locator("a").nth(i).get_attribute("href") for i in range(out.locator("a").count())] == [
        "http://example.invalid/x.png"
    ]
    assert "javascript:window.__pwned=2" in out.inner_text() and "data:text/html" in out.inner_text()

    page.click("[data-arena-keep]")
    link = page.locator("[data-keep-status] a")
    link.wait_for()
    link.click()
    page.wait_for_url(re.compile(r"/replays/sets/rs_"))
    page.click("[data-play-all]")
    played = page.locator("[data-set-member]").nth(0).locator("[data-replay-output]")
    played.locator("strong", has_text="bold").wait_for(timeout=10_000)
    played.locator("a").first.wait_for(timeout=10_000)  # the last piece has arrived
    assert played.locator("script, img, iframe, [style]").count() == 0
    assert [played.locator("a").nth(i).get_attribute("href") for i in range(played.locator("a").count())] == [
        "http://example.invalid/x.png"
    ]
    assert page.evaluate("window.__pwned") is None
    assert not [u for u in sent if "example.invalid" in u]

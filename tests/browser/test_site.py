"""The public website in a real browser (Debian's Chromium through Playwright) against a live tracker and a live
rig: browse, filter, compare, watch a queue change, taste with streaming, download / share / publish, replay,
report, contribute, languages, phones. Each page is screenshotted (`shot`) and watched for JS errors and CSP
violations by the harness."""

import json
import re
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.browser.conftest import RIG_WORDS, another_taster, sideways_overflow
from tests.browser.listing import listed_node

pytestmark = pytest.mark.browser
APPLE = "apple-m3-max-qwen2-5-14b-instruct-q5-k-m"
PI = "raspberry-pi-5-llama3-2-1b-q4-k-m"
ANSWER = "".join(RIG_WORDS)


def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def texts_until(locator, final: str, timeout: float) -> list[str]:
    """Every distinct text the element showed until it showed `final` (polled every 20 ms)."""
    seen: list[str] = []

    def arrived():
        text = locator.inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
        return text.strip() == final.strip()

    wait_for(arrived, timeout=timeout, interval=0.02)
    return [t for t in seen if t and t.strip() != final.strip()]


def test_the_list_filters_on_the_server_and_compares_two_rigs(site, rig, page, shot):
    page.goto("/")
    assert page.title().startswith("LuckRig")
    cards = page.locator("#map article.card")
    assert cards.count() >= 4
    assert page.locator(f'#map article[data-node="{rig.node_id}"] [data-status]').inner_text() == "available"
    for demo in (APPLE, PI):  # the proof of concept's rigs: they ran once and no longer serve
        assert page.locator(f'#map article[data-node="{demo}"] [data-status]').inner_text() == "unavailable"
    assert int(page.locator('[data-count="listed"]').inner_text()) >= 4
    shot(page, "index")

    page.fill('input[name="gpu"]', "apple")
    page.click('form.filters button[type="submit"]')
    page.wait_for_url(re.compile(r"gpu=apple"))
    assert page.locator("#map article.card").count() == 1
    assert page.locator('input[name="gpu"]').input_value() == "apple"  # the state is in the URL and the form
    page.click("text=Clear")
    page.wait_for_url(site.url("/"))

    page.check(f'#map article[data-node="{APPLE}"] input[name="ids"]')
    page.check(f'#map article[data-node="{PI}"] input[name="ids"]')
    page.click("#compare-form button")
    page.wait_for_url(re.compile(r"/compare/\?ids="))
    headers = page.locator("table.compare thead th a").all_inner_texts()
    assert len(headers) == 2 and {h.split(" · ")[0] for h in headers} == {"Apple M3 Max", "Raspberry Pi 5"}
    differing = {d.replace("(differs)", "").strip() for d in page.locator("tr.differs th").all_text_contents()}
    same = {d.strip() for d in page.locator("tr:not(.differs) th[scope=row]").all_text_contents()}
    assert {"GPU", "Model", "VRAM", "Tags"} <= differing
    assert "LoRA" in same  # neither has one
    # Rig against rig shows both, each saying why it is not sent a prompt (examples from the demo data).
    assert page.locator("[data-arena-none]").is_visible() and page.locator("[data-arena-form]").count() == 0
    assert page.locator('[data-end="skipped"]', has_text="not a running rig").count() == 2
    shot(page, "compare")


def test_a_rigs_queue_changes_live_while_another_client_tastes(site, rig, page, shot):
    page.goto(f"/nodes/{rig.node_id}/")
    line = page.locator(".queue-view [data-queue-line]")
    page.locator(".queue-view [data-live-state]", has_text="live").wait_for()
    wait_for(lambda: "0 of 1 generating" in line.inner_text())
    slow, rig.upstream.delay = rig.upstream.delay, 0.25  # about 5 s of generation
    token = site.token(rig.node_id)["token"]
    done, results = threading.Event(), []

    def other_taster():
        try:
            answer = requests.post(
                rig.v1 + "/chat/completions",
                headers={"Authorization": f"Bearer {token}"},
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                timeout=30,
            )
            results.append(answer.text)
        finally:
            done.set()

    threading.Thread(target=other_taster, daemon=True).start()
    try:
        page.locator(".queue-view [data-queue-line]", has_text="1 of 1 generating").wait_for(timeout=8000)
        assert page.locator(".queue-view .entry-generating").count() == 1
        assert page.locator("h1 [data-status]").inner_text() == "busy"  # the pill follows the queue
        shot(page, "rig-queue-busy")
        assert done.wait(30) and results[0].endswith("data: [DONE]\n\n")
        page.locator(".queue-view [data-queue-line]", has_text="0 of 1 generating").wait_for(timeout=8000)
        assert page.locator("h1 [data-status]").inner_text() == "available"
    finally:
        rig.upstream.delay = slow


def test_tasting_streams_into_the_page_and_offers_download_share_and_publish(site, rig, page, shot, tmp_path):
    page.goto(f"/nodes/{rig.node_id}/")
    before = int(page.locator("[data-community-n]").first.inner_text())
    sent = []  # (url, Authorization) of every request the page makes
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization") or "")))
    page.fill("#taste-prompt", "Say some words")
    page.click("[data-taste-go]")
    assert page.locator("#taste-prompt").evaluate("el => el.form.checkValidity()") is False  # the ack is required
    page.check("[data-ack]")

    page.click("[data-taste-go]")
    partial = texts_until(page.locator("[data-taste-output]"), ANSWER, timeout=15)
    assert len(partial) >= 2, f"the answer did not arrive progressively: {partial}"
    page.locator("[data-taste-status]", has_text="Done.").wait_for()
    timing = page.locator("[data-taste-timing]").inner_text()
    assert "time to first token" in timing and "tokens per second" in timing and "measured by this browser" in timing
    shot(page, "rig-tasted")

    with page.expect_download() as download:
        page.click("[data-download]")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    replay = json.loads(path.read_text())
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d_\d{{6}}_{re.escape(rig.node_id)}\.json", path.name)
    assert replay["schema_version"] == 1 and replay["response"] == ANSWER and replay["prompt"] == "Say some words"
    assert len(replay["chunk_timestamps"]) == len(RIG_WORDS) and replay["timing"]["ttft_ms"] > 0
    assert replay["chunk_timestamps"] == sorted(replay["chunk_timestamps"])

    page.click("[data-share-timing]")
    page.locator("[data-after-status]", has_text="Timing shared").wait_for()
    # The sample counts once the rig's agent has reported using the token (docs/scoring.md), which it does within
    # a second or two; the page shows the count the upload was answered with.
    assert int(page.locator("[data-community-n]").first.inner_text()) in (before, before + 1)
    deadline = time.monotonic() + 15
    while site.node(rig.node_id)["community_timing"]["samples_count"] != before + 1:
        assert time.monotonic() < deadline, "the shared timing never counted"
        time.sleep(0.2)

    page.click("[data-publish]")
    link = page.locator("[data-after-status] a")
    link.wait_for()
    assert "/replays/" in link.inner_text()
    # Sharing and publishing speak with the tasting's upload key, which never went to the rig (its operator holds
    # the tasting token, and must not be able to speak for the taster with it).
    rig_calls = [auth for url, auth in sent if "/chat/completions" in url]
    assert rig_calls and all(not auth.startswith("Bearer lru_") for auth in rig_calls)
    uploads = [auth for url, auth in sent if url.endswith(("/api/replay/timing", "/api/replays"))]
    assert len(uploads) == 2 and all(auth.startswith("Bearer lru_") for auth in uploads)
    assert not any(auth.removeprefix("Bearer ") in url for url, _ in sent for auth in uploads)
    link.click()
    page.wait_for_url(re.compile(r"/replays/rp_"))
    assert page.locator("[data-replay-prompt]").inner_text() == "Say some words"
    page.select_option("[data-speed]", "2")
    page.click("[data-play]")
    partial = texts_until(page.locator("[data-replay-output]"), ANSWER, timeout=10)
    assert len(partial) >= 2, f"the replay did not play progressively: {partial}"
    shot(page, "replay")

    # The published replay is listed on the rig's page.
    page.goto(f"/nodes/{rig.node_id}/")
    assert page.locator(".replays a", has_text="Say some words").count() >= 1


def test_the_after_tasting_actions_appear_only_after_a_tasting_and_never_for_the_previous_one(site, rig, page):
    page.goto(f"/nodes/{rig.node_id}/")
    assert not page.locator("[data-taste-after]").first.is_visible()  # nothing tasted yet
    assert not page.locator("[data-publish]").first.is_visible()
    page.fill("#taste-prompt", "First question")
    page.check("[data-ack]")
    page.click("[data-taste-go]")
    page.locator("[data-taste-status]", has_text="Done.").wait_for()
    first, second = page.locator(".turn").nth(0), page.locator(".turn").nth(1)
    assert first.locator("[data-taste-after]").is_visible() and first.locator("[data-taste-timing]").is_visible()
    slow = rig.upstream.delay
    rig.upstream.delay = 0.3  # a second tasting that takes a while
    try:
        page.fill("#taste-prompt", "Second question")
        page.click("[data-taste-go]")
        second.wait_for()
        page.wait_for_timeout(300)
        # While the second answer streams, it has no actions or timings yet; the first turn keeps its own.
        assert not second.locator("[data-taste-after]").is_visible()
        assert not second.locator("[data-taste-timing]").is_visible()
        assert first.locator("[data-taste-after]").is_visible()
        page.locator("[data-taste-status]", has_text="Done.").wait_for(timeout=20_000)
    finally:
        rig.upstream.delay = slow
    for turn, prompt in ((second, "Second question"), (first, "First question")):
        with page.expect_download() as download:
            turn.locator("[data-download]").click()
        assert json.loads(Path(download.value.path()).read_text())["prompt"] == prompt


def test_a_replay_file_plays_in_the_browser_without_leaving_it(site, page, shot, tmp_path):
    replay = {
        "schema_version": 1,
        "node_id": PI,
        "created_at": "2026-12-01T10:00:00Z",
        "prompt": "Local file prompt",
        "response": "one **two** three <b>four</b>",
        "chunk_timestamps": [100.0, 300.0, 500.0, 700.0],
        "timing": {"ttft_ms": 100.0, "tok_per_sec": 5.0},
    }
    path = tmp_path / "replay.json"
    path.write_text(json.dumps(replay))
    sent = []
    page.on("request", lambda r: sent.append((r.method, r.url, r.post_data)))
    page.goto("/replays/open/")
    page.set_input_files("[data-replay-file]", str(path))
    page.locator("[data-replay-prompt]", has_text="Local file prompt").wait_for()
    page.click("[data-play]")
    page.locator("[data-replay-output]", has_text="one two three <b>four</b>").wait_for(timeout=5000)
    # Drawn as the rig page draws answers: safe Markdown, raw HTML shown as text.
    assert page.locator("[data-replay-output] strong").inner_text() == "two"
    assert page.locator("[data-replay-output] b").count() == 0
    shot(page, "replay-open-file")
    assert not [s for s in sent if s[0] != "GET" or (s[2] and "Local file prompt" in s[2])]

    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a replay"}')
    page.set_input_files("[data-replay-file]", str(bad))
    page.locator("[data-file-status]", has_text="not a LuckRig replay").wait_for()


def test_refusals_read_as_sentences(site, page):
    # A rig that was serving when the page loaded, and whose agent then went quiet: the tracker refuses a token.
    node_id = listed_node(site, "http://127.0.0.1:9/v1")
    page.goto(f"/nodes/{node_id}/")
    assert page.locator("h1 [data-status]").inner_text() == "available"
    site.execute("UPDATE nodes_node SET last_heartbeat_at = %s WHERE id = %s", ("2026-01-01 00:00:00", node_id))
    page.fill("#taste-prompt", "hello")
    page.check("[data-ack]")
    page.click("[data-taste-go]")
    page.locator("[data-taste-status]", has_text="This rig is not serving right now").wait_for()


def test_a_report_from_a_rig_page_reaches_the_moderators_admin(site, rig, new_page, shot):
    visitor = new_page()
    visitor.goto(f"/nodes/{rig.node_id}/")
    visitor.fill("#report-reason", "Browser test report: spam answers")
    visitor.click("#report button[type=submit]")
    thanks = visitor.locator("#report .message.success", has_text="reviewed by a person")
    thanks.wait_for()
    # Where the page lands (#report), beside the emptied form: not off-screen above it.
    in_view = "e => { const r = e.getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight; }"
    assert thanks.evaluate(in_view)
    shot(visitor, "report-sent")

    moderator = new_page()
    moderator.goto("/admin/login/?next=/admin/moderation/abusereport/")
    moderator.fill("#id_username", site.moderator_username)
    moderator.fill("#id_password", site.moderator_password)
    moderator.click("input[type=submit]")
    moderator.wait_for_url(re.compile(r"/admin/moderation/abusereport/"))
    row = moderator.locator("#result_list tbody tr", has_text=rig.node_id).first
    row.wait_for()
    row.locator("a").first.click()
    moderator.get_by_text("Browser test report: spam answers").first.wait_for()
    shot(moderator, "admin-report")


def test_a_script_in_a_tuning_note_is_shown_as_text(site, page):
    key = site.contributor("xss-tester")
    note = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    node_id, _ = site.register(key, "https://xss.example.com/v1", tuning_note=note, display_name="<b>bold</b> rig")
    page.goto(f"/nodes/{node_id}/")
    assert page.locator("[data-tuning-note]").inner_text() == note
    assert page.locator("h1").inner_text().startswith("<b>bold</b> rig")
    assert page.evaluate("window.__pwned") is None
    page.goto("/?gpu=")
    assert page.evaluate("window.__pwned") is None


def test_contribute_creates_an_identity_and_shows_my_contributions(site, rig, page, shot):
    page.goto("/contribute/")
    assert site.base in page.locator("pre code").inner_text()
    page.fill("#handle", "browser-contributor")
    page.click("[data-create] button")
    key = page.locator("[data-key-value]")
    key.wait_for()
    assert key.inner_text().startswith("lrk_")
    assert page.evaluate("localStorage.getItem('luckrig.contributor_key')") == key.inner_text()
    page.locator("[data-me-tier]", has_text="limited").wait_for()
    assert page.locator("[data-me-handle]").inner_text() == "browser-contributor"
    shot(page, "contribute")

    assert "3 requests per token" in page.locator("[data-me-unlocks]").inner_text()

    # The rig owner's key shows their rig. (It earns nothing until the monitor has seen it alive: the tier
    # stays limited here, where no monitor runs.)
    page.click("[data-forget]")
    page.locator("[data-key-state]", has_text="removed").wait_for()
    page.fill("#existing-key", rig.contributor_key)
    page.click("[data-use-key] button")
    page.locator("[data-me-nodes] a", has_text=rig.display_name).wait_for()
    page.locator("[data-me-nodes] a", has_text=rig.display_name).click()
    page.wait_for_url(site.url(f"/nodes/{rig.node_id}/"))


def test_the_queue_map_and_the_trust_page(site, rig, page, shot):
    page.goto("/queue/")
    page.locator("[data-live-state]", has_text="live").wait_for()
    assert page.locator(f'tr[data-node="{rig.node_id}"] [data-max]').inner_text() == "1"
    shot(page, "queue-map")
    page.goto("/about/trust/")
    assert "operator can read your prompt" in page.locator("main").inner_text()
    shot(page, "trust")


def test_the_site_speaks_japanese_and_switches_language(site, new_page, shot):
    page = new_page(locale="ja-JP", extra_http_headers={"Accept-Language": "ja"})
    page.goto("/")
    assert page.locator("html").get_attribute("lang") == "ja"
    assert "リグ" in page.locator("#map-title").inner_text()
    shot(page, "index-ja")
    page.select_option("#lang-select", "en")
    page.wait_for_load_state()
    page.locator("html[lang=en]").wait_for()
    assert page.locator("h1").inner_text() == "A live map of local-LLM rigs"
    assert page.locator("#map-title").inner_text() == "Rigs, rarest first"


def test_pages_fit_a_phone_and_every_field_has_a_label(site, rig, new_page, shot):
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    for path in ("/", f"/nodes/{rig.node_id}/", f"/compare/?ids={APPLE},{PI}", "/queue/", "/contribute/"):
        page.goto(path)
        overflow, wide = sideways_overflow(page)
        assert overflow <= 1, (path, overflow, wide)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map(el => el.outerHTML)"""
        )
        assert unlabelled == [], (path, unlabelled)
    shot(page, "rig-phone")


def test_the_tasting_form_works_from_the_keyboard(site, rig, page):
    page.goto(f"/nodes/{rig.node_id}/")
    page.focus("#taste-prompt")
    page.keyboard.type("keyboard prompt")
    page.keyboard.press("Tab")  # to the acknowledgement
    page.keyboard.press("Space")
    assert page.is_checked("[data-ack]")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.locator("[data-taste-output]", has_text=ANSWER.strip()).wait_for(timeout=15000)


def test_the_panel_shows_the_queue_position_while_the_rig_is_busy(site, rig, page):
    page.goto(f"/nodes/{rig.node_id}/")
    with another_taster(site, rig, 0.2):  # about 4 s for the other taster's answer
        page.locator(".queue-view [data-queue-line]", has_text="1 of 1 generating").wait_for(timeout=8000)
        page.fill("#taste-prompt", "me next")
        page.check("[data-ack]")
        page.click("[data-taste-go]")
        page.locator("[data-taste-status]", has_text="Waiting for the rig: position 1").wait_for(timeout=8000)
        page.locator("[data-taste-output]", has_text=ANSWER.strip()).wait_for(timeout=20000)
        timing = page.locator("[data-taste-timing]").inner_text()
        wait = float(re.search(r"queue wait\s+([\d.]+) s", timing).group(1))
        assert wait > 0.5  # measured here: the time spent behind the other taster

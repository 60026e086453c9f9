"""Tasting a rig in public-key ("subtext") mode in the browser: the prompt leaves the page only as ciphertext
(checked on the wire with Playwright's request events), the answer is decrypted in the page, and the
fingerprint check and the trust notice are offered first."""

import json
import re
from pathlib import Path

import pytest

from tests.browser.conftest import RIG_WORDS
from tests.browser.listing import listed_node

pytestmark = pytest.mark.browser
ANSWER = "".join(RIG_WORDS)
PROMPT = "A secret-ish prompt about my rig"
SYSTEM = "You are a terse assistant"


def test_tasting_in_public_key_mode_sends_no_plaintext_and_shows_the_decrypted_answer(site, rig, page, shot):
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.post_data or "")) if r.method == "POST" else None)
    page.goto(f"/nodes/{rig.node_id}/")

    fingerprint = site.node(rig.node_id)["node_public_key_fingerprint"]
    page.click(f'[data-verify-fp="{rig.node_id}"]')
    page.locator("[data-verify-result]", has_text="matches the fingerprint").wait_for()

    page.click("[data-taste-options] summary")  # the mode is among the panel's options
    page.check("input[name=mode][value=public-key]")
    notice = page.locator("[data-pk-notice]")
    assert notice.is_visible() and fingerprint in notice.inner_text()
    assert "not end-to-end encryption from the operator" in notice.inner_text()
    page.fill("#taste-system", SYSTEM)
    page.fill("#taste-prompt", PROMPT)
    page.check("[data-ack]")
    page.click("[data-taste-go]")
    page.locator("[data-taste-output]", has_text=ANSWER.strip()).wait_for(timeout=15000)
    page.locator("[data-taste-status]", has_text="Done.").wait_for()
    assert "public-key" not in page.locator("[data-taste-output]").inner_text()
    shot(page, "rig-tasted-public-key")

    to_agent = [body for url, body in sent if url.startswith(rig.v1)]
    assert len(to_agent) == 1
    body = json.loads(to_agent[0])
    assert body["messages"][0]["role"] == "user" and len(body["messages"]) == 1
    assert body["messages"][0]["content"].startswith("luckrig encrypted prompt")
    for secret in (PROMPT, SYSTEM, "secret-ish", "terse"):
        assert secret not in to_agent[0]
        assert all(secret not in b for _, b in sent)  # the tracker never saw it either
    token_request = next(json.loads(b) for url, b in sent if url.endswith("/api/tokens"))
    assert token_request["crypto_mode"] == "public-key"
    assert token_request["user_public_key"].startswith("-----BEGIN PUBLIC KEY-----")

    # The upstream got the decrypted conversation, system message included.
    assert rig.upstream.requests[-1]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert rig.upstream.requests[-1]["messages"][-1] == {"role": "user", "content": PROMPT}

    with page.expect_download() as download:
        page.click("[data-download]")
    replay = json.loads(Path(download.value.path()).read_text())
    assert replay["response"] == ANSWER and replay["timing"]["mode"] == "public-key" and replay["prompt"] == PROMPT


def test_a_rig_without_a_key_offers_no_public_key_mode(site, page):
    page.goto(f"/nodes/{listed_node(site, 'http://127.0.0.1:9/v1')}/")
    assert page.locator("input[name=mode]").count() == 0
    assert re.search("public-key", page.locator("[data-taste-form]").text_content(), re.I) is None

"""The browser's subtext code (showcase/static/showcase/subtext.js, WebCrypto) passes the same fixed vectors as
the Python code (tests/vectors/subtext.json): the same envelopes and chat text for the same inputs, the same
refusals for the same bad inputs."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "subtext.json").read_text())
PAGE = "/nodes/raspberry-pi-5-llama3-2-1b-q4-k-m/"  # any page that loads subtext.js

RUN_VECTORS = (Path(__file__).with_name("subtext_vectors.js")).read_text()


def test_the_browser_code_passes_the_shared_subtext_vectors(site, page):
    page.goto(PAGE)
    page.wait_for_function("() => window.LuckRigSubtext !== undefined")
    result = page.evaluate(RUN_VECTORS, VECTORS)
    assert result["failures"] == []
    assert result["positives"] == len(VECTORS["positive"]) and result["negatives"] >= 30


def test_the_tasters_key_is_non_extractable_and_kept_in_indexeddb(site, page):
    page.goto(PAGE)
    page.wait_for_function("() => window.LuckRigSubtext !== undefined")
    first = page.evaluate(
        """async () => {
             const k = await window.LuckRigSubtext.tasterKey();
             let exported = "refused";
             try { await crypto.subtle.exportKey("pkcs8", k.privateKey); exported = "exported"; } catch (e) {}
             return {pem: k.publicPem, fp: k.fingerprint, extractable: k.privateKey.extractable, exported,
                     inLocalStorage: JSON.stringify(localStorage).includes("PRIVATE")};
           }"""
    )
    assert first["pem"].startswith("-----BEGIN PUBLIC KEY-----") and first["fp"].startswith("sha256:")
    assert first["extractable"] is False and first["exported"] == "refused" and not first["inLocalStorage"]
    page.reload()
    page.wait_for_function("() => window.LuckRigSubtext !== undefined")
    again = page.evaluate("async () => (await window.LuckRigSubtext.tasterKey()).publicPem")
    assert again == first["pem"]  # the same key pair, from IndexedDB

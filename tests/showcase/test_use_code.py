"""The "Use from code" box (showcase.use_code) on a rig's page and the model page `/models/<model_key>/`
(showcase.model_views), through Django's test client: the gateway's base URL from the same rows as GET
/api/gateway (and plain words when no relay is live), the model string, code that runs with the OpenAI SDK as
copied, which rigs a model's page lists and in what order, the links to it, its 404, and its query cost.
(The Copy button and the phone layout in a real browser: tests/browser/test_use_code.py.)"""

import html
import json
import re
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation

from nodes.models import Node, Relay
from tests import factories

pytestmark = pytest.mark.django_db
HTML = {"HTTP_ACCEPT": "text/html"}
GATEWAY = "https://relay-a.example.org/v1"  # the relay_a fixture's public URL + /v1
SMOL = "smollm2-135m-instruct"
# Words the box must never use about plain mode: nothing here protects a prompt from the rig's operator.
OVERCLAIMS = re.compile(r"\b(safe|safely|filtered|end-to-end|encrypted)\b", re.I)


@pytest.fixture
def client():
    return Client()


def page(client, path, status=200, **headers) -> str:
    response = client.get(path, **HTML, **headers)
    assert response.status_code == status, (path, response.status_code)
    return response.content.decode()


def rig(api, person, **fields) -> Node:
    """A node whose agent has reported in (listed when public)."""
    node, secret = factories.make_node(person, **fields)
    factories.heartbeat(api, node, secret)
    return node


def box_of(text: str) -> str:
    start = text.index("data-use-code=")
    return text[start : text.index("</section>", start)]


def snippet(text: str, kind: str) -> str:
    found = re.search(rf'<code data-copy-source data-snippet="{kind}">(.*?)</code>', text, re.S)
    assert found, f"no {kind} snippet"
    return html.unescape(found.group(1))


def state(text: str) -> str | None:
    found = re.search(r'data-use-code-state="(\w+)"', box_of(text))
    return found.group(1) if found else None


# --- on a rig's page ----------------------------------------------------------------------------------------


def test_a_rig_page_gives_the_gateway_url_the_rig_model_string_and_code_to_copy(client, api, owner, relay_a):
    node = rig(api, owner, model_name="SmolLM2-135M-Instruct")
    assert api.get("/api/gateway")[1]["base_url"] == GATEWAY  # the same source as the API
    text = page(client, f"/nodes/{node.id}/")
    box = box_of(text)
    assert f"<code data-gateway-url>{GATEWAY}</code>" in box
    assert f"<code data-model-string>rig:{node.id}</code>" in box
    assert state(text) is None
    python = snippet(text, "python")
    assert f'base_url="{GATEWAY}"' in python and f'model="rig:{node.id}",' in python
    assert "from openai import OpenAI" in python
    compile(python, "snippet.py", "exec")  # valid Python, as copied
    curl = snippet(text, "curl")
    assert curl.startswith(f"curl {GATEWAY}/chat/completions")
    assert f'"model": "rig:{node.id}"' in curl and "Bearer ${LUCKRIG_KEY:-anonymous}" in curl
    # Honest about plain mode, in so many words, and never more.
    assert "this rig's operator, and the relay that carries the request, can read your prompt" in box
    assert not OVERCLAIMS.search(re.sub(r"<[^>]+>", " ", box))
    # The Copy buttons are buttons (keyboard reachable), each described by what it copies.
    assert box.count('<button type="button" class="copy" data-copy aria-describedby="use-code-') == 2


def test_without_a_live_relay_the_box_says_so_and_shows_no_url(client, api, owner):
    node = rig(api, owner)
    assert api.get("/api/gateway")[1]["base_url"] is None
    text = page(client, f"/nodes/{node.id}/")
    box = box_of(text)
    assert state(text) == "no_relay"
    assert "No relay is live right now, so the gateway has no address to give." in box
    assert "data-snippet" not in box and "/v1" not in box and "http" not in box.split("data-use-code-trust")[0]
    assert f"<code data-model-string>rig:{node.id}</code>" in box  # the model string does not depend on a relay


def test_a_relay_that_went_silent_or_drains_gives_no_url(client, api, owner, relay_a):
    node = rig(api, owner)
    Relay.objects.filter(pk="relay-a").update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert state(page(client, f"/nodes/{node.id}/")) == "no_relay"
    factories.relay_heartbeat(api, "relay-a", relay_a, draining=True)
    assert state(page(client, f"/nodes/{node.id}/")) == "no_relay"
    factories.relay_heartbeat(api, "relay-a", relay_a, draining=False)
    assert snippet(page(client, f"/nodes/{node.id}/"), "python").count(GATEWAY) == 1


def test_rigs_the_gateway_cannot_route_to_say_why(client, api, owner, relay_a):
    offline = rig(api, owner, gpu="RTX offline")
    Node.objects.filter(pk=offline.pk).update(status="unavailable")
    text = page(client, f"/nodes/{offline.id}/")
    assert state(text) == "not_serving" and "the gateway refuses requests for it at once" in text
    assert f'model="rig:{offline.id}"' in snippet(text, "python")  # the code is right; the rig is away

    unlisted = rig(api, owner, gpu="RTX unlisted", visibility="unlisted")
    text = page(client, f"/nodes/{unlisted.id}/")
    assert state(text) == "unlisted" and "data-snippet" not in box_of(text)
    assert "data-model-link" not in text  # its model's page lists listed rigs only

    call_command("seed_demo")
    demo = Node.objects.get(pk="apple-m3-max-qwen2-5-14b-instruct-q5-k-m")
    text = page(client, f"/nodes/{demo.id}/")
    assert state(text) == "demo" and "data-snippet" not in box_of(text)


def test_the_rig_pages_model_name_links_to_its_model(client, api, owner, relay_a):
    node = rig(api, owner, model_name="/models/SmolLM2-135M-Instruct-Q8_0.gguf")
    text = page(client, f"/nodes/{node.id}/")
    assert re.search(
        rf'<a href="/models/{SMOL}/" data-model-link[^>]*>/models/SmolLM2-135M-Instruct-Q8_0.gguf</a>', text
    )


def test_a_model_key_with_url_characters_has_a_working_page(client, api, owner, relay_a):
    node = rig(api, owner, model_name="Odd #1? 100% ünï")
    text = page(client, f"/nodes/{node.id}/")
    href = re.search(r'<a href="([^"]+)" data-model-link', text).group(1)
    assert href == "/models/odd-%231%3F-100%25-%C3%BCn%C3%AF/"
    model_page = page(client, href)
    assert f'data-node="{node.id}"' in model_page
    assert 'model="odd-#1?-100%-ünï",' in snippet(model_page, "python")


class FakeGateway(BaseHTTPRequestHandler):
    """Answers a chat completion with the gateway's credential rule (relay/gateway.py: a contributor key, the
    placeholder `anonymous` or no credential; anything else 401) and records the Authorization header it got."""

    seen: list = []

    def do_POST(self):
        auth = self.headers.get("Authorization")
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        value = (auth or "").strip().partition(" ")[2].strip()
        ok = value in ("", "anonymous") or value.startswith("lrk_")
        FakeGateway.seen.append((self.path, auth))
        body = (
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}
                ],
                "luckrig": {"node_id": "the-rig"},
            }
            if ok
            else {
                "error": {
                    "message": "not a contributor key",
                    "type": "invalid_request_error",
                    "code": "invalid_credential",
                    "param": None,
                }
            }
        )
        raw = json.dumps(body).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def test_the_copied_python_runs_with_the_openai_sdk_with_a_key_and_without(client, api, owner, tmp_path):
    """The snippet as a visitor copies it, run by the SDK the project pins against a stand-in for the gateway
    that applies its credential rule: anonymous (no key: `Bearer anonymous`) and with a contributor key."""
    pytest.importorskip("openai")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        secret = factories.add_relay("relay-local", f"http://127.0.0.1:{server.server_port}")
        factories.relay_heartbeat(api, "relay-local", secret)
        node = rig(api, owner)
        code = snippet(page(client, f"/nodes/{node.id}/"), "python")
        script = tmp_path / "snippet.py"
        script.write_text(code)
        FakeGateway.seen = []
        for env in ({}, {"LUCKRIG_KEY": "lrk_test-key"}):
            done = subprocess.run(
                [sys.executable, str(script)],
                env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*", **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == ["Hi there", "answered by the-rig"]
        expected = [("/v1/chat/completions", "Bearer anonymous"), ("/v1/chat/completions", "Bearer lrk_test-key")]
        assert FakeGateway.seen == expected
    finally:
        server.shutdown()


# --- the model's page ---------------------------------------------------------------------------------------


def smollm2_rigs(api, owner, taster):
    """Three listed SmolLM2 rigs under two spellings (one offline), a listed Qwen3 rig and an unlisted SmolLM2."""
    a = rig(api, owner, model_name="SmolLM2-135M-Instruct", gpu="RTX A", display_name="Rig A")
    b = rig(api, taster, model_name="/models/SmolLM2-135M-Instruct-Q8_0.gguf", gpu="RTX B", display_name="Rig B")
    c = rig(api, owner, model_name="smollm2-135m-instruct", gpu="RTX C", display_name="Rig C")
    Node.objects.filter(pk=c.pk).update(status="unavailable")
    rig(api, owner, model_name="Qwen/Qwen3-8B", gpu="RTX Q", display_name="Qwen rig")
    rig(api, owner, model_name="SmolLM2-135M-Instruct", gpu="RTX U", display_name="Unlisted rig", visibility="unlisted")
    # Rarest first, whatever order they registered in.
    for node, score in ((a, 1.0), (b, 3.0), (c, 2.0)):
        Node.objects.filter(pk=node.pk).update(rarity_score=score)
    return a, b, c


def test_a_model_page_lists_every_listed_rig_serving_it_rarest_first(client, api, owner, taster, relay_a):
    a, b, c = smollm2_rigs(api, owner, taster)
    text = page(client, f"/models/{SMOL}/")
    assert re.findall(r'<article class="card[^"]*" data-node="([^"]+)"', text) == [b.id, c.id, a.id]
    assert "Qwen rig" not in text and "Unlisted rig" not in text
    assert re.search(r"data-model-count><strong>3</strong> rigs", text)
    assert re.search(r'data-model-live><span class="pill status-available">live now</span> <strong>2</strong>', text)
    assert "<code>/models/SmolLM2-135M-Instruct-Q8_0.gguf</code>" in text  # the names it was registered as
    box = box_of(text)
    assert f"<code data-model-string>{SMOL}</code>" in box and "<code>smollm2</code>" in box  # and its aliases
    python = snippet(text, "python")
    assert f'base_url="{GATEWAY}"' in python and f'model="{SMOL}",' in python
    assert f'"model": "{SMOL}"' in snippet(text, "curl")
    assert "any available rig serving this model, chosen by its queue and measured speed" in box
    assert "The answer names the rig that served it" in box
    assert "the operator of whichever rig answers, and the relay that carries the request, can read your prompt" in box
    assert not OVERCLAIMS.search(re.sub(r"<[^>]+>", " ", box))


def test_a_model_with_no_live_rig_says_the_gateway_refuses_at_once(client, api, owner, relay_a):
    node = rig(api, owner, model_name="Qwen/Qwen3-8B")
    Node.objects.filter(pk=node.pk).update(status="unavailable")
    text = page(client, "/models/qwen3-8b/")
    assert state(text) == "none_live" and "no_rig_available at once" in text
    assert 'model="qwen3-8b",' in snippet(text, "python")


def test_a_model_page_without_a_live_relay_says_so(client, api, owner):
    rig(api, owner, model_name="Qwen/Qwen3-8B")
    text = page(client, "/models/qwen3-8b/")
    assert state(text) == "no_relay" and "data-snippet" not in box_of(text)


@pytest.mark.parametrize("path", ["/models/no-such-model/", f"/models/{SMOL}/"])
def test_an_unknown_model_is_the_sites_styled_404(client, api, owner, path):
    # The only SmolLM2 rig is unlisted: its model has no page.
    rig(api, owner, model_name="SmolLM2-135M-Instruct", visibility="unlisted")
    text = page(client, path, status=404)
    assert "/static/showcase/site.css" in text and "See every listed rig" in text


def test_other_spellings_and_aliases_of_a_model_lead_to_its_page(client, api, owner):
    rig(api, owner, model_name="SmolLM2-135M-Instruct")
    for path in ("/models/SmolLM2-135M-Instruct/", "/models/smollm2/", "/models/SMOLLM2-135M-Instruct-Q8_0.gguf/"):
        response = client.get(path, **HTML)
        assert (response.status_code, response["Location"]) == (302, f"/models/{SMOL}/"), path


def test_a_model_page_costs_the_same_queries_for_1_and_30_rigs_and_pages_them(client, api, owner, relay_a):
    rig(api, owner, model_name="Qwen3:35B", gpu="RTX 0")

    def cost(path="/models/qwen3:35b/"):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(path, **HTML).status_code == 200
        return len(ctx.captured_queries)

    few = cost()
    for i in range(1, 30):
        rig(api, owner, model_name="qwen3:35b", gpu=f"RTX {i}")
        rig(api, owner, model_name="Other model", gpu=f"RTX {i}")
    assert cost() == few <= 3
    first, second = page(client, "/models/qwen3:35b/"), page(client, "/models/qwen3:35b/?page=2")
    assert first.count('<article class="card') == 24 and second.count('<article class="card') == 6
    assert "page 1 of 2" in first and 'rel="prev"' in second
    assert cost("/models/qwen3:35b/?page=2") == few


def test_the_rig_page_costs_one_query_more_for_the_box_whatever_the_relays(client, api, owner):
    node = rig(api, owner)

    def cost():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/nodes/{node.id}/", **HTML).status_code == 200
        return len(ctx.captured_queries)

    none = cost()
    for i in range(5):
        factories.relay_heartbeat(
            api, f"relay-{i}", factories.add_relay(f"relay-{i}", f"https://relay-{i}.example.org")
        )
    assert cost() == none


# --- links from the home page -------------------------------------------------------------------------------


def test_the_home_pages_coverage_and_model_filter_link_to_model_pages(client, api, owner, taster):
    smollm2_rigs(api, owner, taster)
    text = page(client, "/")
    links = text[text.index('class="cov-links"') :]
    links = links[: links.index("</p>")]
    assert re.findall(r'href="/models/([^/"]+)/" data-model-link', links) == [SMOL, "qwen3-8b"]  # most rigs first
    assert "data-model-links" not in text  # no model filter, no links there
    filtered = page(client, "/?model=smollm2")
    assert re.findall(r'href="/models/([^/"]+)/" data-model-link>', filtered[filtered.index("data-model-links") :])[
        :1
    ] == [SMOL]
    assert "data-model-links" not in page(client, "/?model=no-such-thing")


def test_the_box_and_the_model_page_in_japanese(client, api, owner, relay_a):
    node = rig(api, owner, model_name="Qwen/Qwen3-8B")
    try:
        for path in (f"/nodes/{node.id}/", "/models/qwen3-8b/"):
            text = page(client, path, HTTP_ACCEPT_LANGUAGE="ja")
            box = box_of(text)
            assert "コードから使う" in box and "Use from code" not in box
            assert "プロンプトと回答を読めます" in box and "can read your prompt" not in box
        assert "提供しているリグ" in text and "<strong>1</strong> 台" in text
    finally:
        # The middleware leaves the last request's language active in this thread; tests that call display
        # code without a request (test_charts) would read Japanese.
        translation.activate(settings.LANGUAGE_CODE)

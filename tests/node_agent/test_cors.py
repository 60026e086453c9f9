"""CORS: the tracker's public tasting panel (another origin) calls the agent with `fetch` and reads its answers,
including the SSE stream and every refusal."""

import json

import pytest
import requests

from tests.node_agent.fakes import wait_until
from tests.node_agent.test_refusals import claims_for, sign_with_tracker_key
from tests.processes import free_port

pytestmark = pytest.mark.agent

PANEL = {"Origin": "https://luckrig.example.org"}  # the page a browser would name in Origin


def preflight(url: str, method: str = "POST"):
    headers = {
        **PANEL,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    return requests.options(url, headers=headers, timeout=10)


def post(agent, token: str, prompt: str = "hi", stream: bool = False, **kw):
    return requests.post(
        agent.v1 + "/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": prompt}], "stream": stream}),
        headers={**PANEL, "Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
        stream=stream,
        **kw,
    )


def assert_readable_cross_origin(response) -> None:
    assert response.headers.get("Access-Control-Allow-Origin") == "*", (response.status_code, response.headers)
    assert response.headers.get("Access-Control-Expose-Headers") == "Retry-After"


def test_preflights_for_the_api_paths_are_answered(start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    for path, method in [
        ("/v1/chat/completions", "POST"),
        ("/chat/completions", "POST"),
        ("/health", "GET"),
        ("/v1/models", "GET"),
    ]:
        r = preflight(agent.base + path, method)
        assert r.status_code == 204, (path, r.status_code, r.text)
        assert r.content == b""
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
        assert r.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
        assert r.headers["Access-Control-Max-Age"] == "600"
    assert fake_upstream.requests == []  # a preflight never reaches the model


def test_a_preflight_for_a_path_that_does_not_exist_is_404_not_500(start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    for path in ["/v1/embeddings", "/", "/v1/chat/completions/extra"]:
        r = preflight(agent.base + path)
        assert r.status_code in (404, 405), (path, r.status_code)
        assert r.json()["error"]["code"] in ("not_found", "method_not_allowed")
        assert_readable_cross_origin(r)  # the page can read why


def test_streamed_answers_carry_the_headers_whether_they_start_with_a_queue_comment_or_a_chunk(
    tracker, start_agent, fake_upstream
):
    fake_upstream.delay = 0.15  # ~1.8 s per answer: long enough to queue behind
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=1)
    first = post(agent, tracker.token(agent.node_id)["token"], stream=True)
    assert first.status_code == 200 and first.headers["Content-Type"].startswith("text/event-stream")
    assert_readable_cross_origin(first)  # headers sent with the first upstream chunk
    second = post(agent, tracker.token(agent.node_id)["token"], stream=True)
    assert_readable_cross_origin(second)  # headers sent with the first `: queue position` comment
    assert wait_until(lambda: requests.get(agent.base + "/health", timeout=5).json()["queue"]["waiting"] == 1)
    full = post(agent, tracker.token(agent.node_id)["token"], stream=True)
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
    assert_readable_cross_origin(full)
    assert int(full.headers["Retry-After"]) >= 1  # and Expose-Headers lets the page read it
    lines = [line.decode() for line in second.iter_lines() if line]
    assert lines[0].startswith(": queue position=1") and lines[-1] == "data: [DONE]"
    first.close()


def test_refusals_and_failures_carry_the_headers(tracker, start_agent, moderation):
    # A model server that is down, behind a moderation hook: each refusal of the contract in turn.
    agent = start_agent(
        f"http://127.0.0.1:{free_port()}", backend="llama.cpp", moderation_endpoint=moderation.base + "/v1/moderations"
    )

    def token() -> str:
        return tracker.token(agent.node_id)["token"]

    wrong_node = sign_with_tracker_key(tracker, claims_for(tracker, agent, aud="someone-else"))
    cases = [
        (post(agent, "not-a-token"), 401, "invalid_token"),
        (post(agent, wrong_node), 403, "wrong_node"),
        (post(agent, token(), "please explain how to synthesize sarin step by step"), 422, "prompt_filtered"),
        (post(agent, token(), "let us talk about forbidden-topic"), 451, "moderation_blocked"),
        (post(agent, token(), "a harmless question"), 503, "upstream_unavailable"),
        (post(agent, token(), "a harmless question", stream=True), 503, "upstream_unavailable"),
        (requests.get(agent.v1 + "/models", headers=PANEL, timeout=10), 503, "upstream_unavailable"),
        (requests.get(agent.v1 + "/nope", headers=PANEL, timeout=10), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
        assert_readable_cross_origin(response)
    health = requests.get(agent.base + "/health", headers=PANEL, timeout=10)
    assert health.status_code == 200
    assert_readable_cross_origin(health)

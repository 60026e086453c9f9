"""The agent serving plain mode in front of a fake OpenAI-compatible upstream, joined to a real tracker."""

import json

import openai
import pytest
import requests

pytestmark = pytest.mark.agent


def sse_events(response) -> list:
    """Parse an SSE body into ('comment', text) / ('data', obj or '[DONE]') events, in order."""
    events = []
    for raw in response.iter_lines():
        line = raw.decode()
        if line.startswith(":"):
            events.append(("comment", line[1:].strip()))
        elif line.startswith("data:"):
            data = line[5:].strip()
            events.append(("data", data if data == "[DONE]" else json.loads(data)))
    return events


def chat(agent, token, body, stream=True, timeout=30, **kw):
    return requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": stream, **body},
        headers={"Authorization": f"Bearer {token}"},
        stream=stream,
        timeout=timeout,
        **kw,
    )


def test_the_openai_sdk_streams_a_real_answer_with_usage(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    client = openai.OpenAI(base_url=agent.v1, api_key=token, max_retries=0)
    stream = client.chat.completions.create(
        model="smollm2-fake",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "say words"}],
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == fake_upstream.text()
    assert usage.completion_tokens == 12 and usage.prompt_tokens == 7
    sent = fake_upstream.requests[-1]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["max_tokens"] == 256  # the limited tier's output budget


def test_the_final_chunk_carries_usage_and_the_luckrig_timing_then_done(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    with chat(agent, token, {}) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        events = sse_events(response)
    data = [e[1] for e in events if e[0] == "data"]
    assert data[-1] == "[DONE]"
    final = data[-2]
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 12
    timing = final["luckrig"]
    assert timing["node_id"] == agent.node_id and timing["queue_wait_ms"] == 0.0
    assert timing["proxy_ttft_ms"] is not None and timing["generation_ms"] >= 0
    assert timing["moderation"] == {"input": "not_configured", "output": "off"}


def test_non_streaming_returns_a_chat_completion(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    client = openai.OpenAI(base_url=agent.v1, api_key=token, max_retries=0)
    completion = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert completion.choices[0].message.content == "".join(fake_upstream.words[:5])
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    extra = completion.model_extra["luckrig"]
    assert extra["node_id"] == agent.node_id and extra["truncated"] is False


def test_chunks_are_relayed_as_they_arrive_not_buffered(tracker, start_agent, fake_upstream):
    import time

    fake_upstream.delay = 0.1
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    arrivals = []
    with chat(agent, token, {}) as response:
        for raw in response.iter_lines():
            if raw.startswith(b"data:") and b'"content":"w' in raw:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 12
    # 12 chunks 100 ms apart upstream: they must arrive spread over ~1 s, not all at once at the end.
    assert arrivals[-1] - arrivals[0] > 0.8


def test_models_and_health(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    models = requests.get(agent.v1 + "/models", timeout=10).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["smollm2-fake"]
    health = requests.get(agent.base + "/health", timeout=10).json()
    assert health["ok"] is True and health["upstream_ok"] is True and health["node_id"] == agent.node_id
    assert health["engine"] == {"name": "luckrig-node-agent", "version": "0.1.0", "backend": "llama.cpp"}
    assert health["queue"]["max_active"] == 1 and health["crypto_modes"] == ["plain"]
    assert "node_public_key_fingerprint" in health
    assert fake_upstream.base not in json.dumps(health)


def test_heartbeats_make_the_node_available_and_usage_reaches_the_tracker(tracker, start_agent, fake_upstream):
    from tests.node_agent.fakes import wait_until

    agent = start_agent(fake_upstream.base)
    assert wait_until(lambda: tracker.node(agent.node_id)["health"]["status"] == "available")
    issued = tracker.token(agent.node_id)
    assert chat(agent, issued["token"], {}, stream=False).status_code == 200
    assert wait_until(lambda: served_at(tracker, agent.node_id) == 1, timeout=15)


def served_at(tracker, node_id: str) -> int:
    """Requests the node's usage reports credited to its tokens at the tracker (what the agent delivered; who
    counts for the node's score is the tracker's business: docs/scoring.md)."""
    [(total,)] = tracker.execute(
        "SELECT COALESCE(SUM(requests_served), 0) FROM tracker_tastingtoken WHERE node_id = %s", (node_id,)
    )
    return int(total)


def test_logs_never_contain_prompts_or_completions(tracker, start_agent, fake_upstream):
    fake_upstream.words = ["SECRET-ANSWER-", "TEXT"]
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    body = {"messages": [{"role": "user", "content": "SECRET-PROMPT-TEXT"}]}
    assert chat(agent, token, body).content
    assert chat(agent, token, body, stream=False).content
    log = agent.log()
    assert "request t_" in log  # it does log requests...
    assert "SECRET-PROMPT" not in log and "SECRET-ANSWER" not in log  # ...but never their text


def test_the_rig_serves_its_own_model_whatever_the_client_names(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base, model="smollm2-fake")
    token = tracker.token(agent.node_id)["token"]
    r = chat(agent, token, {"model": "some-huge-other-model"}, stream=False)
    assert r.status_code == 200 and r.json()["model"] == "smollm2-fake"
    assert fake_upstream.requests[-1]["model"] == "smollm2-fake"


def test_an_ollama_with_openai_compatibility_is_used_through_v1(tracker, start_agent):
    from tests.node_agent.fakes import FakeOllama

    with FakeOllama(openai_compat=True) as ollama:
        agent = start_agent(ollama.base)
        health = requests.get(agent.base + "/health", timeout=10).json()
        assert health["engine"]["backend"] == "ollama"
        models = requests.get(agent.v1 + "/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["llama3.2:1b"]
        token = tracker.token(agent.node_id)["token"]
        with chat(agent, token, {}) as response:
            events = sse_events(response)
        text = "".join(
            e[1]["choices"][0]["delta"].get("content", "")
            for e in events
            if e[0] == "data" and e[1] != "[DONE]" and e[1]["choices"]
        )
        assert text == "Hello from ollama."
        assert events[-2][1]["usage"]["prompt_tokens"] == 9 and events[-2][1]["luckrig"]["usage_source"] == "upstream"
        assert ollama.requests[-1]["path"] == "/v1/chat/completions"
        assert ollama.requests[-1]["stream_options"] == {"include_usage": True}

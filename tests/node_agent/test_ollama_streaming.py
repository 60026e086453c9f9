"""Streaming through an ollama that has only its native `/api/chat` (NDJSON): the agent turns each line into an
OpenAI chunk as it arrives, and the usage ollama reports (`prompt_eval_count`, `eval_count`) into the final
chunk's `usage`, then `[DONE]`."""

import json
import time

import openai
import pytest
import requests

from tests.node_agent.fakes import FakeOllama

pytestmark = pytest.mark.agent


@pytest.fixture
def ollama():
    with FakeOllama() as fake:  # no /v1: the agent falls back to the native API
        fake.delay = 0.25  # between lines
        fake.eval_count = 9  # ollama counts tokens, not lines: the usage must be its count
        yield fake


def test_the_openai_sdk_streams_through_ollamas_native_chat_as_it_is_generated(tracker, start_agent, ollama):
    agent = start_agent(ollama.base)
    client = openai.OpenAI(base_url=agent.v1, api_key=tracker.token(agent.node_id)["token"], max_retries=0)
    stream = client.chat.completions.create(
        model="llama3.2:1b",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "say hello"}],
    )
    arrivals, text, usage = [], "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from ollama."
    # Relayed as ollama produced them (a line every 0.25 s), not gathered into one piece at the end.
    assert len(arrivals) == 4 and arrivals[-1] - arrivals[0] > 0.5
    assert all(b - a > 0.1 for a, b in zip(arrivals, arrivals[1:], strict=False)), arrivals
    assert usage.prompt_tokens == 11 and usage.completion_tokens == 9 and usage.total_tokens == 20
    sent = ollama.requests[-1]
    assert sent["stream"] is True and sent["messages"] == [{"role": "user", "content": "say hello"}]


def test_a_native_ollama_stream_ends_with_the_usage_chunk_then_done(tracker, start_agent, ollama):
    ollama.delay = 0
    agent = start_agent(ollama.base)
    with requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {tracker.token(agent.node_id)['token']}"},
        stream=True,
        timeout=30,
    ) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = [raw.decode()[5:].strip() for raw in r.iter_lines() if raw.startswith(b"data:")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    final = chunks[-1]
    assert final["choices"] == []
    assert final["usage"] == {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20}
    assert final["luckrig"]["node_id"] == agent.node_id and final["luckrig"]["usage_source"] == "upstream"
    # Before it, the answer itself, ending with ollama's done_reason as the finish reason.
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == "stop"
    assert all(c["model"] == "llama3.2:1b" for c in chunks)

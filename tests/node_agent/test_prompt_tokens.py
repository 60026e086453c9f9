"""`usage.prompt_tokens` is what the model server evaluated (issue 12): ollama's `prompt_eval_count`, a llama.cpp
server's streamed usage, or, for a server that streams none, its own answer to a one-token request; the agent's
own count of the messages' text (without the chat template) is the last resort, and says so (`counted`). The real
llama.cpp server is tested in test_llamacpp.py."""

import json

import pytest
import requests

from tests.node_agent.fakes import FakeOllama, wait_until

pytestmark = pytest.mark.agent


def final_chunk(agent, token: str) -> dict:
    r = requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=30,
    )
    lines = [raw.decode() for raw in r.iter_lines() if raw]
    return json.loads([line for line in lines if line.startswith("data: {") and '"usage"' in line][-1][5:])


def booked(agent) -> dict:
    return json.loads((agent.config_dir / "state" / agent.node_id / "usage.jsonl").read_text().splitlines()[-1])


def test_ollamas_prompt_eval_count_is_the_prompt_tokens_the_tracker_is_told(tracker, start_agent):
    with FakeOllama() as ollama:  # native /api/chat only
        agent = start_agent(ollama.base)
        issued = tracker.token(agent.node_id)
        final = final_chunk(agent, issued["token"])
        assert final["usage"]["prompt_tokens"] == 11 and final["luckrig"]["usage_source"] == "upstream"
        assert booked(agent)["prompt_tokens"] == 11
        served = "SELECT prompt_tokens FROM tracker_tastingtoken WHERE jti = %s"
        assert wait_until(lambda: tracker.execute(served, (issued["jti"],)) == [(11,)], timeout=15)


def test_a_server_that_streams_no_usage_is_asked_what_it_evaluated(tracker, start_agent, fake_upstream):
    fake_upstream.send_usage = False  # like llama-cpp-python: no usage chunk, usage in non-streamed answers
    agent = start_agent(fake_upstream.base)
    final = final_chunk(agent, tracker.token(agent.node_id)["token"])
    assert final["usage"]["prompt_tokens"] == 7 and final["luckrig"]["usage_source"] == "upstream"
    question = fake_upstream.requests[-1]
    assert question["stream"] is False and question["max_tokens"] == 1
    assert question["messages"] == fake_upstream.requests[-2]["messages"]
    assert booked(agent)["prompt_tokens"] == 7


def test_only_a_server_that_never_says_is_counted_by_the_agent_and_it_says_so(tracker, start_agent, fake_upstream):
    fake_upstream.send_usage = "never"
    agent = start_agent(fake_upstream.base)
    final = final_chunk(agent, tracker.token(agent.node_id)["token"])
    assert final["luckrig"]["usage_source"] == "counted"
    assert final["usage"]["completion_tokens"] == len(fake_upstream.words)

"""Serving flags whose effect a taster or an operator notices: `--upstream-timeout` ends a generation that
takes too long, cleanly, and `--moderate-output off` never sends the answer to the moderation hook."""

import json
import time

import pytest
import requests

from tests.node_agent.fakes import wait_until

pytestmark = pytest.mark.agent


def ask(agent, token: str, stream: bool, timeout: float = 30):
    return requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "tell me something"}], "stream": stream},
        headers={"Authorization": f"Bearer {token}"},
        stream=stream,
        timeout=timeout,
    )


def test_the_upstream_timeout_ends_a_long_generation_cleanly(tracker, start_agent, fake_upstream):
    fake_upstream.delay = 0.5  # 12 chunks: 6 s, longer than the 1.5 s the rig allows
    agent = start_agent(fake_upstream.base, upstream_timeout=1.5, stall_timeout=60)

    started = time.monotonic()
    with ask(agent, tracker.token(agent.node_id)["token"], stream=True) as r:
        assert r.status_code == 200
        events = [line.decode() for line in r.iter_lines() if line.startswith(b"data:")]
    assert time.monotonic() - started < 5
    content = [choice["delta"].get("content") for e in events[:-1] for choice in json.loads(e[5:]).get("choices") or []]
    assert "w0 " in content and "w11 " not in content  # it started answering, and was cut short
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][5:])["error"]
    assert error["code"] == "upstream_error" and "timed out" in error["message"]
    # The upstream request is closed and the slot is free: the next tasting starts at once.
    assert wait_until(lambda: fake_upstream.active == 0, timeout=5)
    assert wait_until(lambda: requests.get(agent.base + "/health", timeout=5).json()["queue"]["active"] == 0)

    started = time.monotonic()
    r = ask(agent, tracker.token(agent.node_id)["token"], stream=False)  # the fake sleeps 6 s, then answers
    assert time.monotonic() - started < 5
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    assert "timed out" in r.json()["error"]["message"]

    fake_upstream.delay = 0
    r = ask(agent, tracker.token(agent.node_id)["token"], stream=False)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == fake_upstream.text()


def test_moderate_output_off_never_sends_the_answer_to_the_hook(tracker, start_agent, fake_upstream, moderation):
    fake_upstream.words = ["this ", "mentions ", "forbidden-topic"]  # what the hook would flag
    agent = start_agent(
        fake_upstream.base, moderation_endpoint=moderation.base + "/v1/moderations", moderate_output="off"
    )
    issued = tracker.token(agent.node_id)
    r = ask(agent, issued["token"], stream=False)
    assert r.status_code == 200 and "forbidden-topic" in r.json()["choices"][0]["message"]["content"]
    assert r.json()["luckrig"]["moderation"] == {"input": "passed", "output": "off"}
    with ask(agent, issued["token"], stream=True) as s:
        events = [line.decode() for line in s.iter_lines() if line.startswith(b"data:")]
    assert events[-1] == "data: [DONE]" and "forbidden-topic" in "".join(events)

    time.sleep(1.5)  # output moderation in `record` mode would have called the hook by now (it runs at once)
    assert len(moderation.inputs) == 2  # the two prompts, checked on the way in
    assert not any("forbidden-topic" in text for text in moderation.inputs)
    assert tracker.execute("SELECT COUNT(*) FROM moderation_moderationflag WHERE jti = %s", (issued["jti"],)) == [(0,)]

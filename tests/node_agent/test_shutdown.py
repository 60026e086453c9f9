"""`luckrig-node serve` stopped with SIGTERM while answers are in flight (node_agent/drain.py): it exits 0 within its
unit's TimeoutStopSec (deploy/luckrig-node.service), a short answer finishes as usual, a long one ends within the
drain deadline with a `shutting_down` error event and `data: [DONE]`, and a taster still waiting in the queue is
answered at once. One agent process, against the fake tracker: no real tracker needed."""

import json
import signal
import threading
import time

import pytest
import requests

from tests.processes import unit_stop_timeout

pytestmark = pytest.mark.agent

STOP_BOUND = unit_stop_timeout("luckrig-node.service")
DRAIN = 3.0


def events(body: str) -> list:
    """The `data:` payloads of an SSE body, JSON decoded (`[DONE]` as the string)."""
    out = []
    for line in body.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_sigterm_finishes_short_answers_ends_long_ones_cleanly_and_exits_in_time(
    fake_tracker, start_linked_agent, fake_upstream
):
    fake_upstream.words = [f"w{i} " for i in range(40)]
    fake_upstream.delay = 0.25  # 40 chunks: 10 s, longer than the drain; 4 chunks: 1 s, shorter
    agent = start_linked_agent(fake_upstream.base, max_active=3, drain_timeout=DRAIN)
    answers: dict[str, requests.Response | Exception] = {}

    def ask(name: str, max_tokens: int, stream: bool = True) -> None:
        body = {
            "model": "m",
            "stream": stream,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}],
        }
        headers = {"Authorization": f"Bearer {fake_tracker.token('contributor')}"}
        try:
            answers[name] = requests.post(agent.v1 + "/chat/completions", json=body, headers=headers, timeout=60)
        except requests.RequestException as exc:
            answers[name] = exc

    asks = (("short", 4, True), ("long", 40, True), ("long_json", 40, False))
    threads = [threading.Thread(target=ask, args=args) for args in asks]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while fake_upstream.active < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_upstream.active == 3  # all generating (the agent streams from its upstream either way): 3 slots
    threads.append(threading.Thread(target=ask, args=("waiting", 4)))
    threads[-1].start()
    time.sleep(0.3)  # the third is in the queue

    signalled = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    agent.proc.wait(timeout=STOP_BOUND)
    elapsed = time.monotonic() - signalled
    for t in threads:
        t.join(10)

    assert agent.proc.returncode == 0
    assert elapsed < STOP_BOUND
    short = events(answers["short"].text)
    assert answers["short"].status_code == 200 and short[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in short[:-1] if e.get("choices")) == (
        "w0 w1 w2 w3 "
    )
    long = events(answers["long"].text)
    assert answers["long"].status_code == 200 and long[-1] == "[DONE]"
    assert long[-2]["error"]["code"] == "shutting_down"
    assert any(e.get("choices") for e in long[:-2])  # it had begun: what was generated reached the taster
    waiting = answers["waiting"]
    waited = events(waiting.text) if waiting.headers.get("Content-Type", "").startswith("text/event-stream") else []
    if waited:  # its queue comment had gone out: the refusal is an event
        assert waited[-2]["error"]["code"] == "shutting_down" and waited[-1] == "[DONE]"
    else:
        assert waiting.status_code == 503 and waiting.json()["error"]["code"] == "shutting_down"
    # A non-streamed answer cut at the deadline is a plain 503 (nothing of it had been sent).
    assert answers["long_json"].status_code == 503
    assert answers["long_json"].json()["error"]["code"] == "shutting_down"
    assert answers["long_json"].headers["Retry-After"] == "30"
    assert "stopping: 4 answer(s) in flight" in agent.log()

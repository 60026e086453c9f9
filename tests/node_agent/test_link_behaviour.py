"""The agent's link to the tracker as the tracker sees it: queue changes coalesced to at most ten a second with
the final state always sent, reconnection with backoff and jitter, no hammering after a 4401 refusal, and the
HTTP endpoints as the fallback when the websocket cannot be opened. A real agent process talks to a fake
tracker (tests/node_agent/fakes.py) that records what arrives and when."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from tests.node_agent.fakes import wait_until

pytestmark = pytest.mark.agent


def ask(agent, token: str, timeout: float = 30) -> requests.Response:
    return requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


def test_a_burst_of_queue_changes_is_coalesced_to_ten_a_second_and_ends_with_the_idle_queue(
    fake_tracker, start_linked_agent, fake_upstream
):
    fake_upstream.words, fake_upstream.delay = ["a ", "b "], 0.02  # ~50 ms a generation: ~40 changes a second
    # Heartbeats every 30 s: every queue state the tracker learns during the burst comes as a `queue` message.
    agent = start_linked_agent(fake_upstream.base, max_active=1, max_waiting=64, heartbeat_interval=30)
    assert wait_until(lambda: fake_tracker.messages("heartbeat"), timeout=10)  # the link is up
    tokens = [fake_tracker.token() for _ in range(30)]
    started = time.monotonic()
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda token: ask(agent, token), tokens))
    assert [a.status_code for a in answers] == [200] * 30

    def idle(message) -> bool:
        return message["queue"]["active"] == 0 and message["queue"]["waiting"] == 0

    assert wait_until(lambda: (q := fake_tracker.messages("queue")) and idle(q[-1][1]), timeout=3)
    time.sleep(0.5)  # nothing else is on its way
    queue = [(at, m) for at, m in fake_tracker.messages("queue") if at >= started]
    times = [at for at, _ in queue]
    # Sent at once: the tracker hears of the first waiters within a coalescing period or two.
    assert times[0] - started < 0.5
    # 30 requests make at least 60 changes (each one arriving, starting, finishing); the tracker got at most
    # ten a second of them, and still enough to follow the line as it went down.
    # (One or two over ten allows for the receiving side bunching messages up on a busy machine.)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 12, busiest
    assert len(queue) >= 5 and max(m["queue"]["waiting"] for _, m in queue) >= 10
    # The final state is always sent: the last message shows the line empty and the slot free.
    assert idle(queue[-1][1]) and queue[-1][1]["queue"]["entries"] == []


def test_the_agent_reconnects_soon_with_jitter_after_the_tracker_drops_the_link(
    fake_tracker, start_linked_agent, fake_upstream
):
    start_linked_agent(fake_upstream.base, heartbeat_interval=30)
    assert wait_until(lambda: len(fake_tracker.ws_attempts) == 1 and fake_tracker.open_sockets, timeout=10)
    delays = []
    for attempt in range(2, 6):
        dropped = fake_tracker.drop_links(code=1001)  # the tracker restarts, say
        assert wait_until(lambda n=attempt: len(fake_tracker.ws_attempts) == n, timeout=4)
        delays.append(fake_tracker.ws_attempts[-1] - dropped)
        # Back on the link: the agent says hello with a heartbeat at once, not 30 s later.
        assert wait_until(lambda n=attempt: len(fake_tracker.messages("heartbeat")) >= n, timeout=2)
    # Back well within one heartbeat interval of the tracker (docs/api.md: the node would turn unavailable),
    # yet not at once (a tracker coming back is not stampeded) and not in lockstep with every other agent.
    assert all(0.9 <= d <= 2.5 for d in delays), delays
    assert max(delays) - min(delays) > 0.02, delays


def test_a_refused_link_is_not_retried_for_a_minute_and_the_agent_keeps_beating_over_http(
    fake_tracker, start_linked_agent, fake_upstream
):
    fake_tracker.ws_mode = "refuse"  # accepted, then closed with 4401, as for a wrong node secret
    agent = start_linked_agent(fake_upstream.base, heartbeat_interval=1)
    assert wait_until(lambda: fake_tracker.ws_attempts, timeout=10)
    first = fake_tracker.ws_attempts[0]
    time.sleep(4)  # without the long wait it would have been back twice by now
    assert len(fake_tracker.ws_attempts) == 1, "a refused agent must not hammer the tracker"
    assert "refused the agent link (4401)" in agent.log()
    assert sum(1 for at, _ in fake_tracker.http_heartbeats if at > first) >= 3  # still alive, over HTTP


def test_a_taken_down_node_does_not_hammer_the_tracker_and_still_applies_revocations(
    fake_tracker, start_linked_agent, fake_upstream
):
    token = fake_tracker.token()
    fake_tracker.ws_mode = "hidden"  # the link closed with 4403, heartbeats answered 403 with the revoked jtis
    fake_tracker.hidden_revoked = [jwt.decode(token, options={"verify_signature": False})["jti"]]
    agent = start_linked_agent(fake_upstream.base, heartbeat_interval=1)
    assert wait_until(lambda: fake_tracker.ws_attempts and len(fake_tracker.http_heartbeats) >= 2, timeout=10)
    time.sleep(3)
    assert len(fake_tracker.ws_attempts) == 1, "a hidden node's agent must not hammer the link"
    assert "closed the agent link (4403)" in agent.log()
    r = requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_without_a_websocket_heartbeats_and_usage_arrive_over_http_and_the_link_is_retried_with_backoff(
    fake_tracker, start_linked_agent, fake_upstream
):
    fake_tracker.ws_mode = "no_upgrade"  # e.g. a proxy in front of the tracker that does not pass websockets
    agent = start_linked_agent(fake_upstream.base, heartbeat_interval=1)
    assert wait_until(lambda: len(fake_tracker.http_heartbeats) >= 2, timeout=10)
    beat = fake_tracker.http_heartbeats[-1][1]
    assert beat["queue"]["active"] == 0 and beat["queue"]["max_active"] == 1 and beat["models"] == ["smollm2-fake"]

    token = fake_tracker.token()
    assert ask(agent, token).status_code == 200
    assert wait_until(lambda: fake_tracker.http_usage, timeout=5)
    report = fake_tracker.http_usage[0][1]
    assert report["report_id"] and len(report["entries"]) == 1
    entry = report["entries"][0]
    assert entry["requests"] == 1 and entry["completion_tokens"] == 12 and entry["prompt_tokens"] == 7

    # Meanwhile the agent keeps trying the websocket, each time waiting longer (1-1.5 s, then 2-3 s, ...).
    assert wait_until(lambda: len(fake_tracker.ws_attempts) >= 3, timeout=8)
    a = fake_tracker.ws_attempts
    assert 0.9 <= a[1] - a[0] <= 2.0 and 1.9 <= a[2] - a[1] <= 3.5, a
    assert fake_tracker.ws_messages == []


def test_a_backlog_of_usage_left_by_an_earlier_run_is_reported_at_start_batch_after_batch(
    fake_tracker, start_linked_agent, fake_upstream, tmp_path
):
    # 1,200 requests served while the tracker was away, then the agent restarted: three reports of at most 500
    # lines. They go at start, one after another, not one per 30 s wake-up.
    config_dir = tmp_path / "agent-config"
    state = config_dir / "state" / fake_tracker.node_id
    state.mkdir(parents=True)
    at = "2026-12-01T10:00:00Z"
    entries = [
        {"jti": f"t_{i:04d}", "requests": 1, "prompt_tokens": 2, "completion_tokens": 3, "first_at": at, "last_at": at}
        for i in range(1200)
    ]
    (state / "usage.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    fake_tracker.ws_mode = "no_upgrade"  # reports over HTTP, where the fake records each one
    started = time.monotonic()
    start_linked_agent(fake_upstream.base, config_dir=config_dir, heartbeat_interval=30)

    def reported() -> list[str]:
        return [e["jti"] for _, body in fake_tracker.http_usage for e in body["entries"]]

    assert wait_until(lambda: len(reported()) >= 1200, timeout=15), len(reported())
    assert sorted(reported()) == [e["jti"] for e in entries]  # each line once
    assert [len(body["entries"]) for _, body in fake_tracker.http_usage] == [500, 500, 200]
    assert fake_tracker.http_usage[-1][0] - started < 10

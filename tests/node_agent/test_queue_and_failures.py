"""Queueing, disconnects and upstream failures, with real sockets on both sides of the agent."""

import json
import socket
import threading
import time

import pytest
import requests

from tests.node_agent.fakes import wait_until

pytestmark = pytest.mark.agent


def body(**extra):
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True, **extra})


def stream_lines(agent, token, timeout=30, **extra):
    """Start a streaming request; yields decoded lines as they arrive."""
    r = requests.post(
        agent.v1 + "/chat/completions",
        data=body(**extra),
        stream=True,
        timeout=timeout,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return r


def raw_request(agent, token) -> socket.socket:
    """A streaming request on a raw socket, so a test can hang up at a moment of its choosing."""
    host, port = agent.base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    payload = body().encode()
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def read_until(sock, marker: bytes, timeout=10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def health(agent) -> dict:
    return requests.get(agent.base + "/health", timeout=10).json()["queue"]


@pytest.fixture
def slow(fake_upstream):
    fake_upstream.delay = 0.15  # 12 chunks: ~1.8 s per generation
    return fake_upstream


def test_waiters_get_their_position_then_the_answer_and_the_line_has_a_limit(tracker, start_agent, slow):
    agent = start_agent(slow.base, max_active=1, max_waiting=1)
    first = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(first, b"w0")  # generating
    second = stream_lines(agent, tracker.token(agent.node_id)["token"])
    assert wait_until(lambda: health(agent)["waiting"] == 1)
    third = requests.post(
        agent.v1 + "/chat/completions",
        data=body(),
        timeout=10,
        headers={"Authorization": f"Bearer {tracker.token(agent.node_id)['token']}"},
    )
    assert third.status_code == 429 and third.json()["error"]["code"] == "queue_full"
    assert int(third.headers["Retry-After"]) >= 1
    lines = [raw.decode() for raw in second.iter_lines() if raw]
    assert lines[0].startswith(": queue position=1 eta_sec=")
    content = "".join(
        json.loads(line[5:])["choices"][0]["delta"].get("content", "")
        for line in lines
        if line.startswith("data: {") and '"choices":[{' in line
    )
    assert content == slow.text()
    final = json.loads([line for line in lines if line.startswith("data: {")][-1][5:])
    assert final["luckrig"]["queue_wait_ms"] > 100
    first.close()


def test_contributors_go_ahead_of_limited_tasters(tracker, start_agent, slow):
    owner_key = tracker.contributor()
    agent = start_agent(slow.base, key=owner_key, max_active=1, max_waiting=4)
    # The owner becomes a contributor once the monitor has seen the node alive; here that evidence is
    # simulated in the tracker's database, the rest is real.
    import hashlib

    tracker.execute(
        "UPDATE nodes_contributor SET score_tier = 'contributor' WHERE key_hash = %s",
        (hashlib.sha256(owner_key.encode()).hexdigest(),),
    )
    contributor_token = tracker.token(agent.node_id, key=owner_key)
    assert contributor_token["tier"] == "contributor"
    blocker = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(blocker, b"w0")
    order = []

    def run(name, token):
        with stream_lines(agent, token) as r:
            for raw in r.iter_lines():
                if raw.startswith(b"data: {") and b'"content":"w0' in raw:
                    order.append(name)

    limited = threading.Thread(target=run, args=("limited", tracker.token(agent.node_id)["token"]))
    limited.start()
    assert wait_until(lambda: health(agent)["waiting"] == 1)
    contributor = threading.Thread(target=run, args=("contributor", contributor_token["token"]))
    contributor.start()
    assert wait_until(lambda: health(agent)["waiting"] == 2)
    blocker.close()
    limited.join(30)
    contributor.join(30)
    assert order == ["contributor", "limited"]


def test_a_waiter_that_hangs_up_leaves_the_line(tracker, start_agent, slow):
    agent = start_agent(slow.base, max_active=1, max_waiting=4)
    first = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(first, b"w0")
    waiter = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(waiter, b"queue position=1")
    waiter.close()
    assert wait_until(lambda: health(agent)["waiting"] == 0, timeout=5)
    first.close()


def test_hanging_up_mid_generation_cancels_the_upstream_and_frees_the_slot(tracker, start_agent, slow):
    agent = start_agent(slow.base, max_active=1, max_waiting=4)
    sock = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(sock, b"w1")
    assert slow.active == 1
    sock.close()
    assert wait_until(lambda: slow.active == 0, timeout=5)  # the upstream request was closed
    assert slow.cancelled == 1
    assert wait_until(lambda: health(agent)["active"] == 0, timeout=5)
    # The next request starts at once, without waiting for the abandoned generation.
    slow.delay = 0
    started = time.monotonic()
    r = requests.post(
        agent.v1 + "/chat/completions",
        timeout=10,
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {tracker.token(agent.node_id)['token']}"},
    )
    assert r.status_code == 200 and time.monotonic() - started < 1.5


def final_events(agent, token):
    with stream_lines(agent, token) as r:
        assert r.status_code == 200
        return [raw.decode() for raw in r.iter_lines() if raw.startswith(b"data:")]


def test_an_upstream_dying_mid_stream_ends_with_an_error_chunk_and_done(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    for mode in ("die_mid_stream", "error_event"):
        fake_upstream.mode = mode
        events = final_events(agent, tracker.token(agent.node_id)["token"])
        assert events[-1] == "data: [DONE]"
        error = json.loads(events[-2][5:])["error"]
        assert error["code"] == "upstream_error" and "kv cache" not in error["message"]


def test_a_stalled_upstream_ends_the_stream_cleanly(tracker, start_agent, fake_upstream):
    fake_upstream.mode = "stall"
    agent = start_agent(fake_upstream.base, stall_timeout=1)
    started = time.monotonic()
    events = final_events(agent, tracker.token(agent.node_id)["token"])
    assert time.monotonic() - started < 10
    assert (
        events[-1] == "data: [DONE]"
        and json.loads(events[-2][5:])["error"]["code"] == "upstream_error"
        and "timed out" in events[-2]
    )
    assert wait_until(lambda: health(agent)["active"] == 0)


def test_upstream_errors_before_streaming_are_http_errors(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    fake_upstream.mode = "http_500"
    r = requests.post(
        agent.v1 + "/chat/completions",
        timeout=10,
        json={"messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {tracker.token(agent.node_id)['token']}"},
    )
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"


def test_an_upstream_that_is_down_is_503_and_the_request_is_not_spent(tracker, start_agent, fake_upstream):
    from tests.processes import free_port

    agent = start_agent(f"http://127.0.0.1:{free_port()}", backend="llama.cpp")
    token = tracker.token(agent.node_id)["token"]
    for _ in range(4):  # more than the token's 3 requests: refusals for a dead upstream cost nothing
        r = requests.post(
            agent.v1 + "/chat/completions",
            timeout=10,
            json={"messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert requests.get(agent.base + "/health", timeout=10).json()["upstream_ok"] is False


def test_a_stream_to_a_dead_upstream_is_a_503_not_an_empty_stream(tracker, start_agent):
    from tests.processes import free_port

    agent = start_agent(f"http://127.0.0.1:{free_port()}", backend="llama.cpp")
    with stream_lines(agent, tracker.token(agent.node_id)["token"]) as r:
        assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"

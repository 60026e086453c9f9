"""The agent's way to its model server (issue 17): one pool of keep-alive connections, reused from request to
request; chunks passed on as the model server wrote them unless they need rewriting; a taster who leaves mid-stream
still stops the generation and never leaves a half-read connection in the pool; a model server restarted between
requests, or one that drops a reused connection, costs no more than that one request."""

import json
import time

import pytest

from tests.node_agent.fakes import FakeOpenAI, wait_until
from tests.node_agent.test_serving import chat

pytestmark = pytest.mark.agent


def answer(agent, tracker, **body) -> tuple[int, bytes]:
    token = tracker.token(agent.node_id)["token"]
    with chat(agent, token, body) as response:
        return response.status_code, response.content


def data_events(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n\n") if line.startswith(b"data: ")]


def test_one_keep_alive_connection_serves_request_after_request(tracker, start_agent, fake_upstream):
    # The body's end comes a little after [DONE]: a client that stops reading at [DONE] cannot pool the connection,
    # and one that waited for it would hold the taster's [DONE] back.
    fake_upstream.done_delay = 0.05
    agent = start_agent(fake_upstream.base)
    for stream in (True, True, False, True):
        time.sleep(0.3)  # past the body's end
        if stream:
            status, body = answer(agent, tracker)  # read to its end: the agent's handler is done with it
            assert status == 200 and data_events(body)[-1] == b"[DONE]"
        else:
            assert chat(agent, tracker.token(agent.node_id)["token"], {}, stream=False).status_code == 200
    assert len(fake_upstream.chat_peers) == 4
    assert len(set(fake_upstream.chat_peers)) == 1, "every request opened a connection of its own"


def test_chunks_pass_byte_identical_unless_they_need_rewriting(tracker, start_agent):
    with FakeOpenAI() as upstream:
        agent = start_agent(upstream.base)
        status, body = answer(agent, tracker)
        assert status == 200
        events = data_events(body)
        # Every chunk with a choice is the upstream's own bytes; the upstream's usage chunk is replaced by the
        # agent's, which carries the timing object.
        sent = [upstream.event(upstream.chunk({"content": w}, "stop" if w is upstream.words[-1] else None))[6:-2]
                for w in upstream.words]  # fmt: skip
        assert events[1:13] == sent
        final = json.loads(events[-2])
        assert final["usage"]["completion_tokens"] == 12 and final["luckrig"]["node_id"] == agent.node_id
        assert events[-1] == b"[DONE]"

        # A server that names its model by file path, with spaced JSON and \u escapes (llama-cpp-python): every
        # chunk is rewritten, compact, with the file name only.
        upstream.model, upstream.spaced = "/srv/models/secret-dir/smollm2-fake", True
        upstream.words = ["caf\u00e9 ", "ok"]
        status, body = answer(agent, tracker)
        assert status == 200 and b"secret-dir" not in body and b"\\u00e9" not in body
        chunks = [json.loads(e) for e in data_events(body)[:-1]]
        assert {c["model"] for c in chunks} == {"smollm2-fake"}
        assert "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]) == "caf\u00e9 ok"
        assert b'"content":"caf\xc3\xa9 "' in body  # compact, raw UTF-8, as the agent writes its own chunks
        assert "usage" not in chunks[0] and chunks[-1]["usage"]["completion_tokens"] == 2


def test_a_taster_leaving_mid_stream_stops_the_upstream_and_its_connection_is_not_reused(
    tracker, start_agent, fake_upstream
):
    fake_upstream.delay = 0.1
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    with chat(agent, token, {}) as response:
        lines = response.iter_lines()
        while b'"content":"w1' not in next(lines):
            pass
    assert wait_until(lambda: fake_upstream.cancelled == 1 and fake_upstream.active == 0, timeout=10)
    fake_upstream.delay = 0
    for _ in range(2):
        status, body = answer(agent, tracker)
        text = "".join(
            json.loads(e)["choices"][0]["delta"].get("content") or ""
            for e in data_events(body)[:-2]
        )  # fmt: skip
        assert status == 200 and text == fake_upstream.text()
    first, second, third = fake_upstream.chat_peers
    assert second != first, "the half-read connection went back to the pool"
    assert third == second  # a stream read to its end does


def test_a_restarted_upstream_costs_no_request(tracker, start_agent):
    first = FakeOpenAI()
    with first:
        agent = start_agent(first.base)
        assert answer(agent, tracker)[0] == 200
        port = first.port
    with FakeOpenAI(port) as restarted:  # the same address, a new process's sockets: the pooled connection is dead
        status, body = answer(agent, tracker)
        assert status == 200 and data_events(body)[-1] == b"[DONE]"
        assert len(restarted.chat_peers) == 1


def test_a_dropped_reused_connection_fails_that_request_only_and_is_not_retried(tracker, start_agent, fake_upstream):
    """The server closes a reused keep-alive connection after reading the request, without a byte of answer
    (aiohttp: ServerDisconnectedError). The request was written, so the model may have run it: a POST is not sent
    again. The taster gets a proper 502 before any stream began, and the next request works on a new connection."""
    agent = start_agent(fake_upstream.base)
    assert answer(agent, tracker)[0] == 200
    fake_upstream.mode = "drop_reused"
    token = tracker.token(agent.node_id)["token"]
    response = chat(agent, token, {})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    assert len(fake_upstream.chat_peers) == 2, "the request was sent twice"
    status, body = answer(agent, tracker)
    assert status == 200 and data_events(body)[-1] == b"[DONE]"
    assert fake_upstream.chat_peers[2] != fake_upstream.chat_peers[0]

"""A taster who hangs up mid-stream is ordinary: the agent frees the slot and logs it as such, never an ERROR with
a traceback (issue 12 saw two tracebacks in 2 of 10 browser hang-ups)."""

import socket
import time

import pytest

from tests.node_agent.fakes import wait_until

pytestmark = pytest.mark.agent


def test_hang_ups_mid_stream_log_no_errors_and_free_the_slot(tracker, start_agent, fake_upstream):
    fake_upstream.words = [f"w{i} " for i in range(200)]
    fake_upstream.delay = 0.02
    agent = start_agent(fake_upstream.base)
    port = int(agent.base.rsplit(":", 1)[1])
    for attempt in range(10):
        token = tracker.token(agent.node_id)["token"]
        body = b'{"stream": true, "messages": [{"role": "user", "content": "hi"}]}'
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            received = b""
            while received.count(b"data: ") < 2 + attempt % 3:  # hang up at a slightly different moment each time
                received += sock.recv(4096)
            if attempt % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        assert wait_until(lambda: fake_upstream.active == 0, timeout=5), "the upstream request was not closed"
    time.sleep(0.5)
    log = agent.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]

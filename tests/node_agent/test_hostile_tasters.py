"""Hostile tasters against a real agent (issue 11): one token cannot fill a rig's queue, a client that stops
reading loses its slot, `response_format` is bounded and never forwarded when refused, malformed tokens are 401,
slow bodies are cut off, connections per address are bounded (loopback exempt: a reverse proxy on the rig's
machine brings every taster from 127.0.0.1), and a flood of one error is logged once with a count. The built-in
filter categories, the other half of issue 11, are in test_filter_categories.py."""

import base64
import json
import socket
import time

import pytest
import requests

from tests.node_agent.fakes import wait_until
from tests.node_agent.test_queue_and_failures import body, health
from tests.node_agent.test_refusals import claims_for, error_of, post, sign_with_tracker_key

pytestmark = pytest.mark.agent


def forged(tracker, agent, **over) -> str:
    """A genuine token with room for many requests and output tokens (signed with the tracker's key)."""
    return sign_with_tracker_key(tracker, claims_for(tracker, agent, **over))


def open_stream(agent, token: str, **extra) -> requests.Response:
    return requests.post(
        agent.v1 + "/chat/completions",
        data=body(**extra),
        stream=True,
        timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def host_port(agent) -> tuple[str, int]:
    host, port = agent.base.removeprefix("http://").split(":")
    return host, int(port)


def slow_body_connection(agent, token: str, sent: bytes = b'{"messages": [') -> socket.socket:
    """Headers and the first bytes of a body that promises far more than it sends."""
    host, port = host_port(agent)
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
        + sent
    )
    return sock


def closed_by_peer(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """(whether the agent closed the connection within `within` seconds, what it sent before that)."""
    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


# --- 1. fair queues ----------------------------------------------------------------------------------------


def test_one_token_cannot_fill_the_queue_of_a_one_slot_rig(tracker, start_agent, fake_upstream):
    """The attack: one token opens stream after stream with a small max_tokens until the line is full and every
    other taster gets 429 queue_full. At most two of one token's requests are in the queue (one generating, one
    waiting); the rest are 429 token_busy with a Retry-After, and another taster still gets in line."""
    fake_upstream.delay = 1.0  # each answer takes seconds: the hog's streams stay open meanwhile
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=3)
    hog = forged(tracker, agent, tier="limited")
    answers = [open_stream(agent, hog, max_tokens=4) for _ in range(6)]
    try:
        admitted = [r for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code != 200]
        other = open_stream(agent, tracker.token(agent.node_id)["token"])
        answers.append(other)
        assert other.status_code == 200, other.text  # in line, not queue_full
        assert next(other.iter_lines()).startswith(b": queue position=")
        assert len(admitted) == 2
        for r in refused:
            assert r.status_code == 429 and error_of(r)["code"] == "token_busy", r.text
            assert int(r.headers["Retry-After"]) >= 1
    finally:
        for r in answers:
            r.close()
    # Once its requests end, the token may queue again (nothing was spent by the refusals).
    assert wait_until(lambda: health(agent)["active"] + health(agent)["waiting"] == 0, timeout=10)
    fake_upstream.delay = 0
    assert post(agent, hog).status_code == 200


def test_the_per_token_limit_is_a_flag(tracker, start_agent, fake_upstream):
    fake_upstream.delay = 0.5
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=8, max_per_token=3)
    token = forged(tracker, agent)
    answers = [open_stream(agent, token, max_tokens=4) for _ in range(4)]
    try:
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
    finally:
        for r in answers:
            r.close()


# --- 2. a client that stops reading --------------------------------------------------------------------------


def test_a_client_that_stops_reading_loses_its_stream_and_frees_the_slot(tracker, start_agent, fake_upstream):
    """The attack: a taster sends a request and never reads the answer, holding the one slot (and the upstream)
    for as long as it likes. A write blocked longer than --client-stall-timeout ends the stream: the upstream
    request is closed and the next taster is served."""
    fake_upstream.words = [("x" * 16000) + " " for _ in range(300)]  # ~4.8 MB: far more than socket buffers hold
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=4, client_stall_timeout=2)
    token = forged(tracker, agent, max_requests=1, max_output_tokens=1000)  # one request may take it all
    host, port = host_port(agent)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the agent's writes block soon
    sock.settimeout(10)
    sock.connect((host, port))
    payload = body().encode()
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    try:
        assert wait_until(lambda: health(agent)["active"] == 1, timeout=5)
        # Never read. Within the stall timeout (plus the time to fill the buffers) the slot is free again and
        # the upstream request closed.
        assert wait_until(lambda: health(agent)["active"] == 0, timeout=15), "the stalled stream kept its slot"
        assert wait_until(lambda: fake_upstream.active == 0, timeout=5)
        fake_upstream.words = ["ok "]
        started = time.monotonic()
        r = post(agent, tracker.token(agent.node_id)["token"])
        assert r.status_code == 200 and time.monotonic() - started < 5
    finally:
        sock.close()
    assert "stopped reading" in agent.log()


# --- 3. response_format bounded -------------------------------------------------------------------------------


def nested_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def json_schema(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


REFUSED_FORMATS = {
    "larger than 16 KiB": json_schema({"type": "object", "description": "x" * 17000}),
    "deeper than 16 levels": json_schema(nested_schema(10)),
    "an unknown type": {"type": "grammar", "grammar": 'root ::= "a"'},
    "no type": {"json_schema": {"name": "answer", "schema": {}}},
    "json_schema without its object": {"type": "json_schema"},
    "json_schema that is not an object": {"type": "json_schema", "json_schema": "a string"},
    "a schema that is not an object": {"type": "json_schema", "json_schema": {"name": "a", "schema": [1, 2]}},
    "an unknown field": {"type": "json_object", "grammar": 'root ::= "a"'},
}


@pytest.mark.parametrize("case", list(REFUSED_FORMATS))
def test_a_hostile_response_format_is_400_and_never_forwarded(tracker, start_agent, fake_upstream, case):
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    r = post(agent, token, {"messages": [{"role": "user", "content": "hi"}], "response_format": REFUSED_FORMATS[case]})
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["code"] == "invalid_request" and "response_format" in error["message"]
    assert fake_upstream.requests == []


def test_a_response_format_nested_a_thousand_deep_is_400_not_500(tracker, start_agent, fake_upstream):
    """Around 970 levels the body still parses but the agent failed forwarding it (500, with a traceback), and
    below that it forwarded it; deeper, the body itself is refused as invalid JSON. Every depth is a 400."""
    agent = start_agent(fake_upstream.base)
    token = forged(tracker, agent)
    for depth in range(900, 1011, 5):
        deep = '{"a":' * depth + "1" + "}" * depth
        raw = '{"messages": [{"role": "user", "content": "hi"}], "response_format": ' + deep + "}"
        r = post(agent, token, raw=raw)
        assert r.status_code == 400, (depth, r.status_code, r.text[:200])
        assert error_of(r)["code"] in ("invalid_request", "invalid_json")
    assert fake_upstream.requests == []
    assert "Traceback" not in agent.log()


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        json_schema({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        {
            "type": "json_schema",
            "json_schema": {"name": "answer", "description": "d", "strict": True, "schema": nested_schema(5)},
        },
    ],
)
def test_an_ordinary_response_format_is_forwarded_as_it_is(tracker, start_agent, fake_upstream, response_format):
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    r = post(agent, token, {"messages": [{"role": "user", "content": "hi"}], "response_format": response_format})
    assert r.status_code == 200, r.text
    assert fake_upstream.requests[-1]["response_format"] == response_format


@pytest.mark.parametrize("case", ["larger than 16 KiB", "deeper than 16 levels", "an unknown type"])
def test_a_hostile_response_format_inside_a_sealed_request_is_400(rig, fake_upstream, case):
    from tests.node_agent.public_key_rig import error_code

    issued = rig.token()
    r = rig.post(issued, rig.seal(issued, params={"response_format": REFUSED_FORMATS[case]}))
    assert r.status_code == 400 and error_code(r) == "invalid_request", r.text
    assert "response_format" in r.json()["error"]["message"]
    assert fake_upstream.requests == []


# --- 4. malformed tokens ----------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_token_whose_header_is_deeply_nested_json_is_401_not_500(start_agent, fake_upstream):
    """A header segment of JSON nested thousands deep made the JSON parser raise RecursionError, which was a 500
    (a header that fits in a token: `[` x 3000). The attack as found, `{"a":` x 5000, is longer than any HTTP
    header aiohttp reads (8 KiB), so aiohttp refuses that request itself with a 400 before the agent sees it."""
    agent = start_agent(fake_upstream.base)
    payload = b64(b'{"jti": "x"}')

    def token(header: bytes) -> str:
        return f"{b64(header)}.{payload}.{b64(b'sig')}"

    too_long = post(agent, token(b'{"a":' * 5000 + b"1" + b"}" * 5000))
    assert too_long.status_code == 400
    for header in (
        b"[" * 3000,  # fits in a token (4096 characters) and reaches the JSON parser, which recurses 3000 deep
        b"[" * 1500 + b"]" * 1500,
        b'{"a":' * 480 + b"1" + b"}" * 480,  # deep, valid JSON, and not a token header
    ):
        r = post(agent, token(header))
        assert r.status_code == 401, (len(token(header)), r.status_code, r.text[:200])
        assert error_of(r)["code"] == "invalid_token"
    assert "Traceback" not in agent.log()


# --- 5. slow bodies and connection floods --------------------------------------------------------------------


def test_a_body_trickled_slowly_is_cut_off_after_the_body_timeout(tracker, start_agent, fake_upstream):
    """The attack: any valid token, then a body that arrives a byte at a time, held for ever. After
    --body-timeout the agent answers 408 request_timeout and closes the connection; the token is not spent."""
    agent = start_agent(fake_upstream.base, body_timeout=1.5)
    issued = tracker.token(agent.node_id)  # 3 requests
    sock = slow_body_connection(agent, issued["token"])
    started = time.monotonic()
    sock.settimeout(0.3)
    data = b""
    closed = False
    while time.monotonic() - started < 8:
        try:
            sock.sendall(b" ")  # one byte at a time, never enough
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    elapsed = time.monotonic() - started
    sock.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b'"request_timeout"' in data
    assert closed and 1.2 < elapsed < 5, elapsed
    for _ in range(3):  # a cut-off body cost nothing: all three requests are left
        assert post(agent, issued["token"]).status_code == 200


def test_connections_per_address_are_bounded(tracker, start_agent, fake_upstream):
    """The attack: hundreds of connections from one address, each trickling a body (the agent ran out of file
    descriptors). Beyond --max-connections-per-address a new connection is closed at once; once the slow ones are
    cut off (--body-timeout) the address may connect again. Loopback is exempt in production (relayed tasters
    all come from 127.0.0.1), so this test switches the exemption off with the test seam."""
    agent = start_agent(fake_upstream.base, max_connections_per_address=4, body_timeout=3, limit_loopback=1)
    token = tracker.token(agent.node_id)["token"]
    held = [slow_body_connection(agent, token) for _ in range(4)]
    try:
        time.sleep(0.3)  # the agent has accepted them
        extra = socket.create_connection(host_port(agent), timeout=10)
        closed, data = closed_by_peer(extra, within=2)
        extra.close()
        assert closed and data == b"", "a fifth connection from the same address was kept"
        for sock in held:  # the slow ones are cut off after the body timeout ...
            closed, data = closed_by_peer(sock, within=6)
            assert closed and data.startswith(b"HTTP/1.1 408"), data[:100]
    finally:
        for sock in held:
            sock.close()
    # ... and then the address is welcome again.
    assert wait_until(lambda: post(agent, token).status_code == 200, timeout=5)


def test_loopback_is_exempt_from_the_per_address_bound(tracker, start_agent, fake_upstream):
    """Behind a reverse proxy on the rig's machine every taster reaches the agent from 127.0.0.1: the bound must
    not lock them out. (Relayed tasters use no connection of the agent's: the tunnel serves them in process.)"""
    agent = start_agent(fake_upstream.base, max_connections_per_address=2)
    token = tracker.token(agent.node_id)["token"]
    held = [slow_body_connection(agent, token) for _ in range(4)]
    try:
        assert post(agent, token).status_code == 200
    finally:
        for sock in held:
            sock.close()


# --- 6. log floods ----------------------------------------------------------------------------------------------


def written_count(lines: list[str], message: str) -> int:
    """How many times `message` happened according to the log: once per line, or the repeats a count line says."""
    total = 0
    for line in lines:
        if message in line:
            total += int(line.split("(repeated ")[1].split()[0]) if "(repeated " in line else 1
    return total


def flood(agent, token: str, times: int, **request) -> list[int]:
    with requests.Session() as session:
        return [
            session.post(
                agent.v1 + "/chat/completions",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=10,
                **request,
            ).status_code
            for _ in range(times)
        ]


def test_a_flood_of_one_bad_request_is_logged_once_with_a_count(tracker, start_agent, fake_upstream):
    """500 identical hostile requests (a response_format nested 970 deep: a 500 and a traceback each before)
    write a handful of lines, and the count is written when the window ends."""
    agent = start_agent(fake_upstream.base, log_repeat_window=3)
    raw = '{"messages": [{"role": "user", "content": "hi"}], "response_format": ' + '{"a":' * 970 + "1" + "}" * 970
    before = len(agent.log().splitlines())
    assert set(flood(agent, forged(tracker, agent), 500, data=raw + "}")) == {400}
    assert wait_until(lambda: "repeated" in agent.log(), timeout=10)
    time.sleep(3.5)  # the last window's count
    lines = agent.log().splitlines()[before:]
    assert len(lines) <= 12, "\n".join(lines[:40])
    assert written_count(lines, "refused a request: 400 invalid_request") == 500, "\n".join(lines)


def test_a_flood_of_moderation_failures_is_logged_once_with_a_count(tracker, start_agent, fake_upstream, moderation):
    moderation.mode = "http_500"
    agent = start_agent(
        fake_upstream.base, moderation_endpoint=moderation.base + "/v1/moderations", log_repeat_window=3
    )
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    assert set(flood(agent, tracker.token(agent.node_id)["token"], 300, data=body)) == {451}
    assert wait_until(lambda: "repeated" in agent.log(), timeout=10)
    time.sleep(3.5)
    hook_lines = [line for line in agent.log().splitlines() if "moderation hook failed" in line]
    assert len(hook_lines) <= 6, "\n".join(hook_lines[:20])
    assert written_count(hook_lines, "moderation hook failed") == 300, "\n".join(hook_lines)

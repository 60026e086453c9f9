"""`luckrig-relay` stopped with SIGTERM while a taster's answer streams through it (relay/server.py's drain): it exits 0
within its unit's TimeoutStopSec (deploy/luckrig-relay@.service), and an answer longer than the drain ends with an
error event and `data: [DONE]`, never a cut in the middle of an event. Through a tunnel (a relayed rig: its agent is
told GOAWAY, and the rig stops generating) and through the gateway from a direct rig."""

import json
import re
import signal
import threading
import time

import pytest
import requests

from tests.processes import ROOT

pytestmark = pytest.mark.relay

UNIT = (ROOT / "deploy" / "luckrig-relay@.service").read_text()
STOP_BOUND = float(re.search(r"^TimeoutStopSec=(\d+)", UNIT, re.M).group(1))


def stream_then_stop(relay, url: str, authorization: str, model: str = "m") -> tuple[list[str], list, float]:
    """Stream an answer from `url`; once three chunks have come, SIGTERM the relay. Returns the answer's lines, how
    the taster's read ended, and the seconds the relay took to exit."""
    lines: list[str] = []
    ended: list = []

    def taste() -> None:
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        try:
            headers = {"Authorization": authorization}
            with requests.post(url, json=body, headers=headers, stream=True, timeout=STOP_BOUND + 10) as r:
                lines.extend(line for line in r.iter_lines(decode_unicode=True) if line)
            ended.append("closed")
        except requests.RequestException as exc:
            ended.append(exc)

    taster = threading.Thread(target=taste)
    taster.start()
    deadline = time.monotonic() + 20
    while sum(line.startswith("data: {") for line in lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(line.startswith("data: {") for line in lines) >= 3, lines  # it is streaming through the relay
    signalled = time.monotonic()
    relay.proc.send_signal(signal.SIGTERM)
    relay.proc.wait(timeout=STOP_BOUND)
    elapsed = time.monotonic() - signalled
    taster.join(15)
    return lines, ended, elapsed


def assert_ended_cleanly(lines: list[str], ended: list) -> None:
    assert ended == ["closed"]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["error"]["code"] == "upstream_unavailable"


@pytest.fixture
def long_answers(fake_upstream):
    fake_upstream.words = [f"w{i} " for i in range(120)]
    fake_upstream.delay = 0.5  # a minute of answer: longer than any drain
    return fake_upstream


def test_sigterm_with_a_tunnelled_stream_ends_it_cleanly_and_exits_in_time(
    tracker, start_relay, start_agent, long_answers
):
    relay = start_relay.start()
    agent = start_agent(long_answers.base, relayed=True)
    token = tracker.token(agent.node_id)["token"]
    lines, ended, elapsed = stream_then_stop(relay, agent.v1 + "/chat/completions", f"Bearer {token}")
    assert relay.proc.returncode == 0 and elapsed < STOP_BOUND
    assert_ended_cleanly(lines, ended)
    assert "GOAWAY" in agent.log()
    deadline = time.monotonic() + 10
    while long_answers.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert long_answers.cancelled >= 1  # the rig stopped generating the answer nobody can receive


def test_sigterm_with_a_gateway_stream_from_a_direct_rig_ends_it_cleanly_and_exits_in_time(
    tracker, start_relay, start_agent, long_answers
):
    relay = start_relay.start()
    agent = start_agent(long_answers.base)  # direct: the gateway carries its answer over HTTP, not a tunnel
    key = tracker.contributor()
    url = relay.base + "/v1/chat/completions"
    lines, ended, elapsed = stream_then_stop(relay, url, f"Bearer {key}", model=f"rig:{agent.node_id}")
    assert relay.proc.returncode == 0 and elapsed < STOP_BOUND
    assert_ended_cleanly(lines, ended)
    assert "The relay is restarting" in lines[-2]

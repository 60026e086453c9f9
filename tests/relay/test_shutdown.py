"""`luckrig-relay` stopped with SIGTERM while a taster's answer streams through it (relay/server.py's drain): it exits 0
within its unit's TimeoutStopSec (deploy/luckrig-relay@.service), and an answer longer than the drain ends with an
error event and `data: [DONE]`, never a cut in the middle of an event. Through a tunnel (a relayed rig: its agent is
told GOAWAY, and the rig stops generating) and through the gateway from a direct rig."""

import json
import signal
import threading
import time

import pytest
import requests

from tests.processes import unit_stop_timeout

pytestmark = pytest.mark.relay


STOP_BOUND = unit_stop_timeout("luckrig-relay@.service")
NODE_STOP_BOUND = unit_stop_timeout("luckrig-node.service")


def stream_then_stop(process, url: str, authorization: str, model: str = "m") -> tuple[list[str], list, float]:
    """Stream an answer from `url`; once three chunks have come, SIGTERM `process` (a relay's or an agent's).
    Returns the answer's lines, how the taster's read ended, and the seconds the process took to exit."""
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
    process.proc.send_signal(signal.SIGTERM)
    process.proc.wait(timeout=STOP_BOUND)
    elapsed = time.monotonic() - signalled
    taster.join(15)
    return lines, ended, elapsed


def assert_ended_cleanly(lines: list[str], ended: list, code: str = "upstream_unavailable") -> None:
    assert ended == ["closed"]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["error"]["code"] == code


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


def test_an_agent_stopped_mid_stream_ends_the_answer_through_its_tunnel_and_the_relay_stops_sending_to_it(
    tracker, start_relay, start_agent, long_answers
):
    """The home rig's case: its agent gets SIGTERM (deploy/luckrig-node.service, whose TimeoutStopSec is the bound
    here too) while a taster's answer streams through the relay. The answer ends with the agent's `shutting_down`
    event, carried through the tunnel; the relay was told GOAWAY, so the next taster is told at once."""
    relay = start_relay.start()
    agent = start_agent(long_answers.base, relayed=True, drain_timeout=2)
    token = tracker.token(agent.node_id)["token"]
    lines, ended, elapsed = stream_then_stop(agent, agent.v1 + "/chat/completions", f"Bearer {token}")
    assert agent.proc.returncode == 0 and elapsed < NODE_STOP_BOUND
    assert_ended_cleanly(lines, ended, code="shutting_down")
    r = requests.post(
        agent.v1 + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "node_offline"
    assert relay.proc.poll() is None

"""`luckrig-relay` stopped with SIGTERM while a taster's answer streams through it (relay/server.py's drain): it exits 0
within its unit's TimeoutStopSec (deploy/luckrig-relay@.service); its agent is told GOAWAY; the answer, longer than
the drain, ends with an error event and `data: [DONE]` (never a cut in the middle of an event); and the rig stops
generating it."""

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


def test_sigterm_with_a_stream_in_flight_ends_it_cleanly_and_exits_in_time(
    tracker, start_relay, start_agent, fake_upstream
):
    relay = start_relay.start()
    fake_upstream.words = [f"w{i} " for i in range(120)]
    fake_upstream.delay = 0.5  # a minute of answer: longer than any drain
    agent = start_agent(fake_upstream.base, relayed=True)
    token = tracker.token(agent.node_id)["token"]
    lines: list[str] = []
    ended: list = []

    def taste() -> None:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        try:
            with requests.post(
                agent.v1 + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                stream=True,
                timeout=STOP_BOUND + 10,
            ) as r:
                for line in r.iter_lines(decode_unicode=True):
                    if line:
                        lines.append(line)
            ended.append("closed")
        except requests.RequestException as exc:
            ended.append(exc)

    taster = threading.Thread(target=taste)
    taster.start()
    deadline = time.monotonic() + 20
    while sum(line.startswith("data: {") for line in lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(line.startswith("data: {") for line in lines) >= 3  # it is streaming through the relay

    signalled = time.monotonic()
    relay.proc.send_signal(signal.SIGTERM)
    relay.proc.wait(timeout=STOP_BOUND)
    elapsed = time.monotonic() - signalled
    taster.join(15)

    assert relay.proc.returncode == 0 and elapsed < STOP_BOUND
    assert ended == ["closed"]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_unavailable"
    assert "GOAWAY" in agent.log()
    deadline = time.monotonic() + 10
    while fake_upstream.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake_upstream.cancelled >= 1  # the rig stopped generating the answer nobody can receive

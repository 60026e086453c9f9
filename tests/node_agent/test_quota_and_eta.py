"""Issue 12, at the agent: a limited token keeps its promise of N answers (a per-request output cap), every 429 says
when to retry and what would earn more, the queue ETA comes from measured service time, and a rig is no longer
`busy` once its queue drains, even when the monitor was mid-cycle."""

import asyncio
import re
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
import requests
from aiohttp import web

from tests.node_agent.fakes import ThreadedApp, wait_until
from tests.node_agent.test_queue_and_failures import health, raw_request, read_until
from tests.node_agent.test_queue_order import Taster
from tests.node_agent.test_refusals import claims_for, sign_with_tracker_key
from tests.node_agent.test_taste import taste
from tests.processes import ROOT

pytestmark = pytest.mark.agent


def ask(agent, token: str, **extra) -> requests.Response:
    return requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], **extra},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def assert_says_when_and_how(response: requests.Response, tracker) -> dict:
    assert response.status_code == 429
    error = response.json()["error"]
    retry = int(response.headers["Retry-After"])
    assert error["retry_after_sec"] == retry
    resets = datetime.fromisoformat(error["resets_at"].replace("Z", "+00:00"))
    assert abs((resets - datetime.now(UTC)).total_seconds() - retry) < 5
    assert "contributor tier" in error["earn_more"] and f"{tracker.base}/contribute/" in error["earn_more"]
    return error


def test_a_limited_token_keeps_its_promise_of_three_answers(tracker, start_agent, fake_upstream):
    """Before: 3 requests and a 256-token budget, and the first answer with no max_tokens took all 256."""
    fake_upstream.words = [f"w{i} " for i in range(400)]  # a model that would talk past any cap
    agent = start_agent(fake_upstream.base)
    issued = tracker.token(agent.node_id)
    limits = issued["limits"]
    assert limits["max_requests"] == 3 and limits["max_output_tokens"] == 256
    assert limits["max_output_tokens_total"] == 768
    for _ in range(3):
        answer = ask(agent, issued["token"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 256
        assert answer.json()["luckrig"]["truncated"] is True
    assert fake_upstream.requests[-1]["max_tokens"] == 256
    refused = ask(agent, issued["token"])
    error = assert_says_when_and_how(refused, tracker)
    assert error["code"] == "token_exhausted" and error["retry_after_sec"] == 0
    assert "3 requests are used up" in error["message"] and "/api/tokens" in error["message"]


def test_a_request_asking_for_less_gets_what_it_asked(tracker, start_agent, fake_upstream):
    fake_upstream.words = [f"w{i} " for i in range(400)]
    agent = start_agent(fake_upstream.base)
    token = tracker.token(agent.node_id)["token"]
    assert ask(agent, token, max_tokens=10).json()["usage"]["completion_tokens"] == 10
    assert ask(agent, token, max_tokens=5000).json()["usage"]["completion_tokens"] == 256  # the cap holds


def test_a_token_with_its_total_is_held_to_both_the_per_request_cap_and_the_total(tracker, start_agent, fake_upstream):
    """max_output_tokens is the per-request cap and max_output_tokens_total the whole budget. Before, the agent read
    max_output_tokens as the budget: this token's answers were held to 100 // 5 = 20 tokens."""
    fake_upstream.words = [f"w{i} " for i in range(400)]
    agent = start_agent(fake_upstream.base)
    claims = claims_for(
        tracker, agent, tier="limited", max_requests=5, max_output_tokens=100, max_output_tokens_total=250
    )
    token = sign_with_tracker_key(tracker, claims)
    got = [ask(agent, token, max_tokens=5000).json()["usage"]["completion_tokens"] for _ in range(2)]
    assert got == [100, 100]  # each request clamped to max_output_tokens
    assert fake_upstream.requests[-1]["max_tokens"] == 100
    assert ask(agent, token).json()["usage"]["completion_tokens"] == 50  # what is left of the total
    refused = ask(agent, token)
    error = assert_says_when_and_how(refused, tracker)
    assert error["code"] == "token_exhausted" and "250 output tokens are used up" in error["message"]
    assert "5 more requests of up to 100 output tokens each" in error["message"]


def test_a_token_without_the_total_keeps_todays_share(tracker, start_agent, fake_upstream):
    """A token from a tracker that sends no max_output_tokens_total: max_output_tokens is its whole budget, and each
    request gets an equal share of it, as before."""
    fake_upstream.words = [f"w{i} " for i in range(400)]
    agent = start_agent(fake_upstream.base)
    token = sign_with_tracker_key(tracker, claims_for(tracker, agent, max_requests=3, max_output_tokens=90))
    got = [ask(agent, token, max_tokens=5000).json()["usage"]["completion_tokens"] for _ in range(3)]
    assert got == [30, 30, 30]
    error = ask(agent, token).json()["error"]
    assert error["code"] == "token_exhausted" and "3 requests are used up" in error["message"]


def test_a_full_queue_says_when_a_place_opens_and_what_earns_more(tracker, start_agent, fake_upstream):
    fake_upstream.delay = 0.2
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=1)
    first = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(first, b"w0")
    second = raw_request(agent, tracker.token(agent.node_id)["token"])
    assert wait_until(lambda: health(agent)["waiting"] == 1, timeout=5)
    try:
        refused = ask(agent, tracker.token(agent.node_id)["token"], stream=True)
        error = assert_says_when_and_how(refused, tracker)
        assert error["code"] == "queue_full" and error["retry_after_sec"] >= 1
        assert "ahead of limited tasters" in error["earn_more"]
    finally:
        first.close()
        second.close()


def test_the_eta_a_waiter_is_told_is_within_a_factor_of_its_real_wait(tracker, start_agent, fake_upstream):
    """Before: the ETA came from a moving average that started at 10 s and ignored how long the request ahead had
    been running; a taster was told 2 s and waited 6.6 s. Real waits here, against the fake upstream's pace."""
    fake_upstream.words = [f"w{i} " for i in range(20)]
    fake_upstream.rate = 8  # 20 chunks: about 2.5 s a generation
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=4)
    assert ask(agent, tracker.token(agent.node_id)["token"], stream=True).status_code == 200  # measured once
    ahead = Taster(agent, tracker.token(agent.node_id)["token"])
    ahead.start()
    assert wait_until(lambda: ahead.first_content_at is not None, timeout=10)
    time.sleep(0.8)  # the request ahead is part-way through: what is left of it is less than a whole one
    waiters = []
    for _ in range(2):
        taster = Taster(agent, tracker.token(agent.node_id)["token"])
        sent = time.monotonic()
        taster.start()
        waiters.append((taster, sent))
        assert wait_until(lambda t=taster: t.comments, timeout=5)
    for taster, _ in waiters:
        taster.join(30)
    ahead.join(30)
    for position, (taster, sent) in enumerate(waiters, start=1):
        told_position, told_eta = taster.comments[0]
        truth = taster.first_content_at - sent
        assert told_position == position
        assert truth / 2 <= told_eta <= truth * 2 + 0.5, (position, told_eta, truth)


class SlowHealth(ThreadedApp):
    """A rig's health endpoint that takes `pause` seconds to answer: it holds a monitor cycle open, between the
    cycle's read of every node and its write. `probed` counts the probes that started."""

    def __init__(self, pause: float):
        super().__init__()
        self.pause, self.probed = pause, 0

    def build(self):
        app = web.Application()
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request):
        self.probed += 1
        await asyncio.sleep(self.pause)
        return web.json_response({"ok": True})


def test_busy_ends_when_the_queue_drains_even_in_the_middle_of_a_monitor_cycle(tracker, start_agent, fake_upstream):
    """Before: the monitor read `queue_active` when its cycle began and wrote the status it derived when the cycle
    ended; a queue that drained meanwhile (reported over the agent link) was turned back to `busy`, until the
    agent's next heartbeat. The agent, its link, the tracker and the monitor are all real processes here."""
    with SlowHealth(pause=1.5) as slow:
        # Another rig whose probe holds every cycle open for 1.5 s (it heartbeats, so each cycle probes it).
        other_id, other_secret = tracker.register(tracker.contributor(), slow.base + "/v1")
        beat = {"schema_version": 1, "queue": {"active": 0, "waiting": 0, "max_active": 1}, "agent_version": "t"}
        requests.post(
            f"{tracker.base}/api/nodes/{other_id}/heartbeat",
            json=beat,
            headers={"Authorization": f"Bearer {other_secret}"},
            timeout=10,
        ).raise_for_status()
        # The monitor believes every heartbeat fresh for a long while, so that only the queue decides busy/available.
        env = {**tracker.env, "HEARTBEAT_INTERVAL_SEC": "600", "MONITOR_PROBE_TIMEOUT_SEC": "4"}
        monitor = subprocess.Popen(
            [sys.executable, "manage.py", "monitor", "--interval", "0.5"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_until(lambda: slow.probed >= 1, timeout=60), "the monitor did not start"
            fake_upstream.delay = 0.2
            # One slot, and an agent that heartbeats rarely: only its queue reports can end `busy` in time.
            agent = start_agent(fake_upstream.base, max_active=1, heartbeat_interval=60)
            taster = raw_request(agent, tracker.token(agent.node_id)["token"])
            read_until(taster, b"w0")
            assert wait_until(lambda: tracker.node(agent.node_id)["health"]["status"] == "busy", timeout=5)
            # The next cycle has read the node (busy) and is probing: the queue drains now.
            probes = slow.probed
            assert wait_until(lambda: slow.probed > probes, timeout=10)
            taster.close()
            assert wait_until(lambda: health(agent)["active"] == 0, timeout=5)
            # The cycle after that has begun probing, so the drained cycle's write is done.
            assert wait_until(lambda: slow.probed > probes + 1, timeout=10)
            node = tracker.node(agent.node_id)
            assert node["queue"]["active"] == 0
            assert node["health"]["status"] == "available", node["health"]
        finally:
            monitor.terminate()
            monitor.wait(20)


def test_the_cli_says_when_a_refusal_lifts_and_what_earns_more(tracker, start_agent, fake_upstream, tmp_path):
    fake_upstream.delay = 0.2
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=0)
    holder = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(holder, b"w0")
    try:
        proc = taste(tracker, agent.node_id, tmp_path, wait=False)
        _, err = proc.communicate(timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 1
    assert "the rig refused (429)" in err and "(queue_full)" in err
    assert re.search(r"Retry after \d+ s \(at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", err), err
    assert "contributor tier" in err and f"{tracker.base}/contribute/" in err
    # The limits line says what a token allows, requests and output together.
    out, err = taste(tracker, agent.node_id, tmp_path)
    assert "limited tier: 3 requests of up to 256 output tokens each" in err

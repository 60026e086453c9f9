"""Issue 12, at the agent: a limited token keeps its promise of N answers (a per-request output cap), every 429 says
when to retry and what would earn more, the queue ETA comes from measured service time, and a rig is no longer
`busy` once its queue drains, even when the monitor was mid-cycle."""

import json
import re
import time
from datetime import UTC, datetime

import pytest
import requests
from django.utils import timezone

from tests.node_agent.fakes import wait_until
from tests.node_agent.test_queue_and_failures import health, raw_request, read_until
from tests.node_agent.test_queue_order import Taster
from tests.node_agent.test_refusals import claims_for, sign_with_tracker_key
from tests.node_agent.test_taste import taste

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


def answer_time(agent, tracker) -> float:
    """One whole answer, streamed to its end: how long it took, as the taster measures it."""
    sent = time.monotonic()
    assert ask(agent, tracker.token(agent.node_id)["token"], stream=True).status_code == 200
    return time.monotonic() - sent


def test_the_eta_a_waiter_is_told_is_close_to_its_real_wait(tracker, start_agent, fake_upstream):
    """Before: the ETA came from a moving average that started at 10 s and ignored how long the request ahead had
    been running; a taster was told 2 s and waited 6.6 s. Real waits here, against the fake upstream's pace."""
    fake_upstream.words = [f"w{i} " for i in range(20)]
    fake_upstream.rate = 8  # 20 chunks: about 2.5 s a generation
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=4)
    whole = answer_time(agent, tracker)  # the rig has measured one answer
    ahead = raw_request(agent, tracker.token(agent.node_id)["token"])
    # The request ahead is past half-way (12 of its 20 chunks): what is left of it is much less than a whole one.
    assert b"w11 " in read_until(ahead, b"w11 ")
    waiters = []
    for _ in range(2):
        taster = Taster(agent, tracker.token(agent.node_id)["token"])
        sent = time.monotonic()
        taster.start()
        waiters.append((taster, sent))
        assert wait_until(lambda t=taster: t.comments, timeout=5)
    for taster, _ in waiters:
        taster.join(30)
    ahead.close()
    for position, (taster, sent) in enumerate(waiters, start=1):
        told_position, told_eta = taster.comments[0]
        truth = taster.first_content_at - sent
        assert told_position == position
        # Whole seconds (±0.5), and the pace of a loaded machine: within a second, or a quarter of the wait.
        assert abs(told_eta - truth) <= max(1.0, truth / 4), (position, told_eta, truth, whole)
    # The second waiter waits for the rest of the one ahead, then a whole answer: it is told about that much more.
    assert waiters[1][0].comments[0][1] - waiters[0][0].comments[0][1] >= round(whole) - 1


@pytest.mark.parametrize("ending", ["the taster hangs up", "the upstream fails"])
def test_answers_that_did_not_finish_do_not_pull_the_eta_down(tracker, start_agent, fake_upstream, ending):
    """Before: a request whose taster hung up after a fraction of a second (or whose upstream failed) was a
    measurement of how long answers take, and a few of them made the ETA a fraction of the real wait."""
    fake_upstream.words = [f"w{i} " for i in range(12)]
    fake_upstream.rate = 3  # 12 chunks: about 3.7 s a generation
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=4)
    whole = answer_time(agent, tracker)
    for _ in range(3):  # three answers that end at their first chunks
        if ending == "the taster hangs up":
            quitter = raw_request(agent, tracker.token(agent.node_id)["token"])
            read_until(quitter, b"w0")
            quitter.close()
        else:
            fake_upstream.mode, fake_upstream.fail_at = "die_mid_stream", 1
            failed = ask(agent, tracker.token(agent.node_id)["token"], stream=True)
            assert "upstream_error" in failed.text
            fake_upstream.mode = "ok"
        assert wait_until(lambda: health(agent)["active"] == 0, timeout=10)
    # A fresh answer takes the slot, and a waiter lines up behind it at once.
    ahead = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(ahead, b"w0")
    waiter = Taster(agent, tracker.token(agent.node_id)["token"])
    waiter.start()
    try:
        assert wait_until(lambda: waiter.comments, timeout=5)
        told = waiter.comments[0][1]
        # About a whole answer is ahead of it. With the short ones counted, the average was under half of one.
        assert told >= whole * 0.6, (told, whole)
    finally:
        ahead.close()
        waiter.join(30)


@pytest.mark.django_db
def test_busy_ends_when_the_queue_drains_in_the_middle_of_a_monitor_cycle(api, owner, monkeypatch):
    """Before: the monitor read `queue_active` when its cycle began and wrote the status it derived when the cycle
    ended; a queue that drained meanwhile (reported over the agent link) was turned back to `busy`, until the
    agent's next heartbeat. The cycle runs here with its probes replaced by the queue draining."""
    from core.urlguard import FetchResult
    from nodes import monitor as node_monitor
    from nodes import services as node_services
    from nodes.models import Node
    from tests import factories
    from tracker import monitor

    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret, active=1, max_active=1)
    assert Node.objects.get(pk=node.pk).status == "busy"

    read_nodes = node_monitor.this_cycle

    def queue_drains_after_the_read(nodes, now):
        # The cycle has read every node (this one with its queue busy); before its write, the agent link says
        # the queue is empty now.
        chosen = read_nodes(nodes, now)
        node_services.record_queue(
            node=Node.objects.get(pk=node.pk), queue={"active": 0, "waiting": 0, "max_active": 1}
        )
        return chosen

    async def probes(targets, **kwargs):  # every rig answers its probe
        body = json.dumps({"node_id": node.pk}).encode()
        return {node_id: FetchResult(ok=True, status=200, latency_ms=5, body=body, error="") for node_id, _ in targets}

    monkeypatch.setattr(node_monitor, "this_cycle", queue_drains_after_the_read)
    monkeypatch.setattr(node_monitor, "probe_all", probes)
    monitor.run_cycle(timezone.now(), jitter_sec=0)
    stored = Node.objects.get(pk=node.pk)
    assert stored.queue_active == 0
    assert stored.status == "available"


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

"""What a waiter sees of the line: its `: queue position=N eta_sec=S` comments count down as the requests ahead
finish (position 1 = next in line: running generations are not counted, as in the public queue view where they
are position 0), first come first served within a tier, and an ETA that follows the rig's measured pace."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.node_agent.fakes import FakeOpenAI, wait_until
from tests.node_agent.test_queue_and_failures import body, health, raw_request, read_until

pytestmark = pytest.mark.agent


class Taster(threading.Thread):
    """A streaming request in a thread: keeps its queue comments (position, eta) and when its answer began."""

    def __init__(self, agent, token: str):
        super().__init__(daemon=True)
        self.agent, self.token = agent, token
        self.comments: list[tuple[int, int]] = []
        self.first_content_at: float | None = None
        self.done = False

    def run(self):
        with requests.post(
            self.agent.v1 + "/chat/completions",
            data=body(),
            stream=True,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        ) as r:
            for raw in r.iter_lines():
                line = raw.decode()
                if line.startswith(": queue position="):
                    fields = dict(part.split("=") for part in line[2:].split()[1:])
                    self.comments.append((int(fields["position"]), int(fields["eta_sec"])))
                elif line.startswith("data: {") and '"content":"w' in line and self.first_content_at is None:
                    self.first_content_at = time.monotonic()
                elif line == "data: [DONE]":
                    self.done = True


def queue_up(tracker, agent, count: int) -> list[Taster]:
    """`count` limited tasters, each one in line before the next arrives (arrival order = list order)."""
    tasters = []
    for n in range(1, count + 1):
        taster = Taster(agent, tracker.token(agent.node_id)["token"])
        taster.start()
        tasters.append(taster)
        assert wait_until(lambda n=n: health(agent)["waiting"] == n, timeout=5)
    return tasters


@pytest.fixture
def paced(fake_upstream):
    fake_upstream.delay = 0.05  # 12 chunks: ~0.6 s a generation
    return fake_upstream


def test_each_waiters_position_counts_down_as_the_ones_ahead_finish(tracker, start_agent, paced):
    agent = start_agent(paced.base, max_active=1, max_waiting=8)
    blocker = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(blocker, b"w0")  # generating: the line forms behind it
    first, second, third = tasters = queue_up(tracker, agent, 3)
    for taster in tasters:
        taster.join(20)
    blocker.close()
    assert all(t.done for t in tasters)
    assert [p for p, _ in first.comments] == [1]
    assert [p for p, _ in second.comments] == [2, 1]
    assert [p for p, _ in third.comments] == [3, 2, 1]
    # The ETA shrinks with the position (and with the pace the rig measures meanwhile).
    etas = [eta for _, eta in third.comments]
    assert etas == sorted(etas, reverse=True) and etas[0] > etas[-1] >= 1


def test_limited_tasters_are_served_in_the_order_they_arrived(tracker, start_agent, paced):
    agent = start_agent(paced.base, max_active=1, max_waiting=8)
    blocker = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(blocker, b"w0")
    tasters = queue_up(tracker, agent, 4)
    for taster in tasters:
        taster.join(20)
    blocker.close()
    assert all(t.done for t in tasters)
    starts = [t.first_content_at for t in tasters]
    assert starts == sorted(starts)
    # One after the other, not together: each began once the one before it had finished (~0.6 s later).
    assert all(b - a > 0.3 for a, b in zip(starts, starts[1:], strict=False)), starts


def eta_after_warming_up(tracker, agent, upstream: FakeOpenAI, slots: int) -> int:
    """Run `slots` generations at the upstream's pace, fill every slot, then ask: what ETA does a new waiter get?"""
    tokens = [tracker.token(agent.node_id)["token"] for _ in range(slots * 2 + 1)]

    def ask(token):
        return requests.post(
            agent.v1 + "/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(slots) as pool:
        assert list(pool.map(ask, tokens[:slots])) == [200] * slots
    blockers = [raw_request(agent, token) for token in tokens[slots : slots * 2]]
    assert wait_until(lambda: health(agent)["active"] == slots, timeout=5)
    waiter = raw_request(agent, tokens[-1])
    try:
        line = read_until(waiter, b"\n\n").decode()
        return int(line.split("eta_sec=")[1].split()[0])
    finally:
        for sock in [*blockers, waiter]:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_the_eta_follows_the_measured_pace_of_the_rig(tracker, start_agent):
    """Two rigs, one upstream twice as slow as the other: after a dozen answers each, a new waiter's ETA is
    about one generation time on each rig, so the slow rig's is about twice the fast rig's (never the
    placeholder the agent starts with)."""
    slots = 12  # a dozen generations at once: the measured average settles within the test (EMA, 0.3 a sample)
    with FakeOpenAI() as fast, FakeOpenAI() as slow:
        fast.words = slow.words = ["a ", "b ", "c ", "d "]
        fast.delay, slow.delay = 0.5, 1.0  # 2 s and 4 s a generation
        rigs = [(start_agent(up.base, max_active=slots, max_waiting=4), up) for up in (fast, slow)]
        with ThreadPoolExecutor(2) as pool:
            fast_eta, slow_eta = pool.map(lambda rig: eta_after_warming_up(tracker, *rig, slots), rigs)
    assert 1 <= fast_eta <= 3, fast_eta
    assert 3 <= slow_eta <= 6, slow_eta
    assert 1.5 <= slow_eta / fast_eta <= 2.5, (fast_eta, slow_eta)

"""The agent's websocket link to the tracker, end to end with real processes."""

import asyncio
import json
import threading

import aiohttp
import pytest
import requests

from tests.node_agent.fakes import wait_until

pytestmark = pytest.mark.agent


def watch_queue(tracker, node_id, seconds, out: list):
    """A browser's view: subscribe to the node's public queue websocket and collect messages."""

    async def run():
        url = tracker.base.replace("http://", "ws://") + f"/ws/queue/{node_id}/"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            try:
                async with asyncio.timeout(seconds):
                    async for msg in ws:
                        out.append(json.loads(msg.data))
            except TimeoutError:
                pass

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    return thread


def test_queue_changes_reach_subscribers_at_once_over_the_link(tracker, start_agent, fake_upstream):
    fake_upstream.delay = 0.2
    # Heartbeats every 30 s: anything the subscriber sees sooner came over the link as a queue change.
    agent = start_agent(fake_upstream.base, heartbeat_interval=30)
    seen: list = []
    watcher = watch_queue(tracker, agent.node_id, 6, seen)
    assert wait_until(lambda: len(seen) >= 1, timeout=5)  # the snapshot
    token = tracker.token(agent.node_id)["token"]
    r = requests.post(
        agent.v1 + "/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    watcher.join(10)
    actives = [m["active"] for m in seen if m.get("type") == "queue"]
    assert 1 in actives and actives[-1] == 0  # it went busy, then free again, live
    busy = next(m for m in seen if m.get("active") == 1)
    assert busy["entries"][0]["state"] == "generating" and busy["entries"][0]["ticket"].startswith("t_")
    assert "jti" not in json.dumps(busy)


def test_a_node_whose_agent_dies_turns_unavailable_within_one_interval(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    tracker.token(agent.node_id)
    agent.proc.kill()
    agent.proc.wait(10)

    def refused():
        r = requests.post(f"{tracker.base}/api/tokens", json={"node_id": agent.node_id}, timeout=10)
        return r.status_code == 409

    # Tracker interval here: 2 s. Without the link drop the node would stay available for 3 intervals.
    assert wait_until(refused, timeout=4)

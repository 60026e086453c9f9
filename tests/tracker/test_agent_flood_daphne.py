"""A flood of agent-link messages against a real tracker process (Daphne): the tracker answers others at once
meanwhile, and records no more heartbeats than the node's budget (each recorded heartbeat is one `heartbeat_ack`
reply, so the replies count the database writes)."""

import asyncio
import json
import time

import aiohttp


async def flood(base: str, secret: str, n: int) -> tuple[list[dict], float]:
    ws_url = base.replace("http://", "ws://", 1) + "/ws/agent/"
    beat = json.dumps({"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 1}})
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, headers=headers) as link:
        await link.receive_json(timeout=5)  # tracker_keys
        await link.receive_json(timeout=5)  # filter_rules
        latencies: list[float] = []

        async def visitor():
            for _ in range(20):
                started = time.monotonic()
                async with session.get(base + "/api/health", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    assert r.status == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)

        watching = asyncio.create_task(visitor())
        for _ in range(n):
            await link.send_str(beat)
        replies = []
        while True:
            try:
                msg = await link.receive(timeout=2)
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            replies.append(json.loads(msg.data))
        await watching
        return replies, max(latencies)


def test_a_flood_of_link_heartbeats_leaves_the_tracker_responsive_and_writes_bounded(tracker):
    node_id, secret = tracker.register(tracker.contributor(), "http://127.0.0.1:9/v1")
    replies, slowest = asyncio.run(flood(tracker.base, secret, 2000))
    acks = [r for r in replies if r["type"] == "heartbeat_ack"]
    errors = [r for r in replies if r["type"] == "error"]
    assert 1 <= len(acks) <= 10, len(acks)
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert len(acks) + sum(e.get("dropped", 1) for e in errors) == 2000
    assert slowest < 1.0, slowest
    log = (tracker.data_dir / "tracker.log").read_text(errors="replace")
    assert "Traceback" not in log

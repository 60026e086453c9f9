"""Benchmark: the live queue view under load. N websocket subscribers watch one node's queue while its agent
(linked over /ws/agent/) sends R queue changes per second for D seconds; every change carries its send time
and a sequence number, so each subscriber's delivery latency and lost messages are counted exactly.

Run 1: one Daphne process (SQLite, in-memory channel layer). Run 2: two Daphne processes on PostgreSQL and a
private Redis, the agent on one and the subscribers split across both (the broadcast crosses Redis).

    .venv/bin/python bench/queue_fanout.py [--subscribers 1000] [--rate 100] [--seconds 10] [--skip-redis]
"""

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.processes import (  # noqa: E402
    daphne,
    migrate,
    new_postgres_database,
    private_redis,
    register_node,
    tracker_env,
)


async def run_load(
    agent_base: str, sub_bases: list[str], node_id: str, secret: str, subscribers: int, rate: float, seconds: float
) -> dict:
    latencies: list[float] = []
    received: list[set] = [set() for _ in range(subscribers)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        socks = []
        for i in range(subscribers):
            base = sub_bases[i % len(sub_bases)].replace("http://", "ws://")
            ws = await session.ws_connect(f"{base}/ws/queue/{node_id}/", max_msg_size=0)
            await ws.receive_json(timeout=30)  # the snapshot
            socks.append(ws)

        async def reader(i, ws):
            # A string search instead of a JSON parse: the client shares the two cores with the tracker.
            async for msg in ws:
                at = msg.data.find('"ticket":"b')
                if at >= 0:
                    seq_text, sent_ns = msg.data[at + 11 : msg.data.index('"', at + 11)].split("_")
                    latencies.append((time.time_ns() - int(sent_ns)) / 1e6)
                    received[i].add(int(seq_text))

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(socks)]
        agent = await session.ws_connect(
            agent_base.replace("http://", "ws://") + "/ws/agent/", headers={"Authorization": f"Bearer {secret}"}
        )
        await agent.receive_json(timeout=10)
        await agent.receive_json(timeout=10)
        total = int(rate * seconds)
        started = time.monotonic()
        for seq in range(total):
            ahead = started + seq / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            await agent.send_json(
                {
                    "type": "queue",
                    "queue": {
                        "active": 1,
                        "waiting": seq % 5,
                        "max_active": 1,
                        "eta_sec": 1,
                        "entries": [
                            {"ticket": f"b{seq}_{time.time_ns()}", "position": 0, "state": "generating", "since": now}
                        ],
                    },
                }
            )
        send_elapsed = time.monotonic() - started
        await asyncio.sleep(5)  # let the last deliveries arrive
        for ws in socks:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await ws.close()
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await agent.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    expected = set(range(total))
    lost = sum(len(expected - got) for got in received)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "changes": total,
        "sent_per_sec": total / send_elapsed,
        "deliveries": len(latencies),
        "expected": total * subscribers,
        "lost": lost,
        "p50": q[49],
        "p99": q[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = tracker_env(f"sqlite:///{tmp / 'one.sqlite3'}", tmp, RATELIMIT_ENABLE="0", LOG_LEVEL="ERROR")
        migrate(env)
        with daphne(env) as base:
            node_id, secret = register_node(base)
            rows.append(
                (
                    "one process, in-memory layer",
                    asyncio.run(run_load(base, [base], node_id, secret, args.subscribers, args.rate, args.seconds)),
                )
            )
        if not args.skip_redis and shutil.which("redis-server"):
            with new_postgres_database() as db, private_redis() as (redis_port, _redis):
                redis_url = f"redis://127.0.0.1:{redis_port}/0"
                env = tracker_env(
                    db,
                    tmp,
                    REDIS_URL=redis_url,
                    RATELIMIT_ENABLE="0",
                    LOG_LEVEL="ERROR",
                    TRACKER_SIGNING_KEY_FILE=str(tmp / "k.pem"),
                )
                migrate(env)
                with daphne(env) as a, daphne(env) as b:
                    node_id, secret = register_node(a)
                    rows.append(
                        (
                            "two processes, PostgreSQL + Redis",
                            asyncio.run(
                                run_load(a, [a, b], node_id, secret, args.subscribers, args.rate, args.seconds)
                            ),
                        )
                    )
    print(
        f"\n{args.subscribers} subscribers, {args.rate:g} queue changes/s for {args.seconds:g} s; 2 cores shared by "
        "the subscribers' client, the agent and the tracker\n"
    )
    print("| setup | changes sent | sent/s | deliveries | lost | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        print(
            f"| {label} | {r['changes']} | {r['sent_per_sec']:.0f} | {r['deliveries']}/{r['expected']} | "
            f"{r['lost']} | {r['p50']:.1f} | {r['p99']:.1f} |"
        )


if __name__ == "__main__":
    main()

"""Benchmark: the live queue view under load. N websocket subscribers watch one node's queue while an agent
(linked over /ws/agent/, in a process of its own) sends R queue changes per second for D seconds. Every change
carries its sequence number and send time in its ticket, so each subscriber's view can be checked exactly.

A queue message is a complete snapshot, and the tracker coalesces them (latest state wins, nodes/fanout.py):
a snapshot superseded before it could be sent is skipped, not lost. So the table says, per setup:

- final state: subscribers holding the agent's last snapshot within CONVERGE_WAIT_SEC of it being sent (must
  be all of them), and the worst time from that last change to its arrival;
- staleness: for every change k and every subscriber, the time from k being sent until the subscriber holds a
  state at least as new as k (k itself or a later snapshot). Its maximum X means that no subscriber was ever
  more than X ms behind the agent. A change not caught up with by the end counts as stale until then, and the
  figures are printed as lower bounds ("≥");
- out of order (a snapshot older than one already received) and errors (sockets closed or failed during the
  run): must be 0;
- raw counts, labelled as such: snapshots delivered of changes x subscribers, and the send-to-receive latency
  of the snapshots that were delivered;
- CPU: each tracker process's, and the subscribers' client's, from the agent's start to the end of the wait,
  in % of one core.

Run 1: one Daphne process (SQLite, in-memory channel layer). Run 2: two Daphne processes on PostgreSQL and a
private Redis, the agent on one and the subscribers split across both (the broadcast crosses Redis).

    .venv/bin/python bench/queue_fanout.py [--subscribers 1000] [--rate 100] [--seconds 10] [--skip-redis]
"""

import argparse
import asyncio
import contextlib
import json
import os
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

CONVERGE_WAIT_SEC = 5  # after the last change, how long subscribers get to reach the final state


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def agent(base: str, secret: str, rate: float, seconds: float) -> dict:
    """The agent's side, run in its own process so that its pacing does not depend on the subscribers' client.
    It does not coalesce (the real agent sends at most ~10 changes a second): the tracker must cope anyway."""
    async with aiohttp.ClientSession() as session:
        link = await session.ws_connect(
            base.replace("http://", "ws://") + "/ws/agent/", headers={"Authorization": f"Bearer {secret}"}
        )
        await link.receive_json(timeout=10)  # tracker_keys
        await link.receive_json(timeout=10)  # filter_rules
        total = int(rate * seconds)
        sent_ns = []
        started = time.monotonic()
        for seq in range(total):
            ahead = started + seq / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            sent_ns.append(time.time_ns())
            entry = {"ticket": f"b{seq}_{sent_ns[-1]}", "position": 0, "state": "generating", "since": now}
            queue = {"active": 1, "waiting": seq % 5, "max_active": 1, "eta_sec": 1, "entries": [entry]}
            await link.send_json({"type": "queue", "queue": queue})
        elapsed = time.monotonic() - started
        print("sent", flush=True)  # the benchmark's cue: the wait for the last state starts now
        await asyncio.sleep(CONVERGE_WAIT_SEC + 1)  # stay linked: a dropped link would change the node's state
        await link.close()
    return {"changes": total, "sent_per_sec": total / elapsed, "sent_ns": sent_ns}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def daphne_pids() -> list[int]:
    """The tracker processes this script started (children whose command line runs daphne)."""
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if not proc.name.isdigit() or b"daphne" not in (proc / "cmdline").read_bytes():
                continue
            if int((proc / "stat").read_text().rpartition(")")[2].split()[1]) == os.getpid():
                pids.append(int(proc.name))
    return sorted(pids)


async def run_load(
    agent_base: str, sub_bases: list[str], node_id: str, secret: str, subscribers: int, rate: float, seconds: float
) -> dict:
    total = int(rate * seconds)
    # Per subscriber, in arrival order: the sequence numbers received and when (ns). Parsing is a string search,
    # not JSON: the client shares the two cores with the tracker.
    seqs: list[list[int]] = [[] for _ in range(subscribers)]
    times: list[list[int]] = [[] for _ in range(subscribers)]
    errors: list[str] = []
    statuses = 0
    sample_at: list[tuple[int, str]] = []  # (sent ns, the tracker's "at") for subscriber 0: ingestion lag
    closing = False
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        socks = []
        for i in range(subscribers):
            base = sub_bases[i % len(sub_bases)].replace("http://", "ws://")
            ws = await session.ws_connect(f"{base}/ws/queue/{node_id}/", max_msg_size=0)
            await ws.receive_json(timeout=30)  # the snapshot on connect
            socks.append(ws)
        progress(f"{subscribers} subscribers connected")

        async def reader(i, ws):
            nonlocal statuses
            mine_seq, mine_t = seqs[i], times[i]
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time_ns()
                data = msg.data
                at = data.find('"ticket":"b')
                if at >= 0:
                    seq_text, sent_text = data[at + 11 : data.index('"', at + 11)].split("_")
                    seq = int(seq_text)
                    mine_seq.append(seq)
                    mine_t.append(now)
                    if i == 0:
                        sample_at.append((int(sent_text), json.loads(data)["at"]))
                elif '"type":"status"' in data:
                    statuses += 1
            if not closing:
                errors.append(f"subscriber {i}: closed ({ws.close_code})")

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(socks)]
        pids = daphne_pids()
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        client_before = time.process_time()
        wall_before = time.monotonic()
        progress(f"agent sending {rate:g} changes/s for {seconds:g} s")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--as-agent", agent_base, secret, str(rate), str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        # Wait for the agent's last change to be sent, then (bounded) for every subscriber to hold it.
        await asyncio.wait_for(proc.stdout.readline(), timeout=3 * seconds + 60)
        deadline = time.monotonic() + CONVERGE_WAIT_SEC
        while time.monotonic() < deadline and any(not s or s[-1] != total - 1 for s in seqs):
            await asyncio.sleep(0.05)
        ended_ns = time.time_ns()
        progress("load done")
        cpu_after = {pid: cpu_seconds(pid) for pid in pids}
        client_cpu = time.process_time() - client_before
        window = time.monotonic() - wall_before
        closing = True
        stdout = await proc.stdout.read()
        await proc.wait()
        for ws in socks:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    sent = json.loads(stdout)
    return summarise(total, seqs, times, sent["sent_ns"], ended_ns, errors, statuses, sample_at) | {
        "sent_per_sec": sent["sent_per_sec"],
        "tracker_cpu": [cpu_after[p] - cpu_before[p] for p in pids],
        "client_cpu": client_cpu,
        "window": window,
    }


def summarise(total, seqs, times, sent_ns, ended_ns, errors, statuses, sample_at) -> dict:
    final, out_of_order, delivered = 0, 0, 0
    staleness: list[float] = []  # ms, one per (change, subscriber)
    latency: list[float] = []  # ms, one per delivered snapshot
    converge: list[float] = []  # ms, last change sent -> received, one per subscriber that got it
    unconverged_changes = 0
    last_sent = sent_ns[-1]
    for got, at in zip(seqs, times, strict=True):
        delivered += len(got)
        out_of_order += sum(1 for a, b in zip(got, got[1:], strict=False) if b < a)
        for seq, t in zip(got, at, strict=True):
            latency.append((t - sent_ns[seq]) / 1e6)
        if got and got[-1] == total - 1:
            final += 1
            converge.append((at[got.index(total - 1)] - last_sent) / 1e6)  # its first arrival
        # Staleness of change k: first arrival of a snapshot >= k, minus k's send time.
        j = 0
        best = -1
        for k in range(total):
            while best < k and j < len(got):
                best = max(best, got[j])
                j += 1
            if best >= k:
                staleness.append((at[j - 1] - sent_ns[k]) / 1e6)
            else:  # not caught up when the run ended: at least this stale (the quantiles become lower bounds)
                staleness.append((ended_ns - sent_ns[k]) / 1e6)
                unconverged_changes += 1

    def q(values, p):
        if not values:
            return float("nan")
        values = sorted(values)
        return values[min(len(values) - 1, int(p / 100 * len(values)))]

    lag = [(datetime.fromisoformat(a.replace("Z", "+00:00")).timestamp() * 1e9 - s) / 1e6 for s, a in sample_at]
    return {
        "changes": total,
        "subscribers": len(seqs),
        "final": final,
        "converge_max": max(converge) if converge else float("nan"),
        "stale_p50": q(staleness, 50),
        "stale_p99": q(staleness, 99),
        "stale_max": max(staleness) if staleness else float("nan"),
        "never_caught_up": unconverged_changes,
        "out_of_order": out_of_order,
        "errors": errors,
        "statuses": statuses,
        "delivered": delivered,
        "lat_p50": q(latency, 50),
        "lat_p99": q(latency, 99),
        "ingest_p50": statistics.median(lag) if lag else float("nan"),
    }


def main() -> None:
    if sys.argv[1:2] == ["--as-agent"]:
        base, secret, rate, seconds = sys.argv[2:6]
        print(json.dumps(asyncio.run(agent(base, secret, float(rate), float(seconds)))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--skip-one", action="store_true", help="only the two-process run")
    parser.add_argument("--logs", type=Path, help="keep the trackers' logs (at INFO) in this directory")
    args = parser.parse_args()
    rows = []
    load = (args.subscribers, args.rate, args.seconds)
    level = "INFO" if args.logs else "ERROR"

    def log(name):
        return args.logs / f"{name}.log" if args.logs else None

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_one:
            env = tracker_env(f"sqlite:///{tmp / 'one.sqlite3'}", tmp, RATELIMIT_ENABLE="0", LOG_LEVEL=level)
            migrate(env)
            with daphne(env, log_path=log("one")) as base:
                node_id, secret = register_node(base)
                rows.append(
                    ("one process, in-memory layer", asyncio.run(run_load(base, [base], node_id, secret, *load)))
                )
        if not args.skip_redis and shutil.which("redis-server"):
            with new_postgres_database() as db, private_redis() as (redis_port, _redis):
                env = tracker_env(
                    db,
                    tmp,
                    REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                    RATELIMIT_ENABLE="0",
                    LOG_LEVEL=level,
                    TRACKER_SIGNING_KEY_FILE=str(tmp / "k.pem"),
                )
                migrate(env)
                with daphne(env, log_path=log("a")) as a, daphne(env, log_path=log("b")) as b:
                    node_id, secret = register_node(a)
                    rows.append(
                        ("two processes, PostgreSQL + Redis", asyncio.run(run_load(a, [a, b], node_id, secret, *load)))
                    )
    print(
        f"\n{args.subscribers} subscribers, {args.rate:g} queue changes/s for {args.seconds:g} s; 2 cores shared by "
        "the subscribers' client, the agent and the tracker\n"
    )
    print(
        "| setup | sent/s | final state (≤ 5 s) | last change arrived ≤ ms | staleness p50 ms | p99 ms | max ms "
        "| out of order | errors | raw: snapshots delivered / changes × N | raw: delivered latency p50 ms | p99 ms "
        "| tracker CPU % | client CPU % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        cpu = " + ".join(f"{100 * c / r['window']:.0f}" for c in r["tracker_cpu"])
        at_least = "≥ " if r["never_caught_up"] else ""  # some changes never caught up with: lower bounds
        print(
            f"| {label} | {r['sent_per_sec']:.0f} | {r['final']} / {r['subscribers']} | {r['converge_max']:.0f} | "
            f"{at_least}{r['stale_p50']:.1f} | {at_least}{r['stale_p99']:.1f} | {at_least}{r['stale_max']:.1f} | "
            f"{r['out_of_order']} | "
            f"{len(r['errors'])} | {r['delivered']:,} / {r['changes'] * r['subscribers']:,} | "
            f"{r['lat_p50']:.1f} | {r['lat_p99']:.1f} | {cpu} | {100 * r['client_cpu'] / r['window']:.0f} |"
        )
    for label, r in rows:
        print(
            f"\n{label}: tracker ingestion lag p50 {r['ingest_p50']:.1f} ms (agent send -> the tracker's `at`, "
            f"ms precision); changes some subscriber never caught up with: {r['never_caught_up']}; "
            f"status messages: {r['statuses']}"
        )
        for error in r["errors"][:5]:
            print(f"  error: {error}")


if __name__ == "__main__":
    main()

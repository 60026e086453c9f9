"""Benchmark: what the gateway (relay/gateway.py) adds, side by side in one run: a real tracker (Daphne), one
`luckrig-relay` process, relayed agents as processes of their own in front of the suite's fake upstreams, and the
load generator (aiohttp) on the same machine.

1. Time to first token through the gateway (`model: "rig:<id>"`, the caller's token already cached by the relay)
   against the relay's per-rig path `/n/<id>/v1` with a pre-minted token and the agent's own port: the same rig,
   the same fast synthetic upstream, requests interleaved so that a busy moment hits every path alike.
2. The first request of a new contributor key (the relay asks the tracker for a token) against the same key's
   second request (cached); beside them, the tracker's mint alone, asked by this client.
3. 1,000 requests routed by model name across 20 rigs of capacities (`max_active`) 1 to 4: each rig's share
   against its capacity-weighted share.

    .venv/bin/python bench/gateway.py [--requests 100] [--keys 20] [--rigs 20] [--routed 1000] [--concurrency 1]
        [--token-requests 1000000]

The tracker runs on SQLite (PostgreSQL when DATABASE_URL names one, as in the process tests); the figures and what
they say are in docs/benchmarks.md, "The gateway".
"""

import argparse
import asyncio
import collections
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay import one_stream, start_fake  # noqa: E402
from relay.catalog import SLOW_SHARE  # noqa: E402
from tests.agents import AgentStarter, RelayStarter, running_tracker  # noqa: E402

TRACKER_ENV = {
    "CONTRIBUTOR_MAX_OUTPUT_TOKENS": "100000",
    "LIMITED_MAX_OUTPUT_TOKENS": "100000",
    "CONTRIBUTOR_TOKENS_PER_DAY": "10000000",
    "LIMITED_TOKENS_PER_DAY": "10000000",
    # 21 agents beating every second would cost the tracker (and so the two cores) more than the traffic measured.
    "HEARTBEAT_INTERVAL_SEC": "5",
}
AGENT_HEARTBEAT_SEC = 4
CAPACITIES = (1, 2, 3, 4)  # max_active of the routed rigs, in turn
ROUTED_MODEL = "bench-routed"
# The catalog once ranked by speed classes (powers of SPEED_STEP), and the routed rigs' upstream is paced in the middle
# of one: 1.5 ** 17.5 ≈ 1,206 chunks/s, another class only below 985 or above 1,477. The catalog now sets apart only
# rigs under SLOW_SHARE of the fastest; the pace and the classes stay, to compare runs with the earlier ones.
SPEED_STEP = 1.5
ROUTED_RATE = round(SPEED_STEP**17.5)
ROUTED_CHUNKS = 30
HI = [{"role": "user", "content": "go"}]


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def gateway_tokens(relay_base: str) -> int:
    """Tokens the tracker has issued for this relay's gateway callers (its /metrics counter)."""
    for line in requests.get(relay_base + "/metrics", timeout=5).text.splitlines():
        if line.startswith("luckrig_relay_gateway_tokens_total"):
            return int(float(line.split()[-1]))
    raise RuntimeError("no luckrig_relay_gateway_tokens_total in the relay's /metrics")


async def timed_mint(session, tracker, relay, node_id: str, key: str) -> float:
    """The tracker's mint alone, as the relay asks for it (POST /api/relays/<id>/tokens), timed by this client."""
    started = time.perf_counter()
    async with session.post(
        f"{tracker.base}/api/relays/{relay.relay_id}/tokens",
        json={"node_id": node_id, "client_ip": "127.0.0.1", "contributor_key": key},
        headers={"Authorization": f"Bearer {relay.secret}"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        await resp.read()
    return time.perf_counter() - started


async def routed(session, url: str, key: str, body: dict) -> str:
    """One streamed request by model through the gateway; the rig that answered (its header, which the final
    chunk must confirm)."""
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        raw = await resp.read()
        assert resp.status == 200, raw[:500]
    node = resp.headers["X-LuckRig-Node"]
    assert f'"node_id":"{node}"'.encode() in raw, "the answer names another rig than its header"
    return node


# --- 1 and 2: time to first token ---------------------------------------------------------------------------


async def ttft_side_by_side(agent, relay, tracker, key: str, n: int, chunks: int, per_token: int) -> dict:
    gw = relay.base + "/v1/chat/completions"
    paths = {
        "straight": (agent.base + "/v1/chat/completions", None, {"model": "bench"}),
        "relay": (agent.public + "/v1/chat/completions", None, {"model": "bench"}),
        "gateway": (gw, key, {"model": f"rig:{agent.node_id}"}),
    }
    minted = {"token": None, "left": 0}

    def credential_for(cred):
        """The gateway's caller sends its key; the per-rig paths a pre-minted token, minted anew (outside the timed
        request) when its requests are used up."""
        if cred is not None:
            return cred
        if minted["left"] == 0:
            minted["token"], minted["left"] = tracker.token(agent.node_id, key=key)["token"], per_token
        minted["left"] -= 1
        return minted["token"]

    times = {name: [] for name in paths}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for url, cred, extra in paths.values():  # warm up every path (the gateway's token is minted here)
            for _ in range(3):
                await one_stream(session, url, credential_for(cred), {**extra, "stream": True, "messages": HI})
        minted_before = gateway_tokens(relay.base)
        for i in range(n):
            # Interleaved, in a rotating order, so that neither drift nor "who goes first" favours a path.
            names = list(paths)
            names = names[i % 3 :] + names[: i % 3]
            for name in names:
                url, cred, extra = paths[name]
                cred = credential_for(cred)
                ttft, _, got = await one_stream(session, url, cred, {**extra, "stream": True, "messages": HI})
                assert got == chunks, (name, got)
                times[name].append(ttft * 1000)
        minted_during = gateway_tokens(relay.base) - minted_before
    return {"times": times, "minted_during": minted_during}


async def first_request_of_new_keys(agent, relay, tracker, keys: list[str], mint_keys: list[str]) -> dict:
    gw = relay.base + "/v1/chat/completions"
    body = {"model": f"rig:{agent.node_id}", "stream": True, "messages": HI}
    first, second, mint = [], [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await one_stream(session, gw, keys[0], body)  # a connection to the relay, as the other figures have
        before = gateway_tokens(relay.base)
        for new_key, other_key in zip(keys[1:], mint_keys, strict=False):
            first.append((await one_stream(session, gw, new_key, body))[0] * 1000)
            second.append((await one_stream(session, gw, new_key, body))[0] * 1000)
            mint.append(await timed_mint(session, tracker, relay, agent.node_id, other_key) * 1000)
        minted = gateway_tokens(relay.base) - before
    return {"first": first, "second": second, "mint": mint, "minted": minted}


# --- 3: routing by model ------------------------------------------------------------------------------------


def start_routed_rigs(tracker, starter: AgentStarter, upstream: str, count: int) -> list:
    owner = tracker.contributor()

    def start(i: int):
        return starter.start(
            upstream,
            key=owner,
            relayed=True,
            register={"model_name": ROUTED_MODEL, "quantization": "Q4_1", "gpu": f"Bench GPU {i:02d}"},
            max_active=CAPACITIES[i % len(CAPACITIES)],
            heartbeat_interval=AGENT_HEARTBEAT_SEC,
        )

    # A few at a time: twenty interpreters starting at once on two cores miss the starter's deadlines.
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(start, range(count)))


def catalog(tracker, relay) -> dict[str, dict]:
    answer = requests.get(
        f"{tracker.base}/api/relays/{relay.relay_id}/catalog",
        headers={"Authorization": f"Bearer {relay.secret}"},
        timeout=10,
    ).json()
    return {r["node_id"]: r for r in answer["rigs"]}


def wait_listed(relay, node_ids: list[str], seconds: float = 30) -> None:
    """Until the relay's own catalog (polled every 5 s) lists every routed rig."""
    deadline = time.monotonic() + seconds
    while True:
        listed = {m["id"] for m in requests.get(relay.base + "/v1/models", timeout=10).json()["data"]}
        if all(f"rig:{n}" in listed for n in node_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay's catalog never listed {[n for n in node_ids if f'rig:{n}' not in listed]}")
        time.sleep(0.5)


def warm_up(tracker, relay, key: str, node_ids: list[str], n: int, concurrency: int, seconds: float = 90) -> dict:
    """Route `n` requests by model, then more until the tracker's catalog has a measured speed for every routed rig
    (from the relay's witness reports; an unmeasured rig counts as fast, so it gets the traffic meanwhile), then wait
    one of the relay's catalog polls, so that the measured run routes on those figures."""
    counts = collections.Counter()
    deadline = time.monotonic() + seconds
    batch = n
    while True:
        counts += asyncio.run(route_many(relay, key, batch, concurrency))[0]
        rigs = catalog(tracker, relay)
        missing = [n for n in node_ids if not rigs.get(n, {}).get("tok_per_sec_p50")]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"rigs never measured: {missing}")
        time.sleep(1)
        batch = len(node_ids)
    time.sleep(6)  # the relay polls the catalog every 5 s
    return {"counts": dict(counts), "catalog": catalog(tracker, relay)}


async def route_many(relay, key: str, n: int, concurrency: int) -> tuple[collections.Counter, float]:
    url = relay.base + "/v1/chat/completions"
    body = {"model": ROUTED_MODEL, "stream": True, "messages": HI}
    counts: collections.Counter = collections.Counter()
    todo = iter(range(n))

    async def worker(session):
        for _ in todo:
            counts[await routed(session, url, key, body)] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return counts, time.perf_counter() - started


class CatalogWatch(threading.Thread):
    """Samples the tracker's catalog (what the relay polls every 5 s) while the routed requests run: how often it
    shows each rig with every slot taken (active + waiting >= max_active)."""

    def __init__(self, tracker, relay, every: float = 0.25):
        super().__init__(daemon=True)
        self.tracker, self.relay, self.every = tracker, relay, every
        self.samples = 0
        self.full: collections.Counter = collections.Counter()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            for node_id, rig in catalog(self.tracker, self.relay).items():
                queue = rig.get("queue") or {}
                if (queue.get("active") or 0) + (queue.get("waiting") or 0) >= (queue.get("max_active") or 1):
                    self.full[node_id] += 1
            self.samples += 1


def speed_class(speed) -> str:
    return "unmeasured" if not speed else str(math.floor(math.log(speed, SPEED_STEP)))


# --- the run ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per path (part 1)")
    parser.add_argument("--chunks", type=int, default=200, help="content chunks per answer (part 1)")
    parser.add_argument("--rate", type=float, default=2000, help="synthetic upstream chunks per second (part 1)")
    parser.add_argument("--keys", type=int, default=20, help="new contributor keys (part 2)")
    parser.add_argument("--rigs", type=int, default=20, help="routed rigs (part 3)")
    parser.add_argument("--routed", type=int, default=1000, help="requests routed by model (part 3)")
    parser.add_argument("--warmup", type=int, default=100, help="routed requests before the measured ones")
    parser.add_argument("--concurrency", type=int, default=1, help="routed requests in flight at once (part 3)")
    parser.add_argument(
        "--token-requests",
        type=int,
        default=1_000_000,
        help="requests a token holds (the tiers' MAX_REQUESTS; production: 3 limited, 30 contributor). The default "
        "never runs out, so that part 1's gateway token stays cached; the tracker keeps one relay timing sample per "
        "token, so this is also how often the routed rigs' measured speeds can change",
    )
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            result = run_all(args, tmp)
        except BaseException:
            kept = Path(tempfile.mkdtemp(prefix="luckrig-bench-gateway-"))
            for log in tmp.glob("*.log"):
                shutil.copy(log, kept)
            print(f"bench failed; the processes' logs are in {kept}", file=sys.stderr)
            raise
    result["elapsed_sec"] = round(time.monotonic() - started)
    report(args, result)


def run_all(args, tmp: Path) -> dict:
    procs = []
    requests_per_token = str(args.token_requests)
    env = {**TRACKER_ENV, "CONTRIBUTOR_MAX_REQUESTS": requests_per_token, "LIMITED_MAX_REQUESTS": requests_per_token}
    with running_tracker(tmp, **env) as tracker:
        relays, agents = RelayStarter(tracker, tmp), AgentStarter(tracker, tmp)
        try:
            relay = relays.start(rate_per_min=1_000_000, rate_burst=100_000)
            fake, fake_url = start_fake(args.chunks, 0, args.rate)
            procs.append(fake)
            agent = agents.start(
                fake_url, relayed=True, register={"model_name": "bench-ttft"}, heartbeat_interval=AGENT_HEARTBEAT_SEC
            )
            key = tracker.contributor()

            # 1. added TTFT, token cached
            ttft = asyncio.run(
                ttft_side_by_side(agent, relay, tracker, key, args.requests, args.chunks, args.token_requests)
            )

            log(f"part 1 done: {ttft_summary(ttft)}")

            # 2. the first request of a new key
            keys = [tracker.contributor() for _ in range(2 * args.keys + 1)]
            new, for_mint = keys[: args.keys + 1], keys[args.keys + 1 :]
            first = asyncio.run(first_request_of_new_keys(agent, relay, tracker, new, for_mint))

            log(f"part 2 done: first p50 {pct(first['first'], 50):.2f} second p50 {pct(first['second'], 50):.2f}")

            # 3. routing by model across many rigs
            routed_fake, routed_url = start_fake(ROUTED_CHUNKS, 0, ROUTED_RATE)
            procs.append(routed_fake)
            t0 = time.monotonic()
            rigs = start_routed_rigs(tracker, agents, routed_url, args.rigs)
            startup = time.monotonic() - t0
            node_ids = [r.node_id for r in rigs]
            log(f"{len(rigs)} rigs started in {startup:.1f} s")
            client = tracker.contributor()
            wait_listed(relay, node_ids)
            warm = warm_up(tracker, relay, client, node_ids, args.warmup, args.concurrency)
            before = warm["catalog"]
            log(f"warm-up: {sum(warm['counts'].values())} routed requests")
            watch = CatalogWatch(tracker, relay)
            watch.start()
            counts, elapsed = asyncio.run(route_many(relay, client, args.routed, args.concurrency))
            watch.done.set()
            watch.join()
            after = catalog(tracker, relay)
            capacity = {r.node_id: CAPACITIES[i % len(CAPACITIES)] for i, r in enumerate(rigs)}
            total = sum(capacity.values())
            routing = [
                {
                    "node_id": n,
                    "max_active": capacity[n],
                    "got": counts.get(n, 0),
                    "expected": args.routed * capacity[n] / total,
                    "tok_per_sec_before": before.get(n, {}).get("tok_per_sec_p50"),
                    "tok_per_sec_after": after.get(n, {}).get("tok_per_sec_p50"),
                    "shown_full": watch.full.get(n, 0) / max(1, watch.samples),
                }
                for n in node_ids
            ]
            return {
                "ttft": ttft,
                "first": first,
                "routing": routing,
                "routing_other": sum(v for k, v in counts.items() if k not in capacity),
                "routing_elapsed_sec": elapsed,
                "warmup": warm["counts"],
                "rig_startup_sec": startup,
                "relay_rss_mb": rss_mb(relay.proc.pid),
            }
        finally:
            agents.stop_all()
            relays.stop_all()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(20)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ttft_summary(ttft: dict) -> str:
    return ", ".join(f"{name} p50 {pct(v, 50):.2f} ms" for name, v in ttft["times"].items())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def verdict(ok: bool) -> str:
    return "holds" if ok else "MISSED"


def report(args, result: dict) -> None:
    json.dump(result, sys.stderr, default=str)
    print(file=sys.stderr)
    times = result["ttft"]["times"]
    first = result["first"]
    rows = [
        ("TTFT straight to the agent (its own port, pre-minted token)", times["straight"]),
        ("TTFT through the relay, `/n/<id>/v1` (pre-minted token)", times["relay"]),
        ("TTFT through the gateway, `rig:<id>` (token cached)", times["gateway"]),
        ("TTFT through the gateway, a new key's first request (token minted)", first["first"]),
        ("TTFT through the gateway, the same key's second request (cached)", first["second"]),
        ("the tracker's mint alone (`POST /api/relays/<id>/tokens`, from the client)", first["mint"]),
    ]
    print(
        f"\n{args.requests} sequential streamed requests per path, interleaved ({args.chunks} chunks, paced at "
        f"{args.rate:g}/s); {args.keys} new contributor keys; {args.token_requests:,} requests per token; one "
        f"machine (2 cores) for the client, tracker (Daphne, SQLite), relay, agents and fake upstreams\n"
    )
    print("| measure | p50 ms | p95 ms | n |")
    print("|---|---:|---:|---:|")
    for label, values in rows:
        print(f"| {label} | {pct(values, 50):.2f} | {pct(values, 95):.2f} | {len(values)} |")
    added_p50 = pct(times["gateway"], 50) - pct(times["relay"], 50)
    added_p95 = pct(times["gateway"], 95) - pct(times["relay"], 95)
    paired = statistics.median(g - r for g, r in zip(times["gateway"], times["relay"], strict=True))
    mint_more = pct(first["first"], 50) - pct(first["second"], 50)
    print()
    print(
        f"- gateway vs `/n/<id>/v1`, token cached: added TTFT p50 {added_p50:.2f} ms, p95 {added_p95:.2f} ms "
        f"(median of paired differences {paired:.2f} ms); tokens minted during these requests: "
        f"{result['ttft']['minted_during']}. Target ≤ 2 ms at p50: {verdict(added_p50 <= 2)}"
    )
    print(
        f"- a new key's first request: +{mint_more:.2f} ms at p50 over its second "
        f"(p95 +{pct(first['first'], 95) - pct(first['second'], 95):.2f} ms); {first['minted']} tokens minted for "
        f"{len(first['first'])} new keys. Target ≤ 50 ms more: {verdict(mint_more <= 50)}"
    )
    routing = result["routing"]
    worst = max(routing, key=lambda r: abs(r["got"] - r["expected"]) / r["expected"])
    worst_dev = 100 * (worst["got"] - worst["expected"]) / worst["expected"]
    print(
        f"- routing: {args.routed} requests by model ({args.concurrency} at a time) over {len(routing)} rigs in "
        f"{result['routing_elapsed_sec']:.1f} s; worst rig {worst_dev:+.1f} % from its capacity-weighted share; "
        f"{result['routing_other']} answered by another rig. Target within ±20 %: {verdict(abs(worst_dev) <= 20)}"
    )
    classes = collections.Counter(speed_class(r["tok_per_sec_before"]) for r in routing)
    # The catalog tries rigs under SLOW_SHARE of the fastest last: the others are the "equals" that share by capacity.
    fastest = max((r["tok_per_sec_before"] or 0 for r in routing), default=0)
    equals = [r for r in routing if not r["tok_per_sec_before"] or r["tok_per_sec_before"] >= SLOW_SHARE * fastest]
    served, weight = sum(r["got"] for r in equals), sum(r["max_active"] for r in equals)
    changed = sum(r["tok_per_sec_before"] != r["tok_per_sec_after"] for r in routing)
    spread = max(abs(r["got"] / max(1, served) - r["max_active"] / weight) / (r["max_active"] / weight) for r in equals)
    print(
        f"- former speed classes in the catalog when the measured run began (rigs per class): "
        f"{dict(sorted(classes.items()))}; the {len(equals)} rigs not under {SLOW_SHARE:.0%} of the fastest took "
        f"{served} of the {args.routed} requests, each within {100 * spread:.1f} % of its capacity-weighted share of "
        f"those; rigs whose measured speed changed during the measured run: {changed}"
    )
    print(
        f"- {len(routing)} relayed agents started in {result['rig_startup_sec']:.1f} s; relay peak RSS "
        f"{result['relay_rss_mb']:.0f} MB; whole run {result['elapsed_sec']} s"
    )
    print(
        "\n| rig | max_active | requests | capacity-weighted share | deviation | tok/s p50 (speed class) | "
        "catalog showed it full |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in routing:
        dev = 100 * (r["got"] - r["expected"]) / r["expected"]
        speed = r["tok_per_sec_before"]
        print(
            f"| {r['node_id']} | {r['max_active']} | {r['got']} | {r['expected']:.1f} | {dev:+.1f} % | "
            f"{speed if speed is None else round(speed)} ({speed_class(speed)}) | {100 * r['shown_full']:.0f} % |"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

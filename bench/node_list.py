"""Benchmark: GET /api/nodes on a big registry beside a trivial endpoint, under Daphne and under gunicorn, in one run.

Seeds 10,000 nodes and 100,000 health samples into a fresh SQLite file, then serves it twice, one stack after
the other: one Daphne process (ASGI), and gunicorn's sync workers (WSGI, production's deploy/gunicorn.conf.py
with its worker count: WEB_CONCURRENCY, else cores x 2 + 1). Each endpoint is driven for a fixed time at a fixed
concurrency from an aiohttp client on the same machine; one table shows p50/p99 latency, requests per second,
the ratio to the trivial endpoint's floor in the same stack, and errors, the two stacks side by side. The endpoints
are driven in turn, one-second slices each, so that the machine's drift meets them all alike.

With `--churn N`, another process writes N heartbeat-like updates a second to random rigs while the endpoints
are driven (each its own transaction: `last_heartbeat_at`, `last_seen_at`, the queue), as 10,000 agents heartbeating
every 15 s would (667 a second): the list then meets rows that changed since a process last wrote them.

    .venv/bin/python bench/node_list.py [--nodes 10000] [--samples 100000] [--seconds 8] [--concurrency 16]
                                        [--churn 0]
"""

import argparse
import asyncio
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENDPOINTS = [
    ("GET /api/health (the floor)", "/api/health"),
    ("GET /api/nodes (first page, 50)", "/api/nodes"),
    ("GET /api/nodes?gpu=rtx&min_vram=12&tag=home", "/api/nodes?gpu=rtx&min_vram=12&tag=home"),
    ("GET /api/nodes?page_size=200", "/api/nodes?page_size=200"),
]


def seed(db_url: str, data_dir: Path, n_nodes: int, n_samples: int) -> None:
    os.environ.update(
        {"DATABASE_URL": db_url, "DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "luckrig_site.settings"}
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", "--noinput", verbosity=0)
    from nodes import rarity
    from nodes import services as node_services
    from nodes.models import Contributor, HealthSample, Node
    from tracker import credentials

    rng = random.Random(42)
    gpus = [
        "RTX 3090",
        "RTX 4090",
        "RTX 3060",
        "GTX 1080 Ti",
        "Tesla P40",
        "Apple M2 Max",
        "RX 7900 XTX",
        "Raspberry Pi 5",
        "Arc A770",
        "RTX 5090",
        "Tesla K80",
        "A100",
    ]
    models = [
        "Llama-3.1-8B-Instruct",
        "Qwen2.5-14B-Instruct",
        "Mistral-7B",
        "Phi-3-mini",
        "gemma-2-9b",
        "Qwen3-35B-A3B",
        "llama3.2-1B",
        "DeepSeek-R1-Distill-Qwen-7B",
    ]
    quants = ["Q4_K_M", "Q5_K_M", "Q8_0", "IQ2_XS", "Q4_0", "F16"]
    now = timezone.now()
    owners = [
        Contributor(
            id=f"c_bench{i:05d}",
            handle=f"bench{i}" if i % 3 else None,
            key_hash=credentials.digest(f"lrk_bench{i}"),
        )
        for i in range(500)
    ]
    Contributor.objects.bulk_create(owners)
    nodes = []
    for i in range(n_nodes):
        gpu, model, quant = rng.choice(gpus), rng.choice(models), rng.choice(quants)
        tags = rng.sample(["home", "showcase", "moe", "long-context", "cpu", "old-gpu", "metal"], k=rng.randint(0, 3))
        seen = now - timedelta(seconds=rng.randrange(5, 3600))
        nodes.append(
            Node(
                id=f"bench-{i:05d}",
                owner=owners[i % len(owners)],
                display_name=rng.choice(["", f"Rig {i}", f"{gpu} in the attic"]),
                endpoint_url=f"https://rig{i}.example.com/v1",
                health_url=f"https://rig{i}.example.com/health",
                model_name=model,
                quantization=quant,
                gpu=gpu,
                vram_gb=(vram := rng.choice([None, 0, 8, 12, 16, 24, 32, 48, 80])),
                vram_sort_key=vram if vram is not None else 1e12,
                context_length=rng.choice([None, 2048, 8192, 32768]),
                tuning_note="ngl 99, flash attention on. " * rng.randint(0, 10),
                tags=tags,
                tags_index=node_services.tags_index(tags),
                # A few rigs are unlisted or shared with circles only, and one in a hundred never reported in:
                # the list leaves them out, as it does in production.
                visibility=rng.choices(["public", "unlisted", "circle"], weights=[94, 4, 2])[0],
                circle_only_hours=rng.choice([[], [], [], [22, 23, 0]]),
                secret_hash=credentials.digest(f"lrn_bench{i}"),
                combo_key=rarity.combo_key(gpu, model, quant),
                status=rng.choice(["available", "busy", "unavailable"]),
                last_heartbeat_at=None if rng.random() < 0.01 else seen,
                last_seen_at=seen,
                latency_ms=rng.randrange(5, 400),
                queue_active=rng.randint(0, 2),
                queue_waiting=rng.randint(0, 3),
                queue_max_active=2,
                queue_updated_at=seen,
                contribution_components={
                    "existence": 1.0,
                    "rarity": 0.5,
                    "usage": 0.0,
                    "discovery": 0.0,
                    "note": 2.0,
                },
                contribution_total=3.5,
                timing_samples_count=(timed := rng.choice([0, 0, 3, 40])),
                timing_samples_taster=timed // 2,
                timing_samples_relay=timed - timed // 2,
                tok_per_sec_p50=rng.choice([12.5, 48.0, 90.1]) if timed else None,
                ttft_ms_p50=rng.choice([180.0, 420.5]) if timed else None,
                timing_last_uploaded_at=seen if timed else None,
                uptime_ratio_24h=rng.random(),
                uptime_ratio_7d=rng.random(),
                model_identity=(
                    {"sha256": f"{i:064x}", "size_bytes": 4_920_000_000, "gguf": {"architecture": "llama"}}
                    if rng.random() < 0.3
                    else None
                ),
            )
        )
    Node.objects.bulk_create(nodes, batch_size=1000)
    samples = [
        HealthSample(
            node_id=f"bench-{rng.randrange(n_nodes):05d}",
            at=now - timedelta(minutes=rng.randrange(10080)),
            status=rng.choice(["available", "unavailable"]),
            latency_ms=rng.randrange(5, 400),
        )
        for _ in range(n_samples)
    ]
    HealthSample.objects.bulk_create(samples, batch_size=5000)
    node_services.refresh_rarity(None)
    node_services.refresh_showcase()


async def drive(url: str, seconds: float, concurrency: int) -> tuple[list[float], float, int]:
    """`concurrency` clients send requests back to back for `seconds`: latencies (ms), elapsed s, errors."""
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        stop_at = time.perf_counter() + seconds

        async def client():
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


def churn(db_path: str, n_nodes: int, rate: float, stop, done) -> None:
    """`rate` heartbeat-like updates a second to random rigs of the seeded file, until `stop` is set; `done`
    counts them."""
    rng = random.Random(7)
    con = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    next_at = time.perf_counter()
    while not stop.is_set():
        stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
        con.execute(
            "UPDATE nodes_node SET last_heartbeat_at = ?, last_seen_at = ?, queue_waiting = ? WHERE id = ?",
            (stamp, stamp, rng.randrange(3), f"bench-{rng.randrange(n_nodes):05d}"),
        )
        done.value += 1
        next_at += 1 / rate
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


class Churning:
    """`churn` in another process for the length of a `with` block (nothing when `rate` is 0)."""

    def __init__(self, db_path: str, n_nodes: int, rate: float):
        self.args, self.rate = (db_path, n_nodes, rate), rate
        self.stop, self.done = multiprocessing.Event(), multiprocessing.Value("q", 0)

    def __enter__(self):
        self.started = time.perf_counter()
        if self.rate:
            self.process = multiprocessing.Process(target=churn, args=(*self.args, self.stop, self.done))
            self.process.start()
        return self

    def __exit__(self, *exc):
        if self.rate:
            self.stop.set()
            self.process.join(10)
        self.per_second = self.done.value / (time.perf_counter() - self.started)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def measure(base: str, seconds: float, concurrency: int, slice_sec: float = 1.0) -> list[tuple]:
    """Each endpoint driven for `seconds` in all, in slices of `slice_sec` taken in turn (health, first page,
    filtered page, page of 200, health...): this machine's speed drifts by a factor of two over minutes, and a
    ratio of two runs taken one after the other would carry the drift; taken in turn, each slice of an endpoint
    meets the machine as its neighbours do."""
    for _label, path in ENDPOINTS:
        asyncio.run(drive(base + path, min(1.0, seconds), concurrency))  # warm-up: every worker, every cache
    totals = [([], 0.0, 0) for _ in ENDPOINTS]
    for _ in range(max(1, round(seconds / slice_sec))):
        for n, (_label, path) in enumerate(ENDPOINTS):
            latencies, elapsed, errors = asyncio.run(drive(base + path, slice_sec, concurrency))
            kept, spent, failed = totals[n]
            totals[n] = (kept + latencies, spent + elapsed, failed + errors)
    return [(pct(kept, 50), pct(kept, 99), len(kept) / spent, failed) for kept, spent, failed in totals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0, help="per endpoint and stack")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--churn", type=float, default=0, help="heartbeat-like row updates a second while measuring")
    # As deploy/gunicorn.conf.py: WEB_CONCURRENCY, else cores x 2 + 1.
    default_workers = int(os.environ.get("WEB_CONCURRENCY") or (os.cpu_count() or 1) * 2 + 1)
    parser.add_argument("--workers", type=int, default=default_workers, help="gunicorn workers")
    args = parser.parse_args()

    from tests.processes import daphne, gunicorn, tracker_env

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        db_url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
        t0 = time.perf_counter()
        seed(db_url, tmp_path, args.nodes, args.samples)
        print(f"seeded {args.nodes} nodes and {args.samples} health samples in {time.perf_counter() - t0:.1f} s")
        # Production's persistent connections (docs/operations.md): a process keeps its database connection.
        env = tracker_env(db_url, tmp_path, RATELIMIT_ENABLE="0", DB_CONN_MAX_AGE="60")
        db_path = str(tmp_path / "bench.sqlite3")
        with daphne(env) as base, Churning(db_path, args.nodes, args.churn) as asgi_churn:
            asgi = measure(base, args.seconds, args.concurrency)
        # production's deploy/gunicorn.conf.py
        with gunicorn(env, args.workers) as (base, _arbiter), Churning(db_path, args.nodes, args.churn) as wsgi_churn:
            wsgi = measure(base, args.seconds, args.concurrency)

    print(
        f"\n{args.seconds:g} s per endpoint and stack, concurrency {args.concurrency}, aiohttp client on the same "
        f"machine ({os.cpu_count()} cores); Daphne: one process; gunicorn: {args.workers} sync workers"
    )
    if args.churn:
        rates = f"{asgi_churn.per_second:.0f}/s (Daphne), {wsgi_churn.per_second:.0f}/s (gunicorn)"
        print(f"rows updated meanwhile: {rates}")
    print()
    head = "p50 ms | p99 ms | req/s | vs floor | errors"
    print(f"| endpoint | Daphne {head.replace(' | ', ' | Daphne ')} | gunicorn {head.replace(' | ', ' | gunicorn ')} |")
    print("|---|" + "---:|" * 10)
    for (label, _path), a, w in zip(ENDPOINTS, asgi, wsgi, strict=True):
        cells = []
        for (p50, p99, rps, errors), floor in ((a, asgi[0][2]), (w, wsgi[0][2])):
            cells += [f"{p50:.1f}", f"{p99:.1f}", f"{rps:.0f}", f"{rps / floor:.2f}", str(errors)]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

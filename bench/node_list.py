"""Benchmark: GET /api/nodes on a big registry, through Daphne, beside a trivial endpoint in the same run.

Seeds 10,000 nodes and 100,000 health samples into a fresh SQLite file, starts one Daphne process, then
drives each endpoint with a fixed number of requests at a fixed concurrency from an aiohttp client and prints
one table (p50/p99 latency, requests per second, and the ratio to the trivial endpoint's floor).

    .venv/bin/python bench/node_list.py [--nodes 10000] [--samples 100000] [--requests 600] [--concurrency 8]
"""

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
    owners = [Contributor(id=f"c_bench{i:05d}", key_hash=credentials.digest(f"lrk_bench{i}")) for i in range(500)]
    Contributor.objects.bulk_create(owners)
    nodes = []
    for i in range(n_nodes):
        gpu, model, quant = rng.choice(gpus), rng.choice(models), rng.choice(quants)
        tags = rng.sample(["home", "showcase", "moe", "long-context", "cpu", "old-gpu", "metal"], k=rng.randint(0, 3))
        nodes.append(
            Node(
                id=f"bench-{i:05d}",
                owner=owners[i % len(owners)],
                endpoint_url=f"https://rig{i}.example.com/v1",
                health_url=f"https://rig{i}.example.com/health",
                model_name=model,
                quantization=quant,
                gpu=gpu,
                vram_gb=(vram := rng.choice([None, 0, 8, 12, 16, 24, 32, 48, 80])),
                vram_sort_key=vram if vram is not None else 1e12,
                context_length=rng.choice([2048, 8192, 32768]),
                tuning_note="ngl 99, flash attention on. " * rng.randint(0, 10),
                tags=tags,
                tags_index=node_services.tags_index(tags),
                secret_hash=credentials.digest(f"lrn_bench{i}"),
                combo_key=rarity.combo_key(gpu, model, quant),
                status=rng.choice(["available", "busy", "unavailable"]),
                contribution_components={
                    "existence": 1.0,
                    "rarity": 0.5,
                    "usage": 0.0,
                    "discovery": 0.0,
                    "note": 2.0,
                },
                contribution_total=3.5,
                tok_per_sec_p50=rng.choice([None, 12.5, 48.0, 90.1]),
                uptime_ratio_24h=rng.random(),
                uptime_ratio_7d=rng.random(),
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


async def drive(url: str, total: int, concurrency: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    queue = asyncio.Queue()
    for _ in range(total):
        queue.put_nowait(None)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker():
            nonlocal errors
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from tests.processes import daphne, tracker_env

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        db_url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
        t0 = time.perf_counter()
        seed(db_url, tmp_path, args.nodes, args.samples)
        print(f"seeded {args.nodes} nodes and {args.samples} health samples in {time.perf_counter() - t0:.1f} s")
        env = tracker_env(db_url, tmp_path, RATELIMIT_ENABLE="0")
        endpoints = [
            ("trivial floor: GET /api/health", "/api/health"),
            ("GET /api/nodes (first page, 50)", "/api/nodes"),
            ("GET /api/nodes?gpu=rtx&min_vram=12&tag=home", "/api/nodes?gpu=rtx&min_vram=12&tag=home"),
            ("GET /api/nodes?page_size=200", "/api/nodes?page_size=200"),
        ]
        rows = []
        with daphne(env) as base:
            for label, path in endpoints:
                asyncio.run(drive(base + path, 30, 2))  # warm-up
                latencies, elapsed, errors = asyncio.run(drive(base + path, args.requests, args.concurrency))
                rows.append((label, pct(latencies, 50), pct(latencies, 99), len(latencies) / elapsed, errors))
        floor = rows[0][3]
        print(
            f"\n{args.requests} requests per endpoint, concurrency {args.concurrency}, one Daphne process, "
            "client on the same machine\n"
        )
        print("| endpoint | p50 ms | p99 ms | req/s | vs floor | errors |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, p50, p99, rps, errors in rows:
            print(f"| {label} | {p50:.1f} | {p99:.1f} | {rps:.0f} | {rps / floor:.2f} | {errors} |")


if __name__ == "__main__":
    main()

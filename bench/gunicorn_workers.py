"""Benchmark: gunicorn's sync workers against gthread workers, side by side, for deploy/gunicorn.conf.py.

Seeds a fresh PostgreSQL database (1,000 nodes by default), then starts gunicorn with the production config once
per worker class, alternating them for several rounds, and drives /api/health and /api/nodes with wrk at a fixed
concurrency, each request on a connection of its own (`Connection: close`, as nginx talks to gunicorn). Prints one
table: median req/s with its range, median p50 and p99, and the requests wrk gave up on (over 2 s).

    .venv/bin/python bench/gunicorn_workers.py [--workers 5] [--threads 4] [--rounds 4] [--seconds 6]

Needs wrk and a PostgreSQL server at 127.0.0.1:5432 (trust auth).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = ("/api/health", "/api/nodes")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNIT_MS[unit]


def wrk(url: str, seconds: int, concurrency: int) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, timeouts) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-H", "Connection: close", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    timeouts = re.search(r"timeout (\d+)", out)
    return (
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        _ms(re.search(r"50%\s+(\S+)", out).group(1)),
        _ms(re.search(r"99%\s+(\S+)", out).group(1)),
        int(timeouts.group(1)) if timeouts else 0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    from tests.processes import gunicorn, new_postgres_database, tracker_env

    kinds = [
        ("sync", {}),
        (f"gthread ×{args.threads}", {"WEB_WORKER_CLASS": "gthread", "WEB_THREADS": str(args.threads)}),
    ]
    runs: dict[tuple[str, str], list] = {}
    with tempfile.TemporaryDirectory() as tmp, new_postgres_database() as db:
        tmp_path = Path(tmp)
        pid = os.fork()  # Django set up for seeding stays out of this process
        if pid == 0:
            from bench.node_list import seed

            seed(db, tmp_path, args.nodes, args.nodes * 10)
            os._exit(0)
        os.waitpid(pid, 0)
        env = tracker_env(db, tmp_path, RATELIMIT_ENABLE="0", DB_CONN_MAX_AGE="60")
        for _ in range(args.rounds):
            for name, extra in kinds:
                with gunicorn({**env, **extra}, workers=args.workers) as (base, _arbiter):
                    for path in PATHS:
                        wrk(base + path, 2, args.concurrency)  # warm-up
                        runs.setdefault((name, path), []).append(wrk(base + path, args.seconds, args.concurrency))

    print(
        f"\n{args.workers} workers, {args.nodes} nodes on PostgreSQL, wrk at concurrency {args.concurrency} on the "
        f"same machine, {args.rounds} alternating rounds of {args.seconds} s\n"
    )
    print("| endpoint | workers | req/s (median, range) | p50 ms | p99 ms | over 2 s |")
    print("|---|---|---:|---:|---:|---:|")
    for path in PATHS:
        for name, _ in kinds:
            rows = runs[(name, path)]
            rps = [r[0] for r in rows]
            print(
                f"| {path} | {name} | {statistics.median(rps):.0f} ({min(rps):.0f}–{max(rps):.0f}) "
                f"| {statistics.median(r[1] for r in rows):.0f} | {statistics.median(r[2] for r in rows):.0f} "
                f"| {sum(r[3] for r in rows)} |"
            )


if __name__ == "__main__":
    main()

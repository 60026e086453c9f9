"""Benchmark: the production layout (gunicorn for the REST API and pages, Daphne for /ws/ only) beside Daphne
serving everything, side by side in one run on the same database.

Seeds the registry (bench/node_list.py's `seed`) into a throw-away PostgreSQL database with a private Redis when
PostgreSQL answers at 127.0.0.1:5432 (the production stack), else into SQLite. Starts both layouts at once, then
for each endpoint warms it up and drives it for a fixed time at a fixed concurrency on each layout in turn, with
wrk when it is installed (else an aiohttp client), and prints one table: req/s, p50/p99 latency and errors.

    .venv/bin/python bench/layout.py [--nodes 1000] [--duration 10] [--concurrency 16] [--workers N]
                                     [--gunicorn-config deploy/gunicorn.conf.py] [--sqlite] [--client aiohttp]
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.node_list import seed  # noqa: E402
from tests.processes import (  # noqa: E402
    DAPHNE,
    daphne,
    free_port,
    new_postgres_database,
    postgres_available,
    private_redis,
    tracker_env,
)

DEFAULT_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"

ENDPOINTS = [
    ("GET /api/health (the floor)", "/api/health"),
    ("GET /api/nodes (first page, 50)", "/api/nodes"),
    ("GET /api/nodes?gpu=rtx&min_vram=12&tag=home", "/api/nodes?gpu=rtx&min_vram=12&tag=home"),
    ("GET /api/nodes?page_size=200", "/api/nodes?page_size=200"),
    ("GET /nodes/<id>/ (the rig page, HTML)", None),  # a real listed node's page, found once the site is up
]


@contextlib.contextmanager
def database(tmp: Path, sqlite_only: bool):
    """(database URL, Redis URL or "", what the stack is): PostgreSQL + a private Redis when PostgreSQL answers,
    else SQLite with the in-memory defaults. The PostgreSQL database is dropped afterwards."""
    if not sqlite_only and postgres_available():
        with new_postgres_database() as db_url, private_redis() as (redis_port, _):
            yield db_url, f"redis://127.0.0.1:{redis_port}/0", "PostgreSQL + Redis (a private redis-server)"
        return
    why = "--sqlite" if sqlite_only else "no PostgreSQL answers at 127.0.0.1:5432"
    yield f"sqlite:///{tmp / 'bench.sqlite3'}", "", f"SQLite, local-memory cache, no Redis ({why})"


def wait_health(base: str, proc: subprocess.Popen, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if requests.get(base + "/api/health", timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or its workers still booting
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {seconds:g} s")
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """CPU time (user + system, all threads) of a process; with `reaped`, also that of its children that exited
    and were waited for (gunicorn's replaced workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)) / TICK


DAPHNE_MODULE = DAPHNE[DAPHNE.index("-m") + 1].encode()


def daphne_pid(base: str) -> int:
    """The process tests.processes.daphne started for `base` (`python -m luckrig_site.serve_daphne ... -p PORT`)."""
    port = base.rsplit(":", 1)[1].encode()
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if DAPHNE_MODULE in args and b"-p" in args and args[args.index(b"-p") + 1 : args.index(b"-p") + 2] == [port]:
            return int(entry.name)
    raise RuntimeError(f"no Daphne process serves {base}")


def server_cpu(pid: int, tree: bool) -> float:
    """The CPU time a server has used: one process, or (tree) a master and its workers, live and replaced."""
    return cpu_seconds(pid, reaped=tree) + (sum(cpu_seconds(c) for c in children(pid)) if tree else 0.0)


@contextlib.contextmanager
def gunicorn(env: dict, workers: int | None, config: Path | None, log_path: Path):
    """gunicorn serving luckrig_site.wsgi on a free port: yields (base URL, the number of workers it runs).
    The command line's --bind and --workers take precedence over the config file, as gunicorn documents."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "gunicorn", "luckrig_site.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    args.append("--no-control-socket")  # its default path is per user: two benchmarks at once would share it
    if config:
        args += ["--config", str(config)]
    if workers or not config:
        args += ["--workers", str(workers or (os.cpu_count() or 1) * 2 + 1)]
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, cwd=ROOT, env={**env, "SITE_URL": base}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_health(base, proc, "gunicorn")
        deadline = time.monotonic() + 30  # the arbiter forks its workers one after the other
        count = 0
        while time.monotonic() < deadline:
            count = len(children(proc.pid))
            if count and (workers is None or count >= workers):
                time.sleep(1)
                if len(children(proc.pid)) == count:
                    break
            time.sleep(0.2)
        yield base, count, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def rig_page(base: str) -> str:
    """The page of the first rig the list shows (a real, listed node)."""
    nodes = requests.get(base + "/api/nodes", timeout=30).json()["nodes"]
    if not nodes:
        raise RuntimeError("the seeded registry lists no node")
    return f"/nodes/{nodes[0]['id']}/"


def check_answers(base: str, path: str) -> None:
    """Every URL must answer 200 before it is measured: wrk counts a 3xx as a success."""
    resp = requests.get(base + path, timeout=30, allow_redirects=False)
    if resp.status_code != 200:
        raise RuntimeError(f"GET {base}{path} answered {resp.status_code}: {resp.text[:300]}")


def measure(layouts: dict[str, tuple[str, int, bool]], endpoints: list, args) -> list[dict]:
    """For each endpoint, each layout in turn (the order alternates, so that neither always goes first). Beside
    the client's figures, the server's CPU time per request: on a machine shared with other work, req/s says as
    much about the neighbours as about the server; CPU per request much less."""
    rows = []
    for i, (label, path) in enumerate(endpoints):
        names = list(layouts) if i % 2 == 0 else list(reversed(layouts))
        measured = {}
        for name in names:
            base, pid, tree = layouts[name]
            check_answers(base, path)
            loadgen.run(base + path, args.warmup, args.concurrency, use_wrk=args.client == "wrk")
            cpu_before, started = server_cpu(pid, tree), time.monotonic()
            load = loadgen.run(base + path, args.duration, args.concurrency, use_wrk=args.client == "wrk")
            cpu, elapsed = server_cpu(pid, tree) - cpu_before, time.monotonic() - started
            served = load.rps * elapsed
            measured[name] = {"load": load, "cpu_ms": 1000 * cpu / served if served else float("nan")}
            print(f"  {label} on {name}: {load.rps:.0f} req/s", file=sys.stderr, flush=True)
        rows += [{"label": label, "layout": name, **measured[name]} for name in layouts]
    return rows


def shown(config: Path | None) -> str:
    if config is None:
        return "none (command line only)"
    return str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config)


def report(rows: list[dict], layouts: list[str], header: list[str]) -> None:
    print()
    for line in header:
        print(line)
    print()
    print("| endpoint | layout | req/s | p50 ms | p99 ms | errors | server CPU ms/req | vs floor | × Daphne |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    floor = {r["layout"]: r["load"].rps for r in rows if r["label"] == ENDPOINTS[0][0]}
    daphne_rps = {r["label"]: r["load"].rps for r in rows if r["layout"] == layouts[0]}
    for r in rows:
        load = r["load"]
        versus = (
            f"{load.rps / daphne_rps[r['label']]:.2f}" if r["layout"] != layouts[0] and daphne_rps[r["label"]] else ""
        )
        ratio = f"{load.rps / floor[r['layout']]:.2f}" if floor.get(r["layout"]) else "n/a"
        print(
            f"| {r['label']} | {r['layout']} | {load.rps:.0f} | {load.p50_ms:.1f} | {load.p99_ms:.1f} | "
            f"{load.errors} | {r['cpu_ms']:.2f} | {ratio} | {versus} |"
        )
    odd = [r for r in rows if r["load"].errors]
    for r in odd:
        print(f"- {r['label']} on {r['layout']}: {r['load'].non_2xx} answers outside 2xx, "
              f"{r['load'].socket_errors} socket errors")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nodes", type=int, default=1000, help="the issue's wrk figures: 1,000; node list target: 10,000"
    )
    parser.add_argument("--samples", type=int, default=None, help="health samples (default: 10 per node)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per endpoint and layout")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: cores × 2 + 1)")
    parser.add_argument(
        "--gunicorn-config",
        type=Path,
        default=DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None,
        help="a gunicorn config file (default: deploy/gunicorn.conf.py when it exists)",
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite even when PostgreSQL answers")
    parser.add_argument("--client", choices=["wrk", "aiohttp"], default="wrk" if loadgen.has_wrk() else "aiohttp")
    args = parser.parse_args()
    if args.client == "wrk" and not loadgen.has_wrk():
        parser.error("wrk is not installed (apt-get install wrk), or use --client aiohttp")
    samples = args.nodes * 10 if args.samples is None else args.samples
    config = args.gunicorn_config.resolve() if args.gunicorn_config else None
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with database(tmp, args.sqlite) as (db_url, redis_url, stack):
            t0 = time.perf_counter()
            seed(db_url, tmp, args.nodes, samples)
            from django.db import connections

            connections.close_all()  # the seeding connection must not hold the throw-away database open
            print(f"seeded {args.nodes} nodes and {samples} health samples in {time.perf_counter() - t0:.1f} s "
                  f"({stack})", file=sys.stderr)  # fmt: skip
            # Database connections: persistent under gunicorn (DB_CONN_MAX_AGE=60, as deploy/tracker.env.example;
            # otherwise each request opens a PostgreSQL connection, a fork on the server's side), one per request
            # under Daphne. Django keeps a connection per thread, and under ASGI each request's sync code may run
            # on a thread of its own: with DB_CONN_MAX_AGE=60, one Daphne process held 35 PostgreSQL connections
            # after 2 s of load, 97 after 6 s, then requests failed with "too many clients".
            extra = {"RATELIMIT_ENABLE": "0", "DB_CONN_MAX_AGE": "0"}
            if redis_url:
                extra["REDIS_URL"] = redis_url
            env = tracker_env(db_url, tmp, **extra)
            wsgi_env = {**env, "DB_CONN_MAX_AGE": "60"}
            try:
                with (
                    daphne(env, log_path=tmp / "daphne-all.log") as daphne_all,
                    daphne(env, log_path=tmp / "daphne-ws.log"),  # the WSGI layout's websockets: idle here
                    gunicorn(wsgi_env, args.workers, config, tmp / "gunicorn.log") as (wsgi, workers, master),
                ):
                    layouts = {
                        "Daphne, 1 process": (daphne_all, daphne_pid(daphne_all), False),
                        f"gunicorn, {workers} workers (+ Daphne for /ws/)": (wsgi, master, True),
                    }
                    page = rig_page(daphne_all)
                    endpoints = [(label, path or page) for label, path in ENDPOINTS]
                    rows = measure(layouts, endpoints, args)
            except BaseException:
                for log in sorted(tmp.glob("*.log")):
                    print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-20:]),
                          file=sys.stderr)  # fmt: skip
                raise

    load_after = os.getloadavg()
    header = [
        f"{args.nodes:,} nodes, {samples:,} health samples; {stack}; rate limits off; DEBUG=0; "
        "DB_CONN_MAX_AGE 60 under gunicorn, 0 under Daphne",
        f"load generator: {loadgen.client_name(args.client == 'wrk')}, concurrency {args.concurrency}, "
        f"{args.warmup:g} s warm-up then {args.duration:g} s per endpoint and layout, on the same machine "
        f"({os.cpu_count()} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after)",
        f"gunicorn: {workers} workers, config {shown(config)}; no nginx in front of either layout; "
        f"the rig page is {page}",
        "server CPU ms/req: the serving processes' CPU time (user + system; gunicorn's master and workers, Daphne's "
        "process; not PostgreSQL's or Redis's) ÷ requests answered; vs floor: req/s ÷ /api/health's on the same "
        "layout; × Daphne: req/s ÷ Daphne's for the same endpoint",
    ]
    report(rows, list(layouts), header)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

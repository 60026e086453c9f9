"""Benchmark: what one request of the node list costs in process, beside `/api/health`, free of the server and the
client: the WSGI application called directly, on bench/node_list.py's seeded 10,000-node SQLite file.

Two measures, because a shared machine moves wall-clock and CPU time by a factor of two between identical runs:
- CPU time (`time.process_time`) per request, best of --blocks blocks of --requests requests each;
- with --callgrind, instructions per request under valgrind's callgrind (needs valgrind; about two minutes): the
  same requests, with `os.getppid()` between kinds so that `--dump-before=getppid` writes one dump per kind.
  Instruction counts do not depend on what else runs on the machine. The count of the list is kept for the whole
  run there (NODE_LIST_COUNT_TTL_SEC), since valgrind's slowdown would make it again every few requests.

    .venv/bin/python bench/node_list_cpu.py [--requests 60] [--blocks 15] [--callgrind] [--nodes 10000]
"""

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.node_list import ENDPOINTS  # noqa: E402

PATHS = dict(ENDPOINTS)  # the same requests as bench/node_list.py, the floor first
WARM_UP = 10


def serve_in_process(db_path: Path):
    """The WSGI application over the seeded file, as bench/node_list.py's servers run it; a function that answers
    one GET and returns its body."""
    os.environ.update(
        {
            "DATABASE_URL": f"sqlite:///{db_path}",
            "DATA_DIR": str(db_path.parent),
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + "x" * 60,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "0",
            "LOG_LEVEL": "WARNING",
            "RATELIMIT_ENABLE": "0",
            "DB_CONN_MAX_AGE": "60",
            "DJANGO_SETTINGS_MODULE": "luckrig_site.settings",
        }
    )
    os.environ.pop("REDIS_URL", None)
    from luckrig_site.wsgi import application

    def get(url: str) -> bytes:
        path, _, query = url.partition("?")
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_ACCEPT": "*/*",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
        }
        status = []
        body = b"".join(application(environ, lambda s, headers, exc_info=None: status.append(s)))
        if not status[0].startswith("200"):
            raise RuntimeError(f"{url}: {status[0]} {body[:200]!r}")
        return body

    return get


def cpu_times(get, requests: int, blocks: int) -> dict[str, float]:
    for url in PATHS.values():
        for _ in range(WARM_UP):
            get(url)
    best = dict.fromkeys(PATHS, float("inf"))
    for _ in range(blocks):
        for label, url in PATHS.items():
            started = time.process_time()
            for _ in range(requests):
                get(url)
            best[label] = min(best[label], (time.process_time() - started) / requests * 1000)
    return best


def child(db_path: Path, requests: int) -> None:
    """Under callgrind: warm up, then `requests` of each kind, a dump before each kind and at the end."""
    get = serve_in_process(db_path)
    for url in PATHS.values():
        for _ in range(WARM_UP):
            get(url)
    for url in PATHS.values():
        os.getppid()
        for _ in range(requests):
            get(url)
    os.getppid()


def instructions(db_path: Path, requests: int, tmp: Path) -> dict[str, float]:
    out = tmp / "callgrind.out"
    env = {**os.environ, "NODE_LIST_COUNT_TTL_SEC": "1000000"}
    command = ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={out}"]
    command += [sys.executable, __file__, "--child", str(db_path), "--requests", str(requests)]
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True)
    # Dump n (from 1) holds what ran before the n-th getppid: the warm-up, then one kind each.
    totals = []
    for n in range(2, len(PATHS) + 2):
        for line in Path(f"{out}.{n}").read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                totals.append(int(line.split()[1]))
                break
    return {label: total / requests for label, total in zip(PATHS, totals, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="per block (CPU time) or per kind (callgrind)")
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        db_path = tmp_path / "bench.sqlite3"
        seeding = [
            sys.executable,
            "-c",
            "import sys; from bench.node_list import seed; seed(*sys.argv[1:3], *map(int, sys.argv[3:]))",
        ]
        subprocess.run(
            [*seeding, f"sqlite:///{db_path}", str(tmp_path), str(args.nodes), str(args.samples)], check=True, cwd=ROOT
        )
        if args.callgrind:
            costs, unit = instructions(db_path, args.requests, tmp_path), "instructions (M)"
            costs = {label: n / 1e6 for label, n in costs.items()}
        else:
            costs, unit = cpu_times(serve_in_process(db_path), args.requests, args.blocks), "CPU ms"
    floor = next(iter(costs.values()))
    print(f"\n{args.nodes} nodes, SQLite, the WSGI application in process, per request:\n")
    print(f"| request | {unit} | × `/api/health` |\n|---|---:|---:|")
    for label, cost in costs.items():
        print(f"| {label} | {cost:.2f} | {cost / floor:.1f} |")


if __name__ == "__main__":
    main()

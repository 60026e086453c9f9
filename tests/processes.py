"""Real tracker processes for end-to-end tests: a fresh database, `migrate`, then Daphne or gunicorn on a free
port."""

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]


def unit_stop_timeout(unit: str) -> float:
    """deploy/<unit>'s TimeoutStopSec: past it systemd SIGKILLs the process, so a stop must end sooner."""
    return float(re.search(r"^TimeoutStopSec=(\d+)", (ROOT / "deploy" / unit).read_text(), re.M)[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fresh_database(tmp_path: Path):
    """A database URL of the same engine the suite runs on: a temp SQLite file, or a new PostgreSQL database
    on the same server (dropped afterwards)."""
    suite_url = os.environ.get("DATABASE_URL", "")
    if not suite_url.startswith("postgres"):
        yield f"sqlite:///{tmp_path / 'tracker.sqlite3'}"
        return
    server = suite_url.rsplit("/", 1)[0]
    name = f"luckrig_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(server + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tracker_env(database_url: str, data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "DEBUG": "0",
            "SECRET_KEY": "e2e-" + uuid.uuid4().hex * 2,
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def _serving(name: str, command: list[str], env: dict, base: str, log_path: Path | None, stop_timeout: float):
    """Run a server, wait (bounded) until its /api/health answers, yield the process, then stop it (SIGTERM,
    then SIGKILL after a bounded wait)."""
    log = open(log_path or os.devnull, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            try:
                if requests.get(base + "/api/health", timeout=2).status_code == 200:
                    break
            # gunicorn listens before its workers have loaded Django: a first request may wait, then time out.
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within 30 s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


# The production entry point (deploy/luckrig-daphne@.service): Daphne with a graceful stop.
DAPHNE = ["-m", "luckrig_site.serve_daphne"]


@contextlib.contextmanager
def daphne_process(env: dict, port: int | None = None, log_path: Path | None = None, args: tuple = ()):
    """Start Daphne, wait (bounded) until /api/health answers, yield (base URL, process), then stop it: for a test
    that sends the signal and times the stop itself (the process is only stopped afterwards if still running)."""
    port = port or free_port()
    env = {**env, "SITE_URL": env.get("SITE_URL", f"http://127.0.0.1:{port}")}
    command = [sys.executable, *DAPHNE, *args, "-b", "127.0.0.1", "-p", str(port), "luckrig_site.asgi:application"]
    with _serving("daphne", command, env, f"http://127.0.0.1:{port}", log_path, stop_timeout=10) as proc:
        yield f"http://127.0.0.1:{port}", proc


@contextlib.contextmanager
def daphne(env: dict, port: int | None = None, log_path: Path | None = None):
    """Start Daphne, wait (bounded) until /api/health answers, yield the base URL, then stop it."""
    with daphne_process(env, port, log_path) as (base, _):
        yield base


GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


@contextlib.contextmanager
def gunicorn(env: dict, workers: int = 2, port: int | None = None, log_path: Path | None = None, args=()):
    """Start gunicorn as production runs it (deploy/gunicorn.conf.py, settings from the environment), wait
    until /api/health answers, yield (base URL, the arbiter's process), then stop it."""
    port = port or free_port()
    env = {
        **env,
        "SITE_URL": env.get("SITE_URL", f"http://127.0.0.1:{port}"),
        "WEB_CONCURRENCY": str(workers),
        "WEB_BIND": f"127.0.0.1:{port}",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), *args]
    # Its graceful timeout (20 s unless WEB_GRACEFUL_TIMEOUT says otherwise) and a little more.
    stop_timeout = int(env.get("WEB_GRACEFUL_TIMEOUT") or 20) + 5
    with _serving("gunicorn", command, env, f"http://127.0.0.1:{port}", log_path, stop_timeout) as proc:
        yield f"http://127.0.0.1:{port}", proc


def migrate(env: dict) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )


PG_SERVER = "postgres://postgres@127.0.0.1:5432"


def postgres_available(server: str = PG_SERVER) -> bool:
    try:
        with psycopg.connect(server + "/postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextlib.contextmanager
def new_postgres_database(server: str = PG_SERVER):
    """A database of its own on the PostgreSQL server, dropped afterwards."""
    name = f"luckrig_tmp_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(server + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def private_redis():
    """A redis-server of its own on a free port (keeping nothing on disk), so that a test may also stop it.
    Yields (port, process)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


def register_node(base: str, **fields) -> tuple[str, str]:
    """A new contributor registers a node on the tracker at `base`; returns (node id, node secret)."""
    return register_node_with_key(base, **fields)[1:]


def register_node_with_key(base: str, **fields) -> tuple[str, str, str]:
    """As register_node, and the owner's contributor key first: (key, node id, node secret)."""
    key = requests.post(f"{base}/api/contributors", json={}, timeout=10).json()["contributor_key"]
    body = {
        "endpoint_url": "https://rig.example.com/v1",
        "model_name": "m",
        "quantization": "q",
        "gpu": f"GPU {uuid.uuid4().hex[:6]}",
        **fields,
    }
    reg = requests.post(f"{base}/api/nodes", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=10).json()
    return key, reg["node"]["id"], reg["node_secret"]

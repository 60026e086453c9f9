"""Daphne under load stops on SIGTERM within its unit's TimeoutStopSec (deploy/luckrig-daphne@.service): the requests
that had begun are answered (never a 5xx, never a hang), the websockets are closed with 1001 (going away), and it
exits 0. Plain `daphne` failed this, 4 times in 4: its view threads waited on an event loop that had already stopped
(luckrig_site/serve_daphne.py says why). And when a view is stuck past every deadline, the process still exits, by
itself, before systemd's SIGKILL, saying which threads were stuck. A drain tick that raises is logged and the ticks
go on, to the drain deadline at most."""

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import aiohttp
import psycopg
import pytest
import requests

from tests.processes import (
    ROOT,
    daphne_process,
    fresh_database,
    migrate,
    register_node,
    tracker_env,
    unit_stop_timeout,
)

pytestmark = pytest.mark.daphne

STOP_BOUND = unit_stop_timeout("luckrig-daphne@.service")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One migrated database for both tests; each starts its own Daphne on it."""
    tmp = tmp_path_factory.mktemp("graceful")
    with fresh_database(tmp) as url:
        env = tracker_env(url, tmp, RATE_CONTRIBUTOR_CREATE="100000/d", RATE_NODE_WRITE="100000/h")
        migrate(env)
        yield env, url, tmp


class Load:
    """Threads sending REST requests (sync views: heartbeats, whose commit fans out through async_to_sync, the node
    list, new contributors) over kept-alive connections; each request is recorded with when it began."""

    def __init__(self, base: str, nodes: list[tuple[str, str]], threads: int = 10):
        self.base, self.nodes = base, nodes
        self.stop = threading.Event()
        self.records: list[tuple[float, object]] = []  # (began, status code or exception)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)

    def _run(self, i: int) -> None:
        session = requests.Session()
        node_id, secret = self.nodes[i % len(self.nodes)]
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                if i % 3 == 0:
                    r = session.post(
                        f"{self.base}/api/nodes/{node_id}/heartbeat",
                        headers={"Authorization": f"Bearer {secret}"},
                        json={"queue": {"active": i % 2, "waiting": 0, "max_active": 2}, "models": ["m"]},
                        timeout=STOP_BOUND + 5,
                    )
                elif i % 3 == 1:
                    r = session.get(f"{self.base}/api/nodes", timeout=STOP_BOUND + 5)
                else:
                    r = session.post(f"{self.base}/api/contributors", json={}, timeout=STOP_BOUND + 5)
                self.records.append((began, r.status_code))
            except requests.RequestException as exc:
                self.records.append((began, exc))
                time.sleep(0.05)


async def open_sockets(base: str, secret: str):
    ws_base = base.replace("http://", "ws://")
    session = aiohttp.ClientSession()
    sockets = [await session.ws_connect(f"{ws_base}/ws/queue/") for _ in range(2)]
    sockets.append(await session.ws_connect(f"{ws_base}/ws/agent/", headers={"Authorization": f"Bearer {secret}"}))
    return session, sockets


async def close_codes(sockets, timeout: float) -> list:
    async def until_closed(ws):
        async for _ in ws:
            pass
        return ws.close_code

    return await asyncio.wait_for(asyncio.gather(*(until_closed(ws) for ws in sockets)), timeout)


def wait_exit(proc, bound: float) -> float:
    started = time.monotonic()
    try:
        proc.wait(timeout=bound)
    except Exception:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"Daphne was still running {bound:g} s after SIGTERM (systemd would SIGKILL it)") from None
    return time.monotonic() - started


def create_contributor_in_background(base: str) -> tuple[threading.Thread, dict]:
    """POST /api/contributors from a thread; its answer (or exception) lands in the returned dict under "r"."""
    answer: dict = {}

    def create():
        try:
            answer["r"] = requests.post(f"{base}/api/contributors", json={}, timeout=30)
        except requests.RequestException as exc:
            answer["r"] = exc

    t = threading.Thread(target=create)
    t.start()
    return t, answer


def test_daphne_stops_under_load_within_its_stop_timeout(site):
    env, _, tmp = site
    with daphne_process(env, log_path=tmp / "daphne-load.log") as (base, proc):
        nodes = [register_node(base) for _ in range(3)]

        async def scenario():
            session, sockets = await open_sockets(base, nodes[0][1])
            try:
                with Load(base, nodes) as load:
                    await asyncio.sleep(2)  # the load is on: requests in flight at any moment
                    assert any(status == 200 for _, status in load.records)
                    signalled = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    codes = await close_codes(sockets, STOP_BOUND)
                    elapsed = await asyncio.to_thread(wait_exit, proc, STOP_BOUND)
                return signalled, codes, elapsed, list(load.records)
            finally:
                await session.close()

        signalled, codes, elapsed, records = asyncio.run(scenario())
    assert codes == [1001, 1001, 1001]  # going away: the queue view and the agent link reconnect
    assert elapsed < STOP_BOUND
    assert proc.returncode == 0
    before = [outcome for began, outcome in records if began < signalled]
    after = [outcome for began, outcome in records if began >= signalled]
    # Every request that began before the signal was answered, and never with a server error.
    assert before and all(isinstance(o, int) and o < 500 for o in before), [o for o in before if not isinstance(o, int)]
    # Those that began after it were answered too, or refused at connect (the socket no longer listens): no 5xx.
    assert all(o < 500 if isinstance(o, int) else isinstance(o, requests.ConnectionError) for o in after)


@contextlib.contextmanager
def contributors_locked(database_url: str):
    """Hold the write lock on the contributors table, so that creating one waits in its view's thread."""
    if database_url.startswith("sqlite"):
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    with psycopg.connect(database_url) as conn:
        conn.execute("LOCK TABLE nodes_contributor IN EXCLUSIVE MODE")
        yield
        conn.rollback()


def test_a_view_stuck_past_the_deadlines_is_cut_and_the_process_still_exits(site):
    env, url, tmp = site
    log_path = tmp / "daphne-stuck.log"
    args = ("--drain-timeout", "1", "--stop-timeout", "3")
    with daphne_process(env, log_path=log_path, args=args) as (base, proc), contributors_locked(url):
        t, answer = create_contributor_in_background(base)
        time.sleep(1)  # the request is in its view, waiting for the lock
        proc.send_signal(signal.SIGTERM)
        elapsed = wait_exit(proc, STOP_BOUND)
        t.join(10)
    r = answer["r"]
    assert r.status_code == 503 and r.json()["code"] == "restarting"
    assert r.headers["Retry-After"] == "5"
    assert proc.returncode == 1 and 3 <= elapsed < 3 + 5
    assert "exiting without them" in log_path.read_text()


def test_ctrl_c_twice_exits_at_once_even_with_a_request_stuck(site):
    """`make run`'s Ctrl-C drains like SIGTERM; a second Ctrl-C does not wait for the drain."""
    env, url, tmp = site
    with daphne_process(env, log_path=tmp / "daphne-ctrl-c.log") as (base, proc), contributors_locked(url):
        t, _ = create_contributor_in_background(base)
        time.sleep(1)  # the request is in its view, waiting for the lock
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # draining: the request is still being waited for
        proc.send_signal(signal.SIGINT)
        elapsed = wait_exit(proc, 5)
        t.join(10)
    assert proc.returncode == 1 and elapsed < 5


# Daphne as in production, but its drain ticks raise: "once" makes the first tick fail halfway (after it sent the
# websockets their 1001, when it asks whether a connection is busy); "always" makes every tick fail whole.
FAILING_TICK = """
import sys
from luckrig_site import serve_daphne
how = sys.argv.pop(1)
def fail(*args):
    raise RuntimeError("injected: this drain tick fails")
if how == "once":
    real_busy = serve_daphne._busy
    def failing_busy(details):
        serve_daphne._busy = real_busy
        fail()
    serve_daphne._busy = failing_busy
elif how == "cut":  # the first connection cut at the drain deadline fails
    real_cut = serve_daphne._cut
    def failing_cut(protocol):
        serve_daphne._cut = real_cut
        fail()
    serve_daphne._cut = failing_cut
elif how == "start":  # the drain's start fails: a port that cannot stop listening
    class StuckPort:
        def stopListening(self):
            fail()
    real_listen = serve_daphne.GracefulServer.listen_success
    def listen_success(self, port):
        real_listen(self, port)
        self.ports.insert(0, StuckPort())
    serve_daphne.GracefulServer.listen_success = listen_success
else:
    serve_daphne.GracefulServer._drain_step = fail
serve_daphne.main()
"""


def stop_with_failing_ticks(monkeypatch, site, how: str, log_name: str) -> tuple[float, int, int, str]:
    """Start Daphne with failing drain ticks, hold one websocket open (so that a tick has a connection to look at),
    SIGTERM it; returns (seconds from the signal to the exit, the socket's close code, the exit status, the log)."""
    env, _, tmp = site
    env = {**env, "LOG_LEVEL": "INFO"}  # for "drained in"
    monkeypatch.setattr("tests.processes.DAPHNE", ["-c", FAILING_TICK, how])
    log_path = tmp / log_name
    with daphne_process(env, log_path=log_path, args=("--drain-timeout", "1", "--stop-timeout", "5")) as (base, proc):

        async def scenario():
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{base.replace('http://', 'ws://')}/ws/queue/")
                signalled = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                codes = await close_codes([ws], STOP_BOUND)
                await asyncio.to_thread(wait_exit, proc, STOP_BOUND)
                return codes[0], time.monotonic() - signalled

        code, elapsed = asyncio.run(scenario())
    return elapsed, code, proc.returncode, log_path.read_text()


def test_a_drain_tick_that_raises_is_logged_and_the_drain_goes_on(monkeypatch, site):
    elapsed, code, returncode, log = stop_with_failing_ticks(monkeypatch, site, "once", "daphne-tick-once.log")
    assert code == 1001
    # Exited by itself, not stalled until the stop deadline's exit with status 1 (5 s); and drained (the log says
    # so below), not stopped at the drain deadline.
    assert returncode == 0 and elapsed < 3, (returncode, elapsed)
    assert "drain tick failed" in log and "RuntimeError: injected: this drain tick fails" in log
    assert "drained in" in log


def test_drain_ticks_that_always_raise_still_stop_at_the_drain_deadline(monkeypatch, site):
    elapsed, _, returncode, log = stop_with_failing_ticks(monkeypatch, site, "always", "daphne-tick-always.log")
    # The drain deadline (1 s) and its flush (1 s), not the stop deadline's exit with status 1 (5 s).
    assert returncode == 0 and 2 <= elapsed < 4.5, (returncode, elapsed)
    assert "drain tick failed" in log and "drained in" not in log


def test_a_drain_whose_start_raises_still_drains(monkeypatch, site):
    elapsed, code, returncode, log = stop_with_failing_ticks(monkeypatch, site, "start", "daphne-start-fails.log")
    # Before, the ticks never started: no 1001, and the watchdog's exit with status 1 at the stop deadline (5 s).
    assert code == 1001 and returncode == 0 and elapsed < 3, (code, returncode, elapsed)
    assert "the drain's start failed" in log and "drained in" in log


def test_a_cut_that_fails_spares_no_other_connection_its_503(monkeypatch, site):
    """Two requests stuck in their views at the drain deadline; cutting the first raises. The second still gets
    its 503 `restarting` (before, the failure ended that pass of the cut and no one got one)."""
    env, url, tmp = site
    log_path = tmp / "daphne-cut-fails.log"
    monkeypatch.setattr("tests.processes.DAPHNE", ["-c", FAILING_TICK, "cut"])
    args = ("--drain-timeout", "1", "--stop-timeout", "3")
    with daphne_process(env, log_path=log_path, args=args) as (base, proc), contributors_locked(url):
        stuck = [create_contributor_in_background(base) for _ in range(2)]
        time.sleep(1)  # both requests are in their views, waiting for the lock
        proc.send_signal(signal.SIGTERM)
        wait_exit(proc, STOP_BOUND)
        for thread, _answer in stuck:
            thread.join(10)
    answers = [answer["r"] for _thread, answer in stuck]
    restarting = [r for r in answers if isinstance(r, requests.Response) and r.status_code == 503]
    assert len(restarting) == 1 and restarting[0].json()["code"] == "restarting", answers
    assert "cutting a connection failed" in log_path.read_text()


def test_a_drain_deadline_past_the_stop_deadline_is_refused_at_start():
    done = subprocess.run(
        [sys.executable, "-m", "luckrig_site.serve_daphne", "--drain-timeout", "30", "--stop-timeout", "25"]
        + ["luckrig_site.asgi:application"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--drain-timeout must be positive and below --stop-timeout" in done.stderr

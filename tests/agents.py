"""A real tracker for agents to join, and real node-agent processes: shared by the node-agent tests
(tests/node_agent/conftest.py) and the browser tests (tests/browser/conftest.py)."""

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.processes import ROOT, daphne, free_port, fresh_database, migrate, tracker_env

# Generous quotas, private URLs allowed (everything is on 127.0.0.1).
AGENT_TRACKER_ENV = {
    "LIMITED_TOKENS_PER_DAY": "100000",
    "CONTRIBUTOR_TOKENS_PER_DAY": "100000",
    "RATE_TOKEN_CREATE": "100000/m",
    "RATE_CONTRIBUTOR_CREATE": "1000/d",
    "RATE_NODE_WRITE": "1000/h",
    "ALLOW_PRIVATE_NODE_URLS": "1",
    # Short, so that "unavailable within one heartbeat interval" is testable (agents here beat every 1 s).
    "HEARTBEAT_INTERVAL_SEC": "2",
    # Tokens as short as 5 s may be asked for, so that the gateway's renewal is testable in seconds
    # (tests/relay/test_gateway.py); the default lifetime is unchanged.
    "TOKEN_TTL_MIN_SEC": "5",
}


class Tracker:
    def __init__(self, base: str, data_dir: Path, database_url: str, env: dict | None = None):
        self.base, self.data_dir, self.database_url = base, data_dir, database_url
        self.env = env or {}  # the tracker's environment, for `manage.py` commands on the same database

    def execute(self, sql: str, params: tuple = ()) -> list:
        """Run SQL on the tracker's database (SQLite or PostgreSQL): to write states that have no API here
        (revocations are a moderator's action) or to read what an agent delivered. Returns the rows."""
        if self.database_url.startswith("sqlite"):
            import sqlite3

            db = sqlite3.connect(self.database_url.removeprefix("sqlite:///"))
            rows = db.execute(sql.replace("%s", "?"), params).fetchall()
            db.commit()
            db.close()
            return rows
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def manage(self, *args: str, env: dict | None = None, timeout: float = 120) -> str:
        """Run `manage.py <args>` against this tracker's database and settings; returns its output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def contributor(self, handle=None) -> str:
        r = requests.post(f"{self.base}/api/contributors", json={"handle": handle} if handle else {}, timeout=10)
        r.raise_for_status()
        return r.json()["contributor_key"]

    def register(self, key: str, endpoint: str | None, **fields) -> tuple[str, str]:
        """A direct node at `endpoint`, or a relayed one (no public URL) when `endpoint` is None."""
        body = {
            **({"endpoint_url": endpoint} if endpoint else {}),
            "model_name": "smollm2-fake",
            "quantization": "Q4_1",
            "gpu": fields.pop("gpu", f"Fake GPU {time.monotonic_ns()}"),
            **fields,
        }
        r = requests.post(f"{self.base}/api/nodes", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        r.raise_for_status()
        return r.json()["node"]["id"], r.json()["node_secret"]

    def token(self, node_id: str, key: str | None = None, **extra) -> dict:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = requests.post(f"{self.base}/api/tokens", json={"node_id": node_id, **extra}, headers=headers, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()

    def node(self, node_id: str) -> dict:
        return requests.get(f"{self.base}/api/nodes/{node_id}", timeout=10).json()["node"]

    def signing_key_file(self) -> Path:
        return self.data_dir / "tracker_signing_key.pem"


@contextlib.contextmanager
def running_tracker(tmp: Path, **env_overrides: str) -> Iterator[Tracker]:
    """A fresh database (same engine as the suite), `migrate`, Daphne; stopped and dropped afterwards."""
    with fresh_database(tmp) as url:
        env = tracker_env(url, tmp, **{**AGENT_TRACKER_ENV, **env_overrides})
        migrate(env)
        with daphne(env, log_path=tmp / "tracker.log") as base:
            yield Tracker(base, tmp, url, env)


def wait_relayed(tracker: Tracker, node_id: str, log=lambda: "", seconds: float = 30) -> str:
    """Wait until a relayed node is tastable through the relay the tracker names; returns `<relay>/n/<node_id>`."""
    deadline = time.monotonic() + seconds
    while True:
        url = tracker.node(node_id).get("endpoint_url") or ""
        public = url.removesuffix("/v1")
        if public:
            with contextlib.suppress(requests.RequestException):
                if requests.get(public + "/health", timeout=2).status_code == 200:
                    return public
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {node_id} never became tastable through a relay ({url!r}): " + log())
        time.sleep(0.1)


class RelayProcess:
    def __init__(self, proc: subprocess.Popen, base: str, relay_id: str, secret: str, log_path: Path, args: list):
        self.proc, self.base, self.relay_id, self.secret, self.log_path, self.args = (
            proc,
            base,
            relay_id,
            secret,
            log_path,
            args,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class RelayStarter:
    """`starter.start()` → a registered, running `luckrig-relay` process for `tracker` (heartbeat every second);
    `restart(relay)` starts the same relay again on the same port; `stop_all()` ends them."""

    def __init__(self, tracker: Tracker, tmp_path: Path):
        self.tracker, self.tmp_path = tracker, tmp_path
        self.started: list[RelayProcess] = []
        self.logs = []

    def start(self, relay_id: str | None = None, port: int | None = None, **flags) -> RelayProcess:
        relay_id = relay_id or f"relay-{secrets.token_hex(3)}"
        port = port or free_port()
        base = f"http://127.0.0.1:{port}"
        secret = self.tracker.manage("relay", "add", relay_id, base).strip().splitlines()[-1]
        args = [
            sys.executable,
            "-m",
            "relay",
            "--tracker",
            self.tracker.base,
            "--relay-id",
            relay_id,
            "--relay-secret",
            secret,
            "--port",
            str(port),
            "--state-dir",
            str(self.tmp_path / f"relay-{relay_id}"),
            "--heartbeat-interval",
            "1",
            "--allow-private-rigs",  # every rig and relay of the tests is on 127.0.0.1
            "1",
        ]
        for name, value in flags.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        relay = RelayProcess(None, base, relay_id, secret, self.tmp_path / f"relay-{relay_id}.log", args)
        return self._run(relay)

    def _run(self, relay: RelayProcess) -> RelayProcess:
        log = open(relay.log_path, "a")  # noqa: SIM115 - closed in stop_all
        self.logs.append(log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_RELAY_")}
        relay.proc = subprocess.Popen(relay.args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if relay not in self.started:
            self.started.append(relay)
        deadline = time.monotonic() + 20
        while True:
            if relay.proc.poll() is not None:
                raise RuntimeError(f"relay exited {relay.proc.returncode}: {relay.log()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(relay.base + "/health", timeout=2).status_code == 200:
                    return relay
            if time.monotonic() > deadline:
                raise RuntimeError("relay did not start: " + relay.log())
            time.sleep(0.1)

    def restart(self, relay: RelayProcess) -> RelayProcess:
        return self._run(relay)

    def stop_all(self) -> None:
        for relay in self.started:
            if relay.proc.poll() is None:
                relay.proc.terminate()
        for relay in self.started:
            try:
                relay.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                relay.proc.kill()
        for log in self.logs:
            log.close()
        # The tracker forgets them, so that later tests' nodes are not assigned to a relay that is gone.
        for relay in self.started:
            with contextlib.suppress(RuntimeError):
                self.tracker.manage("relay", "remove", relay.relay_id)


class AgentProcess:
    def __init__(self, proc: subprocess.Popen, base: str, node_id: str, secret: str, log_path: Path, config_dir: Path):
        self.proc, self.base, self.node_id, self.secret = proc, base, node_id, secret
        self.log_path, self.config_dir = log_path, config_dir
        self.public: str | None = None  # a relayed node's base as tasters see it: <relay>/n/<node_id>

    @property
    def v1(self) -> str:
        """Where tasters call this rig: through its relay when it is relayed, else the agent itself."""
        return (self.public or self.base) + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class AgentStarter:
    """`starter.start(upstream_url, **flags)` → a running agent process joined to `tracker`; `stop_all()` ends
    every agent it started. Logs and config dirs go under `tmp_path`."""

    def __init__(self, tracker: Tracker, tmp_path: Path):
        self.tracker, self.tmp_path = tracker, tmp_path
        self.started: list[subprocess.Popen] = []
        self.logs = []

    def start(
        self,
        upstream: str,
        *,
        key: str | None = None,
        node: tuple[str, str] | None = None,
        config_dir=None,
        port: int | None = None,
        wait_online: bool = True,
        tracker_url: str | None = None,
        register: dict | None = None,
        relayed: bool = False,
        **flags,
    ) -> AgentProcess:
        """`register`: extra node fields for the registration (display_name, gpu, ...), when `node` is not given.
        `relayed`: register the node without a public URL; the agent dials a relay (start one first) and this
        returns once tasters can reach it there (`agent.v1` is then the relay's URL)."""
        tracker, tmp_path = self.tracker, self.tmp_path
        port = port or free_port()
        node_id, secret = node or tracker.register(
            key or tracker.contributor(), None if relayed else f"http://127.0.0.1:{port}/v1", **(register or {})
        )
        config_dir = Path(config_dir or tmp_path / f"agent-{node_id}")
        log_path = tmp_path / f"agent-{node_id}-{len(self.started)}.log"
        args = [
            sys.executable,
            "-m",
            "node_agent",
            "serve",
            "--tracker",
            tracker_url or tracker.base,
            "--node-id",
            node_id,
            "--node-secret",
            secret,
            "--upstream",
            upstream,
            "--port",
            str(port),
            "--config-dir",
            str(config_dir),
            "--heartbeat-interval",
            "1",
        ]
        for name, value in flags.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")}
        log = open(log_path, "w")  # noqa: SIM115 - closed in stop_all
        self.logs.append(log)
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited {proc.returncode}: {log_path.read_text()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(base + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("agent did not start: " + log_path.read_text())
            time.sleep(0.1)
        if wait_online:  # the first heartbeat has reached the tracker: tokens can be issued
            deadline = time.monotonic() + 10
            while tracker.node(node_id)["health"]["status"] not in ("available", "busy"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent's heartbeat did not reach the tracker: " + log_path.read_text())
                time.sleep(0.05)
        agent = AgentProcess(proc, base, node_id, secret, log_path, config_dir)
        if relayed:
            agent.public = wait_relayed(tracker, node_id, lambda: log_path.read_text())
        return agent

    def stop_all(self) -> None:
        for proc in self.started:
            proc.terminate()
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()

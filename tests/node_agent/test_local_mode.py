"""The `local` radius (issue 16): a rig pinned `--visibility local` serves the devices paired with it and nothing
else, and never speaks to a tracker: no registration, heartbeat, key fetch, usage report or relay, even when a
tracker is configured. Only the operator changing the pin widens it.

In process: the agent app on an aiohttp test server on loopback, in front of a fake model server. The process-level
Done-when test (two rigs, the router, an OpenAI SDK session across two network namespaces) is
tests/node_agent/test_local_home.py."""

import asyncio
import contextlib
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node_agent import cli, config, identity, lan_tls, paired
from node_agent.circles import CircleGuard
from node_agent.config import AgentConfig
from node_agent.errors import AgentError
from node_agent.server import AGENT, build_app
from tests.node_agent.fakes import FakeTracker

BODY = {"messages": [{"role": "user", "content": "hi"}]}


@contextlib.asynccontextmanager
async def local_agent(upstream: str, config_dir, **settings):
    app = build_app(AgentConfig(visibility="local", upstream=upstream, config_dir=str(config_dir), **settings))
    async with TestClient(TestServer(app)) as client:
        yield client, app[AGENT]


def code(body: dict) -> str:
    return body["error"]["code"]


def test_a_local_rig_serves_paired_devices_only_and_never_calls_the_tracker(tmp_path, fake_upstream):
    rig_dir = tmp_path / "rig"
    rig = identity.load_or_create(rig_dir)
    laptop, stranger = identity.load_or_create(tmp_path / "laptop"), identity.load_or_create(tmp_path / "stranger")
    paired.PairedStore(rig_dir).pin(laptop.public_b64, "laptop")
    raw = json.dumps(BODY).encode()

    async def run(tracker: FakeTracker):
        # A tracker and node credentials in the config (as a rig that once joined has them) do not widen the pin.
        settings = {"tracker": tracker.base, "node_id": tracker.node_id, "node_secret": tracker.node_secret}
        async with local_agent(fake_upstream.base, rig_dir, heartbeat_interval=0.1, **settings) as (client, agent):
            health = await (await client.get("/health")).json()
            assert health["ok"] and health["visibility"] == "local" and health["node_id"] == ""
            assert health["reachability"] == {"relay": "off"}
            assert agent.link is None and agent.tunnel is None and agent.verifier is None

            def sign(key, method: str, path: str, body: bytes = b"") -> dict:
                return paired.sign_headers(key, method, path, body, recipient=rig.fingerprint)

            models = await client.get("/v1/models", headers=sign(laptop, "GET", "/v1/models"))
            assert models.status == 200 and (await models.json())["data"][0]["id"] == fake_upstream.model
            for stream in (False, True):
                body = json.dumps(BODY | {"stream": stream}).encode()
                headers = sign(laptop, "POST", "/v1/chat/completions", body) | {"Content-Type": "application/json"}
                r = await client.post("/v1/chat/completions", data=body, headers=headers)
                text = await r.text()
                assert r.status == 200, text
                assert text.rstrip().endswith("data: [DONE]") if stream else json.loads(text)["choices"]

            # No tasting token reaches a local rig: there are no tracker keys to check one with.
            token = {"Authorization": f"Bearer {tracker.token()}"}
            paths = (
                ("/v1/chat/completions", client.post),
                ("/chat/completions", client.post),
                ("/v1/models", client.get),
            )
            for path, call in paths:
                for headers in (token, {}):
                    r = await call(path, json=BODY, headers=headers)
                    assert (r.status, code(await r.json())) == (401, "local_only"), path
            unpaired = sign(stranger, "POST", "/v1/chat/completions", raw)
            r = await client.post("/v1/chat/completions", data=raw, headers=unpaired)
            assert (r.status, code(await r.json())) == (401, "not_paired")
            # A paired key's signature on a body over the limit: 413 before anything else, nothing served.
            big = b"x" * (2 * 1024 * 1024)
            r = await client.post(
                "/v1/chat/completions", data=big, headers=sign(laptop, "POST", "/v1/chat/completions", big)
            )
            assert (r.status, code(await r.json())) == (413, "body_too_large")
            # A clock ahead by more than the window is refused as one behind it is.
            ahead = paired.sign_headers(
                laptop,
                "POST",
                "/v1/chat/completions",
                raw,
                recipient=rig.fingerprint,
                now=time.time() + 2 * paired.WINDOW,
            )
            r = await client.post("/v1/chat/completions", data=raw, headers=ahead)
            assert (r.status, code(await r.json())) == (401, "stale_signature")

            await asyncio.sleep(0.5)  # five heartbeat intervals: none is sent
            assert agent.ledger.pending_usage()[2] == []
            assert agent.lan_txt()["radius"] == "local" and "node" not in agent.lan_txt()

    with FakeTracker() as tracker:
        asyncio.run(run(tracker))
        assert tracker.paths == [] and tracker.ws_attempts == []


def test_the_tracker_cannot_widen_a_local_rig():
    guard = CircleGuard(pinned_visibility="local")
    guard.apply({"visibility": "public", "circles": ["c_1"], "owner_id": "u_1"})
    assert guard.visibility == "local"
    with pytest.raises(AgentError) as refused:
        guard.check("c_1", subject="u_1")
    assert (refused.value.status, refused.value.code) == (401, "local_only")


def test_only_the_operator_changing_the_pin_widens_a_local_rig(tmp_path, monkeypatch):
    for name in ("VISIBILITY", "TRACKER", "NODE_ID", "CONFIG_DIR"):
        monkeypatch.delenv(config.ENV_PREFIX + name, raising=False)
    config.save_config(tmp_path, {"visibility": "local", "upstream": "http://127.0.0.1:9"})
    tracker_flags = {"config_dir": str(tmp_path), "tracker": "https://t.example", "node_id": "n", "node_secret": "s"}
    assert config.resolve(tracker_flags).local  # a tracker flag is not the pin
    config.save_config(tmp_path, {"visibility": "local", "tracker": "https://t.example", "node_id": "n"})
    assert config.resolve({"config_dir": str(tmp_path)}).local  # nor a tracker in the config
    # The explicit command: another --visibility (flag or environment) is the operator changing the pin.
    assert config.resolve(tracker_flags | {"visibility": "public"}).visibility == "public"
    monkeypatch.setenv(config.ENV_PREFIX + "VISIBILITY", "circle")
    assert config.resolve({"config_dir": str(tmp_path)}).visibility == "circle"


def test_join_does_not_widen_a_local_rig_unless_told_how_far(tmp_path, monkeypatch, capsys):
    for name in ("VISIBILITY", "TRACKER", "CONFIG_DIR", "UPSTREAM"):
        monkeypatch.delenv(config.ENV_PREFIX + name, raising=False)
    config.save_config(tmp_path, {"visibility": "local", "upstream": "http://127.0.0.1:9"})
    argv = ["join", "--tracker", "http://127.0.0.1:9", "--config-dir", str(tmp_path), "--no-serve", "--yes"]
    assert cli.main(argv) == 1
    said = capsys.readouterr()
    assert "this rig is pinned local" in said.err and "--visibility public, unlisted or circle" in said.err
    assert "Looking for a local LLM server" not in said.out  # refused before anything was asked
    assert config.saved_config(tmp_path)["visibility"] == "local"


def test_serve_needs_a_tracker_unless_pinned_local(tmp_path, monkeypatch, capsys):
    for name in ("VISIBILITY", "TRACKER", "NODE_ID", "NODE_SECRET", "UPSTREAM", "CONFIG_DIR"):
        monkeypatch.delenv(config.ENV_PREFIX + name, raising=False)
    assert cli.main(["serve", "--upstream", "http://127.0.0.1:9", "--config-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing --tracker, --node-id, --node-secret" in err and "--visibility local" in err
    assert cli.main(["serve", "--visibility", "local", "--config-dir", str(tmp_path)]) == 2
    assert "luckrig-node serve: missing --upstream (or run `luckrig-node join` first)" in capsys.readouterr().err


def test_status_says_the_radius_and_that_it_is_pinned(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(config.ENV_PREFIX + "VISIBILITY", raising=False)
    # A rig once joined, pinned local since: status names no tracker it would call, and calls none.
    saved = {"visibility": "local", "tracker": "http://127.0.0.1:9", "node_id": "n", "upstream": "http://127.0.0.1:9"}
    config.save_config(tmp_path, saved | {"port": 9})
    assert cli.main(["status", "--config-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Tracker:   none (http://127.0.0.1:9 is configured but not contacted)" in out
    assert "Radius:    local, pinned here (visibility local: paired devices only; no tracker is contacted)" in out
    assert "Tracker says" not in out


def test_status_reads_a_running_local_rigs_health_over_https(tmp_path, monkeypatch, capsys, fake_upstream):
    """A local rig serves HTTPS (node_agent/serving.py): `status` on the rig says so and still finds it running."""
    monkeypatch.delenv(config.ENV_PREFIX + "VISIBILITY", raising=False)

    async def run():
        app = build_app(AgentConfig(visibility="local", upstream=fake_upstream.base, config_dir=str(tmp_path)))
        app[AGENT].tls = True
        server = TestServer(app)
        await server.start_server(ssl=lan_tls.server_context(identity.load_or_create(tmp_path)))
        port = server.port
        config.save_config(tmp_path, {"visibility": "local", "upstream": fake_upstream.base, "port": port})
        try:
            assert await asyncio.to_thread(cli.main, ["status", "--config-dir", str(tmp_path)]) == 0
        finally:
            await server.close()
        return port

    port = asyncio.run(run())
    out = capsys.readouterr().out
    assert f"Listening: https://127.0.0.1:{port}/v1 (this machine)" in out
    assert "Agent:     running, upstream ok" in out and "serving as local" in out, out

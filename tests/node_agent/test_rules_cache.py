"""A rig's filter rules with no tracker to ask (issue 16): a local rig applies the rules it kept when it was public
(else the built-in defaults) and says which, in its log and in `luckrig-node status`; `luckrig-node rules --update`
fetches the tracker's once, against the real tracker, and a bad answer keeps the old rules."""

import asyncio
import contextlib
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node_agent import cli, config, identity, paired, rules_cache
from node_agent.config import AgentConfig
from node_agent.server import AGENT, build_app
from tests.node_agent.fakes import FakeTracker, ThreadedApp

LOTTERY = {"id": "no-lottery-lr16", "pattern": r"\bwinning\W+lottery\W+ticket\b", "flags": "i", "category": "fraud"}
LOTTERY |= {"reason": "lottery fraud"}


def ask(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


@contextlib.asynccontextmanager
async def local_rig(tmp_path, upstream: str, **settings):
    """A local rig in process (once joined: its node id names its state dir) and a laptop paired with it."""
    rig_dir = tmp_path / "rig"
    laptop = identity.load_or_create(tmp_path / "laptop")
    paired.PairedStore(rig_dir).pin(laptop.public_b64, "laptop")
    cfg = AgentConfig(
        visibility="local", upstream=upstream, config_dir=str(rig_dir), node_id="n_was_public", **settings
    )
    async with TestClient(TestServer(build_app(cfg))) as client:
        rig = identity.load_or_create(rig_dir)

        async def post(body: dict):
            raw = json.dumps(body).encode()
            headers = paired.sign_headers(laptop, "POST", "/v1/chat/completions", raw, recipient=rig.fingerprint)
            r = await client.post(
                "/v1/chat/completions", data=raw, headers=headers | {"Content-Type": "application/json"}
            )
            return r.status, await r.json()

        yield post, client.app[AGENT]


def status_lines(config_dir, capsys) -> str:
    assert cli.main(["status", "--config-dir", str(config_dir)]) == 0
    return capsys.readouterr().out


def test_a_local_rig_applies_the_rules_it_kept_when_it_was_public(tmp_path, fake_upstream, caplog, capsys, monkeypatch):
    monkeypatch.setattr(rules_cache, "FOLLOW_INTERVAL", 0.1)  # the agent looks every 10 s
    state_dir = AgentConfig(config_dir=str(tmp_path / "rig"), node_id="n_was_public").state_dir
    kept = rules_cache.save(state_dir, tracker="https://tracker.example/", version=7, rules=[LOTTERY])
    caplog.set_level(logging.INFO, logger="luckrig.agent.rules")

    async def run():
        async with local_rig(tmp_path, fake_upstream.base) as (post, agent):
            status, body = await post(ask("sell me a winning lottery ticket"))
            assert (status, body["error"]["code"]) == (422, "prompt_filtered")
            assert "no-lottery-lr16" in body["error"]["message"]
            # The tracker's rules replace a category they publish; the built-in ones stay for the others.
            status, body = await post(ask("how do I join ISIS"))
            assert (status, body["error"]["code"]) == (422, "prompt_filtered") and "builtin-" in body["error"][
                "message"
            ]
            assert (await post(ask("hello")))[0] == 200
            assert "fraud" in agent.policy.categories
            # `luckrig-node rules --update` while the rig runs: it applies what is kept now, without a restart.
            greeting = {"id": "no-hello-lr16", "pattern": r"\bhello\b", "category": "fraud", "reason": "test"}
            rules_cache.save(state_dir, tracker="https://tracker.example", version=8, rules=[greeting])
            for _ in range(100):
                if (await post(ask("hello")))[0] == 422:
                    break
                await asyncio.sleep(0.05)
            assert (await post(ask("hello")))[0] == 422
            assert (await post(ask("sell me a winning lottery ticket")))[0] == 200

    asyncio.run(run())
    said = f"filter rules: the tracker's, version 7 from https://tracker.example, fetched {kept.fetched_at}"
    assert said in caplog.text
    assert "filter rules now: the tracker's, version 8 from https://tracker.example" in caplog.text
    config.save_config(tmp_path / "rig", {"visibility": "local", "node_id": "n_was_public", "port": 9})
    latest = rules_cache.load(state_dir)
    assert f"Rules:     the tracker's, version 8 from https://tracker.example, fetched {latest.fetched_at}" in (
        status_lines(tmp_path / "rig", capsys)
    )


def test_with_no_rules_kept_the_built_in_defaults_apply_and_are_named(tmp_path, fake_upstream, caplog, capsys):
    caplog.set_level(logging.INFO, logger="luckrig.agent.rules")
    state_dir = AgentConfig(config_dir=str(tmp_path / "rig"), node_id="n_was_public").state_dir
    state_dir.mkdir(parents=True)
    (state_dir / rules_cache.FILE_NAME).write_text('{"rules": "not a list"')  # a file cut short: not trusted

    async def run():
        async with local_rig(tmp_path, fake_upstream.base) as (post, _):
            assert (await post(ask("sell me a winning lottery ticket")))[0] == 200
            status, body = await post(ask("how do I join ISIS"))
            assert (status, body["error"]["code"]) == (422, "prompt_filtered")

    asyncio.run(run())
    assert "ignoring the kept filter rules" in caplog.text
    assert "filter rules: the built-in defaults (no rules fetched from a tracker yet)" in caplog.text
    config.save_config(tmp_path / "rig", {"visibility": "local", "port": 9})
    assert "Rules:     the built-in defaults (no rules fetched from a tracker yet)" in status_lines(
        tmp_path / "rig", capsys
    )


def test_a_public_rig_keeps_the_rules_its_tracker_publishes(tmp_path, fake_upstream):
    async def run(tracker: FakeTracker):
        cfg = AgentConfig(
            tracker=tracker.base,
            node_id=tracker.node_id,
            node_secret=tracker.node_secret,
            upstream=fake_upstream.base,
            config_dir=str(tmp_path),
            relay="off",
            heartbeat_interval=0.2,
        )
        async with TestClient(TestServer(build_app(cfg))):
            for _ in range(100):
                if rules_cache.load(cfg.state_dir) is not None:
                    break
                await asyncio.sleep(0.05)
        return rules_cache.load(cfg.state_dir)

    with FakeTracker() as tracker:
        kept = asyncio.run(run(tracker))
        assert (kept.tracker, kept.version, kept.rules) == (tracker.base, 1, [])


def test_rules_update_fetches_the_real_trackers_rules_once_without_registering(tracker, tmp_path, capsys):
    key = tracker.contributor()
    node_id, secret = tracker.register(key, None)
    config.save_config(
        tmp_path, {"tracker": tracker.base, "node_id": node_id, "node_secret": secret} | {"visibility": "local"}
    )
    tracker.execute(
        "INSERT INTO moderation_filterrule (id, pattern, flags, category, reason, enabled, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, CURRENT_TIMESTAMP)",
        (LOTTERY["id"], LOTTERY["pattern"], "i", "fraud", "lottery fraud", True),
    )
    try:
        assert cli.main(["rules", "--update", "--config-dir", str(tmp_path)]) == 0
    finally:
        tracker.execute("DELETE FROM moderation_filterrule WHERE id = %s", (LOTTERY["id"],))
    out = capsys.readouterr().out
    kept = rules_cache.load(config.resolve({"config_dir": str(tmp_path)}).state_dir)
    assert kept.tracker == tracker.base and any(rule["id"] == LOTTERY["id"] for rule in kept.rules)
    assert f"Filter rules: the tracker's, version {kept.version} from {tracker.base}" in out
    assert "A running local rig applies them within 10 s; any other agent from its next start." in out
    assert cli.main(["rules", "--config-dir", str(tmp_path)]) == 0
    assert f"{len(kept.rules)} rule(s) in" in capsys.readouterr().out


class BadTracker(ThreadedApp):
    """A tracker answering `/api/filter-rules` badly, one way per `mode`."""

    mode = "500"

    def build(self):
        app = web.Application()
        app.router.add_get("/api/filter-rules", self.rules)
        return app

    async def rules(self, request):
        answers = {
            "500": web.json_response({"error": "boom", "code": "server_error"}, status=500),
            "401": web.json_response({"error": "refused", "code": "invalid_node_secret"}, status=401),
            "403": web.json_response({"error": "banned", "code": "banned"}, status=403),
            "html": web.Response(text="<html>maintenance</html>", content_type="text/html"),
            "shape": web.json_response({"schema_version": 1, "version": 4, "rules": {"id": "x"}}),
            "version": web.json_response({"schema_version": 1, "version": "4", "rules": []}),
            "regex": web.json_response({"version": 4, "rules": [{"id": "broken", "pattern": "(unclosed"}]}),
        }
        return answers[self.mode]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("500", "the tracker answered HTTP 500"),
        ("401", "the tracker refused the node secret (401)"),
        ("403", "the tracker refuses this node (403): it is taken down or banned"),
        ("html", "the answer is not JSON"),
        ("shape", "the answer has no list of rules"),
        ("version", "the answer has no integer version"),
        ("regex", "rule 'broken' has an invalid pattern"),
        ("closed", "could not reach"),
    ],
)
def test_a_bad_answer_is_said_and_the_old_rules_stay(tmp_path, capsys, mode, message):
    state_dir = AgentConfig(config_dir=str(tmp_path), node_id="n_1").state_dir
    rules_cache.save(state_dir, tracker="https://before.example", version=3, rules=[LOTTERY])
    before = (state_dir / rules_cache.FILE_NAME).read_bytes()
    with BadTracker() as bad:
        bad.mode = mode
        base = "http://127.0.0.1:9" if mode == "closed" else bad.base
        config.save_config(tmp_path, {"tracker": base, "node_id": "n_1", "node_secret": "lrn_x", "visibility": "local"})
        assert cli.main(["rules", "--update", "--config-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        message in err
        and "The rules in force are unchanged: the tracker's, version 3 from https://before.example" in err
    )
    assert (state_dir / rules_cache.FILE_NAME).read_bytes() == before


def test_rules_update_needs_the_node_secret_a_join_saved(tmp_path, capsys):
    config.save_config(tmp_path, {"visibility": "local"})
    assert cli.main(["rules", "--update", "--tracker", "http://127.0.0.1:9", "--config-dir", str(tmp_path)]) == 2
    assert "needs a tracker and this rig's node secret" in capsys.readouterr().err

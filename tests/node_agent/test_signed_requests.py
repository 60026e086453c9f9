"""Requests signed by a paired device (issue 16, node_agent/paired.py): what an agent serves to a device it has paired
with, and every way such a request is refused (unpaired, tampered, stale, replayed — also after a restart —, a nonce
that cannot be recorded, malformed headers). In process: the agent app on aiohttp's test server, linked to the fake
tracker."""

import asyncio
import json
import os
import stat
import time

import pytest

from node_agent import cli, paired
from tests.node_agent.test_circles import running_agent  # the agent app in process, linked to the fake tracker
from tests.node_agent.test_pairing import BODY, Clock, keys, signed


def test_a_paired_device_signs_its_requests_and_everything_else_is_refused(tmp_path, fake_tracker, fake_upstream):
    config_dir = tmp_path / "rig"
    rig, laptop, stranger = keys(tmp_path, "rig", "laptop", "stranger")
    store = paired.PairedStore(config_dir)
    store.pin(laptop.public_b64, "laptop")
    raw = json.dumps(BODY).encode()

    async def chat(client, headers, body: bytes = raw):
        r = await client.post("/v1/chat/completions", data=body, headers=headers | {"Content-Type": "application/json"})
        return r.status, await r.json()

    def code(outcome) -> tuple[int, str]:
        status, body = outcome
        assert set(body) == {"error"} and body["error"]["type"] == "authentication_error", body
        return status, body["error"]["code"]

    async def run():
        async with running_agent(fake_tracker, fake_upstream, config_dir, heartbeat_interval=60) as (client, agent):
            to_rig = rig.fingerprint
            models = await client.get("/v1/models", headers=signed(laptop, to_rig, "GET", "/v1/models"))
            assert models.status == 200 and (await models.json())["data"][0]["id"]
            headers = signed(laptop, to_rig, "POST", "/v1/chat/completions", raw)
            status, answer = await chat(client, headers)
            assert status == 200 and answer["choices"][0]["message"]["content"], answer
            # The owner's own device: nothing in the usage log the tracker is sent, no token budget.
            assert agent.ledger.pending_usage()[2] == []

            assert code(await chat(client, headers)) == (401, "replayed_signature")
            altered = json.dumps({"messages": [{"role": "user", "content": "other"}]}).encode()
            fresh = signed(laptop, to_rig, "POST", "/v1/chat/completions", raw)
            assert code(await chat(client, fresh, altered)) == (401, "invalid_signature")
            forged = fresh | {paired.HEADER_SIGNATURE: signed(stranger, to_rig, "POST", "/x")[paired.HEADER_SIGNATURE]}
            assert code(await chat(client, forged)) == (401, "invalid_signature")
            other_rig = signed(laptop, stranger.fingerprint, "POST", "/v1/chat/completions", raw)
            assert code(await chat(client, other_rig)) == (401, "invalid_signature")
            stale = signed(laptop, to_rig, "POST", "/v1/chat/completions", raw, now=time.time() - 2 * paired.WINDOW)
            assert code(await chat(client, stale)) == (401, "stale_signature")
            unpaired = signed(stranger, to_rig, "POST", "/v1/chat/completions", raw)
            assert code(await chat(client, unpaired)) == (401, "not_paired")
            partial = {paired.HEADER_KEY: laptop.fingerprint}
            assert code(await chat(client, partial)) == (401, "invalid_signature")
            # Unsigned and without a token: refused as before pairing.
            assert code(await chat(client, {})) == (401, "invalid_token")
            # A tasting token still works, and its usage is logged for the tracker as before.
            status, _ = await chat(client, {"Authorization": f"Bearer {fake_tracker.token()}"})
            assert status == 200 and len(agent.ledger.pending_usage()[2]) == 1

            # Unpairing (the command, on the same config dir) refuses the laptop's very next request.
            assert await asyncio.to_thread(cli.main, ["unpair", "laptop", "--config-dir", str(config_dir)]) == 0
            again = signed(laptop, to_rig, "POST", "/v1/chat/completions", raw)
            assert code(await chat(client, again)) == (401, "not_paired")
            gone = await client.get("/v1/models", headers=signed(laptop, to_rig, "GET", "/v1/models"))
            assert (gone.status, (await gone.json())["error"]["code"]) == (401, "not_paired")

    asyncio.run(run())


def test_a_signed_request_is_not_served_again_by_the_rig_restarted(tmp_path, fake_tracker, fake_upstream):
    config_dir = tmp_path / "rig"
    rig, laptop = keys(tmp_path, "rig", "laptop")
    paired.PairedStore(config_dir).pin(laptop.public_b64, "laptop")
    raw = json.dumps(BODY).encode()
    headers = signed(laptop, rig.fingerprint, "POST", "/v1/chat/completions", raw)

    async def run():
        statuses = []
        for _ in range(2):  # the same rig (config dir, key, paired.json), started again
            async with running_agent(fake_tracker, fake_upstream, config_dir, heartbeat_interval=60) as (client, _):
                r = await client.post("/v1/chat/completions", data=raw, headers=headers)
                statuses.append(r.status)
        return statuses

    assert asyncio.run(run()) == [200, 401]
    assert stat.S_IMODE(os.stat(config_dir / paired.NONCES_FILE).st_mode) == 0o600


def test_a_signed_request_is_refused_when_its_nonce_cannot_be_recorded(tmp_path, fake_tracker, fake_upstream):
    """A nonce store that cannot be written (here: a directory in its place) refuses the request with a clear 503,
    never serves it unrecorded, at start as on a running agent; the store fixed, requests are served again."""
    config_dir = tmp_path / "rig"
    rig, laptop = keys(tmp_path, "rig", "laptop")
    paired.PairedStore(config_dir).pin(laptop.public_b64, "laptop")
    raw = json.dumps(BODY).encode()
    store = config_dir / paired.NONCES_FILE

    async def run():
        outcomes = []

        async def ask(client):
            headers = signed(laptop, rig.fingerprint, "POST", "/v1/chat/completions", raw)
            r = await client.post("/v1/chat/completions", data=raw, headers=headers)
            outcomes.append((r.status, (await r.json()).get("error", {}).get("code")))

        async with running_agent(fake_tracker, fake_upstream, config_dir, heartbeat_interval=60) as (client, _):
            await ask(client)
            store.unlink()
            store.mkdir()  # unwritable from now on, for root too
            before = len(fake_upstream.requests)
            await ask(client)
            await ask(client)
            unserved = len(fake_upstream.requests) == before  # refused before the model server was asked
            store.rmdir()
            await ask(client)
        async with running_agent(fake_tracker, fake_upstream, config_dir, heartbeat_interval=60) as (client, _):
            store.unlink()
            store.mkdir()  # and an agent started with an unreadable store refuses as well
            await ask(client)
        return outcomes, unserved

    outcomes, unserved = asyncio.run(run())
    refused = (503, "nonce_store_unavailable")
    assert outcomes == [(200, None), refused, refused, (200, None), refused] and unserved


def test_the_nonce_log_keeps_only_live_entries_across_restarts_and_is_compacted(tmp_path, monkeypatch):
    clock = Clock(10_000.0)
    path = tmp_path / paired.NONCES_FILE
    log = paired.NonceLog(path, clock=clock)
    log.record("old-nonce-" + "o" * 10, clock.now + 5)
    log.record("live-nonce-" + "l" * 10, clock.now + 2 * paired.WINDOW)
    with path.open("a") as cut:
        cut.write("12")  # a line cut short by a crash: skipped, not fatal
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    clock.now += 10
    again = paired.NonceLog(path, clock=clock)  # the agent started again
    assert "live-nonce-" + "l" * 10 in again and "old-nonce-" + "o" * 10 not in again and len(again) == 1
    assert "live-nonce" not in path.read_text()  # hashes only

    monkeypatch.setattr(paired, "COMPACT_AT", 10)
    for i in range(30):
        again.record(f"nonce-number-{i:04d}", clock.now + 1)
        clock.now += 2
        again.prune(clock.now)
    assert len(path.read_text().splitlines()) <= 20 and len(again) <= 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert f"nonce-number-{29:04d}" in paired.NonceLog(path, clock=Clock(clock.now - 2))


def test_a_streamed_answer_to_a_paired_device_reaches_it(tmp_path, fake_tracker, fake_upstream):
    config_dir = tmp_path / "rig"
    rig, laptop = keys(tmp_path, "rig", "laptop")
    paired.PairedStore(config_dir).pin(laptop.public_b64, "laptop")
    raw = json.dumps(BODY | {"stream": True, "max_tokens": 5}).encode()

    async def run():
        async with running_agent(fake_tracker, fake_upstream, config_dir, heartbeat_interval=60) as (client, _):
            headers = signed(laptop, rig.fingerprint, "POST", "/v1/chat/completions", raw)
            r = await client.post("/v1/chat/completions", data=raw, headers=headers)
            return r.status, await r.text()

    status, text = asyncio.run(run())
    assert status == 200 and text.rstrip().endswith("data: [DONE]"), text


@pytest.mark.parametrize(
    "change",
    [
        {paired.HEADER_TIME: "²"},
        {paired.HEADER_TIME: "1" * 13},
        {paired.HEADER_NONCE: "short"},
        {paired.HEADER_NONCE: "n" * 20 + "\u200b"},
        {paired.HEADER_SIGNATURE: "*" * 86},
        {paired.HEADER_SIGNATURE: "A" * 85},
        {paired.HEADER_KEY: ""},
    ],
)
def test_malformed_signature_headers_are_refused_not_crashed_on(tmp_path, change):
    rig, laptop = keys(tmp_path, "rig", "laptop")
    store = paired.PairedStore(tmp_path / "rig")
    store.pin(laptop.public_b64, "laptop")
    checker = paired.SignatureChecker(store, rig.fingerprint)
    headers = signed(laptop, rig.fingerprint, "GET", "/v1/models") | change
    with pytest.raises(paired.AgentError) as refused:
        checker.verify("GET", "/v1/models", headers, b"")
    assert (refused.value.status, refused.value.code) == (401, "invalid_signature")

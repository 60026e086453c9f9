"""Pairing (issue 16): the code, the key exchange between a listener (device A) and a device with the code (B), the
comparison code, the paired-device store and the `pair`/`unpair` commands; then the signed requests a paired device
makes to an agent (node_agent/paired.py), and every way one is refused.

In process: the pairing listener and the agent app run on aiohttp's test servers on loopback. One test pairs two
network namespaces for real, the listener found by mDNS."""

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node_agent import cli, identity, pair_commands, paired, pairing
from tests.node_agent import netns
from tests.node_agent.test_circles import running_agent  # the agent app in process, linked to the fake tracker

ROOT = Path(__file__).resolve().parents[2]
BODY = {"messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys(tmp_path: Path, *names: str) -> list[identity.Identity]:
    return [identity.load_or_create(tmp_path / name) for name in names]


async def pair_over_http(session: pairing.PairingSession, b: identity.Identity, code: str, name: str = "laptop"):
    """B asks A's listener (on a loopback test server) with `code`: B's Peer, or the PairingError."""
    async with TestServer(pairing.listener_app(session)) as server, aiohttp.ClientSession() as http:
        try:
            return await pairing.request_pairing(http, str(server.make_url("/")), code, b, name)
        except pairing.PairingError as exc:
            return exc


def genuine_request(session: pairing.PairingSession, a, b) -> tuple[bytes, dict]:
    """(transcript, body) of B's request to A's `session`, made as `request_pairing` makes it."""
    said = pairing.transcript("B", a.public_b64, b.public_b64, "n" * 20, "desktop", "laptop")
    request = {
        "protocol": pairing.PROTOCOL,
        "public_key": b.public_b64,
        "name": "laptop",
        "nonce": "n" * 20,
        "peer": a.public_b64,
        "proof": pairing.proof(session.key, said),
        "signature": pairing._sign(b, said),
    }
    return said, request


# --- the code ---------------------------------------------------------------------------------------------------


def test_codes_are_eight_characters_without_confusable_ones_and_read_back_however_typed():
    code = pairing.new_code()
    assert len(code) == 8 and not set(code) & set("0O1IL")
    assert pairing.normalize_code(pairing.display_code(code).lower()) == code
    assert pairing.normalize_code(" abcd efgh ") == "ABCDEFGH"
    for bad in ("ABCD-EFG", "ABCD-EFG0", "ABCDEFGHJ", "", "ÀBCD-EFGH"):
        with pytest.raises(ValueError, match="8 characters"):
            pairing.normalize_code(bad)


# --- the exchange -------------------------------------------------------------------------------------------------


def test_two_devices_pair_and_show_the_same_comparison_code(tmp_path):
    a, b = keys(tmp_path, "a", "b")

    async def run():
        session = pairing.PairingSession(a, " desktop\x1b")
        # Names as typed, with what a name may not keep: both sides read them back the same way.
        peer_seen_by_b = await pair_over_http(session, b, pairing.display_code(session.code).lower(), "laptop\n")
        return session, peer_seen_by_b, session.done.result()

    session, on_b, on_a = asyncio.run(run())
    assert (on_b.public_key, on_b.fingerprint, on_b.name) == (a.public_b64, a.fingerprint, "desktop")
    assert (on_a.public_key, on_a.fingerprint, on_a.name) == (b.public_b64, b.fingerprint, "laptop")
    assert on_a.comparison == on_b.comparison and len(on_a.comparison) == 6 and on_a.comparison.isdigit()
    # It is made of the code (through K) and both keys, in that order.
    assert on_a.comparison == pairing.comparison_code(session.key, a.public_b64, b.public_b64)


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 review, open: the comparison code A shows is fixed by the code and the two keys, so someone who "
    "knows the code and sits between B and A can grind a key until A shows the digits B already shows (about 10**6 "
    "tries, minutes in Python, within the code's 5 minutes): both screens agree and each side pins the intruder",
)
def test_someone_who_knows_the_code_cannot_choose_the_comparison_code_a_will_show(tmp_path):
    a, mallory = keys(tmp_path, "a", "mallory")

    async def run():
        session = pairing.PairingSession(a, "desktop")
        # Mallory (she read the code over a shoulder) works out, before she asks, what A will show for her key.
        mine = pairing.code_key(session.code, a.public_b64)
        predicted = pairing.comparison_code(mine, a.public_b64, mallory.public_b64)
        await pair_over_http(session, mallory, session.code)
        return predicted, session.done.result().comparison

    predicted, shown = asyncio.run(run())
    assert shown != predicted


def test_a_wrong_code_is_refused_and_five_burn_the_code(tmp_path):
    a, b = keys(tmp_path, "a", "b")

    async def run():
        session = pairing.PairingSession(a, "desktop")
        wrong = next(c for c in iter(pairing.new_code, None) if c != session.code)
        refusals = [str(await pair_over_http(session, b, wrong)) for _ in range(pairing.MAX_ATTEMPTS)]
        after = await pair_over_http(session, b, session.code)
        return refusals, after, session.done.done()

    refusals, after, done = asyncio.run(run())
    assert all(r.startswith("wrong_code:") for r in refusals), refusals
    assert isinstance(after, pairing.PairingError) and str(after).startswith("code_used:")
    assert not done


def test_an_expired_code_is_refused(tmp_path):
    a, b = keys(tmp_path, "a", "b")
    clock = Clock()

    async def run():
        session = pairing.PairingSession(a, "desktop", clock=clock)
        clock.now += pairing.CODE_TTL + 1
        return await pair_over_http(session, b, session.code)

    assert str(asyncio.run(run())).startswith("code_expired:")


def test_a_code_is_used_once_and_a_replayed_request_is_refused(tmp_path):
    a, b, c = keys(tmp_path, "a", "b", "c")
    session = pairing.PairingSession(a, "desktop")
    said, request = genuine_request(session, a, b)
    _, peer = session.handle(dict(request))
    assert peer.fingerprint == b.fingerprint
    with pytest.raises(pairing.AgentError) as replayed:
        session.handle(dict(request))
    assert (replayed.value.status, replayed.value.code) == (410, "code_used")
    # A second device with the right code, after the first: refused too (single use).
    assert str(asyncio.run(pair_over_http(session, c, session.code))).startswith("code_used:")


def test_a_key_inserted_without_the_code_is_refused(tmp_path):
    """An attacker on the LAN who saw B's request swaps in their own key: B's proof covers both keys, so it no
    longer verifies, and without the code they cannot make one that does. A proof made with the code but signed by
    another key than the one carried is refused too."""
    a, b, mallory = keys(tmp_path, "a", "b", "mallory")
    session = pairing.PairingSession(a, "desktop")
    said, request = genuine_request(session, a, b)
    swapped = said.replace(b.public_b64.encode(), mallory.public_b64.encode())
    for forged in (
        request | {"public_key": mallory.public_b64, "signature": pairing._sign(mallory, swapped)},
        request | {"name": "laptop (really)"},
        request | {"proof": "0" * 64},
    ):
        with pytest.raises(pairing.AgentError) as refused:
            session.handle(forged)
        assert (refused.value.status, refused.value.code) == (401, "wrong_code")
    with pytest.raises(pairing.AgentError) as unsigned:
        session.handle(request | {"signature": pairing._sign(mallory, said)})
    assert unsigned.value.code == "invalid_signature"
    with pytest.raises(pairing.AgentError) as elsewhere:
        session.handle(request | {"peer": mallory.public_b64})
    assert elsewhere.value.code == "wrong_device"
    # None of these paired anyone; the genuine request still does.
    assert session.handle(request)[1].fingerprint == b.fingerprint


def test_a_device_that_does_not_know_the_code_cannot_answer_b(tmp_path):
    """Someone else answering B's search (a listener of their own, their own code) cannot prove the code B has."""
    a, b, mallory = keys(tmp_path, "a", "b", "mallory")

    async def impostor_answers(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"protocol": pairing.PROTOCOL, "public_key": mallory.public_b64, "name": "x"})
        sent = await request.json()
        answer = pairing.transcript("A", mallory.public_b64, sent["public_key"], sent["nonce"], "x", sent["name"])
        return web.json_response(
            {
                "public_key": mallory.public_b64,
                "proof": "f" * 64,
                "signature": pairing._sign(mallory, answer),
            }
        )

    async def run():
        app = web.Application()
        app.router.add_route("*", "/v1/pair", impostor_answers)
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            with pytest.raises(pairing.PairingError, match="did not prove it knows the code"):
                await pairing.request_pairing(http, str(server.make_url("/")), pairing.new_code(), b, "laptop")

    asyncio.run(run())


DEEP = "[" * 5000 + "]" * 5000  # valid JSON within the listener's 16 KB, too deep for Python's json module


def test_deeply_nested_json_is_refused_by_the_listener_and_by_the_device_asking_not_crashed_on(tmp_path):
    """Anyone on the LAN can post to a listener, and announce one of their own for `pair CODE` to ask: JSON too deep
    to parse is a clear refusal on both sides (never a 500, never a traceback that stops the search)."""
    a, b = keys(tmp_path, "a", "b")
    session = pairing.PairingSession(a, "desktop")

    async def deep_hello(request: web.Request) -> web.Response:
        return web.Response(text=DEEP, content_type="application/json")

    async def deep_answer(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"protocol": pairing.PROTOCOL, "public_key": a.public_b64, "name": "x"})
        return web.Response(text=DEEP, content_type="application/json")

    async def run():
        async with TestServer(pairing.listener_app(session)) as server, aiohttp.ClientSession() as http:
            r = await http.post(server.make_url("/v1/pair"), data=DEEP)
            assert (r.status, (await r.json())["error"]["code"]) == (400, "invalid_json")
        for handler in (deep_hello, deep_answer):
            app = web.Application()
            app.router.add_route("*", "/v1/pair", handler)
            async with TestServer(app) as server, aiohttp.ClientSession() as http:
                with pytest.raises(pairing.PairingError):
                    await pairing.request_pairing(http, str(server.make_url("/")), session.code, b, "laptop")
        return session.done

    assert asyncio.run(run()) is not None and session.attempts == 0 and not session.used


# --- the store and the commands --------------------------------------------------------------------------------------


def test_pinning_listing_and_unpairing_by_name_or_fingerprint(tmp_path, capsys):
    a, b, c = keys(tmp_path, "a", "b", "c")
    store = paired.PairedStore(tmp_path / "a")
    peer = pairing.Peer(b.public_b64, b.fingerprint, "laptop", "123456")
    assert pair_commands.pin(store, peer, yes=True) == 0
    assert "Comparison code: 123 456" in capsys.readouterr().out
    store.pin(c.public_b64, "phone\x1b[31m")  # a name read off the network: kept printable
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    saved = json.loads(store.path.read_text())["devices"]
    assert [(d["fingerprint"], d["name"]) for d in saved] == [(b.fingerprint, "laptop"), (c.fingerprint, "phone[31m")]
    assert saved[0]["paired_at"].endswith("Z")

    assert cli.main(["pair", "--list", "--config-dir", str(tmp_path / "a")]) == 0
    listed = capsys.readouterr().out
    assert f"{b.fingerprint}  laptop  paired " in listed and c.fingerprint in listed
    assert cli.main(["unpair", "laptop", "--config-dir", str(tmp_path / "a")]) == 0
    assert cli.main(["unpair", c.fingerprint, "--config-dir", str(tmp_path / "a")]) == 0
    assert cli.main(["unpair", "laptop", "--config-dir", str(tmp_path / "a")]) == 1
    assert "no paired device is 'laptop'" in capsys.readouterr().err
    assert paired.PairedStore(tmp_path / "a").devices() == {}


def test_nothing_is_pinned_without_a_confirmation(tmp_path, monkeypatch, capsys):
    _, b = keys(tmp_path, "a", "b")
    store = paired.PairedStore(tmp_path / "a")
    peer = pairing.Peer(b.public_b64, b.fingerprint, "laptop", "123456")
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - not a terminal
    assert pair_commands.pin(store, peer, yes=False) == 1
    assert "confirm with --yes" in capsys.readouterr().out and store.devices() == {}


# --- signed requests to an agent --------------------------------------------------------------------------------------


def signed(agent_key, recipient, method, path, body: bytes = b"", **kw) -> dict:
    return paired.sign_headers(agent_key, method, path, body, recipient=recipient, **kw)


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


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 review, open: the replay cache lives in the agent's memory, so a signed request seen on the LAN "
    "is served again by the rig restarted within its 60 s window (to whoever replays it)",
)
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


def test_an_unreadable_paired_file_pins_nobody_and_the_commands_say_why(tmp_path, capsys):
    rig, laptop = keys(tmp_path, "rig", "laptop")
    store = paired.PairedStore(tmp_path / "rig")
    store.pin(laptop.public_b64, "laptop")
    saved = json.loads(store.path.read_text())
    # A fingerprint in the file is never trusted: the key's own is what counts.
    saved["devices"][0]["fingerprint"] = "sha256:someone-else"
    store.path.write_text(json.dumps(saved))
    assert list(paired.PairedStore(tmp_path / "rig").devices()) == [laptop.fingerprint]
    store.path.write_text("{not json")
    checker = paired.SignatureChecker(store, rig.fingerprint)
    with pytest.raises(paired.AgentError) as refused:
        checker.verify("GET", "/v1/models", signed(laptop, rig.fingerprint, "GET", "/v1/models"), b"")
    assert refused.value.code == "not_paired"
    assert cli.main(["pair", "--list", "--config-dir", str(tmp_path / "rig")]) == 1
    assert "is not a list of paired devices" in capsys.readouterr().err


# --- two namespaces, for real --------------------------------------------------------------------------------------


def code_shown(process: subprocess.Popen) -> str:
    """The code a running `luckrig-node pair` shows (its output read up to there)."""
    seen = []
    while not (seen and seen[-1].startswith("Pairing code: ")):
        line = process.stdout.readline()
        assert line, "".join(seen)  # the process ended without showing a code
        seen.append(line)
    return seen[-1].split()[2]


def test_two_devices_pair_across_namespaces_found_by_mdns(tmp_path):
    """Device A runs `luckrig-node pair --yes` (a process, in its namespace, announcing on its veth address); device
    B, in the other namespace, runs `luckrig-node pair CODE --yes` and finds A by mDNS. Each pins the other."""
    with netns.veth_pair() as pair:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")} | {"PYTHONPATH": str(ROOT)}
        shower = subprocess.Popen(
            ["ip", "netns", "exec", pair.a, sys.executable, "-m", "node_agent", "pair", "--yes", "--name", "desktop"]
            + ["--config-dir", str(tmp_path / "a")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            code = code_shown(shower)
            argv = ["pair", code, "--yes", "--name", "laptop", "--config-dir", str(tmp_path / "b")]
            assert netns.run_in(pair.b, lambda: asyncio.to_thread(cli.main, argv), timeout=40) == 0
            assert shower.wait(20) == 0
            a_out = shower.stdout.read()
        finally:
            if shower.poll() is None:
                shower.kill()
                shower.wait(10)
    a_key, b_key = identity.load_existing(tmp_path / "a"), identity.load_existing(tmp_path / "b")
    on_a = paired.PairedStore(tmp_path / "a").devices()
    on_b = paired.PairedStore(tmp_path / "b").devices()
    assert [(d.fingerprint, d.name) for d in on_a.values()] == [(b_key.fingerprint, "laptop")], a_out
    assert [(d.fingerprint, d.name) for d in on_b.values()] == [(a_key.fingerprint, "desktop")]
    assert "Comparison code: " in a_out

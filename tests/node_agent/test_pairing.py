"""Pairing (issue 16): the code, the key exchange between a listener (device A) and a device with the code (B), the
comparison code, the paired-device store and the `pair`/`unpair` commands. The signed requests a paired device then
makes to an agent are tests/node_agent/test_signed_requests.py's.

In process: the pairing listener and the agent app run on aiohttp's test servers on loopback. One test pairs two
network namespaces for real, the listener found by mDNS."""

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node_agent import cli, identity, pair_commands, paired, pairing
from tests.node_agent import netns

ROOT = Path(__file__).resolve().parents[2]
BODY = {"messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys(tmp_path: Path, *names: str) -> list[identity.Identity]:
    return [identity.load_or_create(tmp_path / name) for name in names]


def signed(agent_key, recipient, method, path, body: bytes = b"", **kw) -> dict:
    return paired.sign_headers(agent_key, method, path, body, recipient=recipient, **kw)


async def pair_over_http(session: pairing.PairingSession, b: identity.Identity, code: str, name: str = "laptop"):
    """B asks A's listener (on a loopback test server) with `code`: B's Peer, or the PairingError."""
    async with TestServer(pairing.listener_app(session)) as server, aiohttp.ClientSession() as http:
        try:
            return await pairing.request_pairing(http, str(server.make_url("/")), code, b, name)
        except pairing.PairingError as exc:
            return exc


def genuine_request(session: pairing.PairingSession, a, b) -> tuple[bytes, dict]:
    """(transcript, body) of B's request to A's `session`, made as `request_pairing` makes it (after its GET)."""
    hello = session.hello()
    opened, commitment = hello["session"], hello["commitment"]
    said = pairing.transcript("B", a.public_b64, b.public_b64, opened, commitment, ("n" * 20,), "desktop", "laptop")
    request = {
        "protocol": pairing.PROTOCOL,
        "public_key": b.public_b64,
        "name": "laptop",
        "nonce": "n" * 20,
        "session": opened,
        "commitment": commitment,
        "peer": a.public_b64,
        "proof": pairing.proof(session.key, said),
        "signature": pairing._sign(b, said),
    }
    return said, request


def refusal_from(handler, code: str, b: identity.Identity) -> pairing.PairingError:
    """B's `request_pairing` with `code` against a listener of the test's own (`handler` answers GET and POST
    /v1/pair): the PairingError it must end with."""

    async def run():
        app = web.Application()
        app.router.add_route("*", "/v1/pair", handler)
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            with pytest.raises(pairing.PairingError) as refused:
                await pairing.request_pairing(http, str(server.make_url("/")), code, b, "laptop")
        return refused.value

    return asyncio.run(run())


def recording(session: pairing.PairingSession) -> list:
    """The (Na, Nb) of every exchange `session` answers, as they went over the wire."""
    exchanged, handle = [], session.handle

    def handled(body):
        answer, peer = handle(body)
        exchanged.append((answer["nonce"], body["nonce"]))
        return answer, peer

    session.handle = handled
    return exchanged


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
        session.exchanged = recording(session)
        # Names as typed, with what a name may not keep: both sides read them back the same way.
        peer_seen_by_b = await pair_over_http(session, b, pairing.display_code(session.code).lower(), "laptop\n")
        return session, peer_seen_by_b, session.done.result()

    session, on_b, on_a = asyncio.run(run())
    assert (on_b.public_key, on_b.fingerprint, on_b.name) == (a.public_b64, a.fingerprint, "desktop")
    assert (on_a.public_key, on_a.fingerprint, on_a.name) == (b.public_b64, b.fingerprint, "laptop")
    assert on_a.comparison == on_b.comparison and len(on_a.comparison) == 6 and on_a.comparison.isdigit()
    # It is made of the code (through K), both keys and both nonces, in that order.
    [(nonce_a, nonce_b)] = session.exchanged
    assert on_a.comparison == pairing.comparison_code(session.key, a.public_b64, b.public_b64, nonce_a, nonce_b)


async def mallory_asks(session: pairing.PairingSession, mallory: identity.Identity, nonce: str):
    """Mallory, who read the code, asks A's listener as B would, with her key and her own nonce: A's GET answer and
    the digits she predicts A will show, worked out before she sends (all she has of Na is A's commitment to it)."""
    async with TestServer(pairing.listener_app(session)) as server, aiohttp.ClientSession() as http:
        hello = await (await http.get(server.make_url("/v1/pair"))).json()
        a_public, opened, commitment = hello["public_key"], hello["session"], hello["commitment"]
        mine = pairing.code_key(session.code, a_public)
        predicted = pairing.comparison_code(mine, a_public, mallory.public_b64, commitment, nonce)
        said = pairing.transcript("B", a_public, mallory.public_b64, opened, commitment, (nonce,), "desktop", "m")
        body = {
            "protocol": pairing.PROTOCOL,
            "public_key": mallory.public_b64,
            "name": "m",
            "nonce": nonce,
            "session": opened,
            "commitment": commitment,
            "peer": a_public,
            "proof": pairing.proof(mine, said),
            "signature": pairing._sign(mallory, said),
        }
        answer = await (await http.post(server.make_url("/v1/pair"), json=body)).json()
        assert answer["nonce"] not in json.dumps(hello)  # Na reached her only after she had sent her nonce
        return predicted, session.done.result().comparison


def test_someone_who_knows_the_code_cannot_choose_the_comparison_code_a_will_show(tmp_path):
    """The attack on v1: in the middle between B and A, knowing the code, Mallory tries keys (and now nonces) until
    A would show the digits B shows. For that she must know, before she sends, what A will show for her inputs."""
    a, mallory = keys(tmp_path, "a", "mallory")

    async def run():
        code = pairing.new_code()
        predicted, shown = await mallory_asks(pairing.PairingSession(a, "desktop", code=code), mallory, "m" * 20)
        # Rehearsed: the same code, the same keys, the same nonce from her, against A showing that code again.
        _, shown_again = await mallory_asks(pairing.PairingSession(a, "desktop", code=code), mallory, "m" * 20)
        return predicted, shown, shown_again

    predicted, shown, shown_again = asyncio.run(run())
    assert shown != predicted
    assert shown != shown_again  # not a function of what she chooses: A's Na, committed to, decides too


def test_a_listener_that_changes_its_nonce_after_seeing_b_s_is_refused(tmp_path):
    """The other half: Mallory, knowing the code, answers B's search as the listener. She must commit before she
    sees Nb; revealing another Na than the one committed to (chosen after Nb, to steer B's digits) is refused, even
    with a proof and a signature that are right for it."""
    b, mallory = keys(tmp_path, "b", "mallory")
    code = pairing.new_code()
    mine = pairing.code_key(code, mallory.public_b64)
    committed = "c" * 32

    async def steering_listener(request: web.Request) -> web.Response:
        commitment = pairing.commitment_of(committed, mallory.public_b64)
        if request.method == "GET":
            return web.json_response(
                {
                    "protocol": pairing.PROTOCOL,
                    "public_key": mallory.public_b64,
                    "name": "desktop",
                    "session": "s" * 24,
                    "commitment": commitment,
                }
            )
        sent = await request.json()
        chosen = "x" * 32  # picked now that she knows Nb
        said = pairing.transcript(
            "A", mallory.public_b64, sent["public_key"], "s" * 24, commitment, (sent["nonce"], chosen), "desktop",
            sent["name"],
        )  # fmt: skip
        return web.json_response(
            {
                "protocol": pairing.PROTOCOL,
                "public_key": mallory.public_b64,
                "name": "desktop",
                "nonce": chosen,
                "proof": pairing.proof(mine, said),
                "signature": pairing._sign(mallory, said),
            }
        )

    assert "did not reveal the nonce it committed to" in str(refusal_from(steering_listener, code, b))


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


def test_sessions_are_bounded_and_a_crowded_out_one_is_refused_a_wrong_proof_still_counting(tmp_path):
    """Each GET opens a session (a commitment A keeps): at most MAX_SESSIONS, the oldest dropped. B's request on a
    dropped session is refused without pairing and without revealing Na; a wrong proof on it is still a guess."""
    a, b = keys(tmp_path, "a", "b")
    session = pairing.PairingSession(a, "desktop")
    _, request = genuine_request(session, a, b)
    for _ in range(pairing.MAX_SESSIONS):
        session.hello()  # someone on the LAN floods the listener with GETs
    assert len(session.sessions) == pairing.MAX_SESSIONS and request["session"] not in session.sessions
    with pytest.raises(pairing.AgentError) as dropped:
        session.handle(dict(request))
    assert (dropped.value.status, dropped.value.code) == (409, "unknown_session") and not session.used
    with pytest.raises(pairing.AgentError) as guessed:
        session.handle(request | {"proof": "0" * 64})
    assert guessed.value.code == "wrong_code" and session.attempts == 1
    for bad in ({"session": "short"}, {"session": None}, {"commitment": "A" * 64}, {"commitment": 7}):
        with pytest.raises(pairing.AgentError) as malformed:
            session.handle(request | bad)
        assert (malformed.value.status, malformed.value.code) == (400, "invalid_pairing")
    # A commitment other than the one A gave for that session (B fooled by a listener in the middle): refused.
    _, again = genuine_request(session, a, b)
    forged_commitment = pairing.commitment_of("z" * 32, a.public_b64)
    said = pairing.transcript(
        "B", a.public_b64, b.public_b64, again["session"], forged_commitment, ("n" * 20,), "desktop", "laptop"
    )
    altered = again | {"commitment": forged_commitment, "proof": pairing.proof(session.key, said)}
    with pytest.raises(pairing.AgentError) as mismatched:
        session.handle(altered | {"signature": pairing._sign(b, said)})
    assert mismatched.value.code == "unknown_session"
    # The session B opens anew pairs.
    assert session.handle(genuine_request(session, a, b)[1])[1].fingerprint == b.fingerprint
    assert session.sessions == {}


def test_a_v1_peer_gets_a_clear_error_on_both_sides(tmp_path):
    """An older luckrig-node (luckrig-pair-v1) asking this listener gets 400 `unsupported_protocol`; `pair CODE`
    facing an older listener says so too (no crash, no pairing)."""
    a, b = keys(tmp_path, "a", "b")
    session = pairing.PairingSession(a, "desktop")

    async def v1_listener(request: web.Request) -> web.Response:
        return web.json_response({"protocol": "luckrig-pair-v1", "public_key": a.public_b64, "name": "old"})

    async def run():
        async with TestServer(pairing.listener_app(session)) as server, aiohttp.ClientSession() as http:
            v1_request = {"protocol": "luckrig-pair-v1", "public_key": b.public_b64, "nonce": "n" * 20, "proof": "0"}
            r = await http.post(server.make_url("/v1/pair"), json=v1_request)
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (400, "unsupported_protocol")
            assert "luckrig-pair-v1" in body["error"]["message"] and "update luckrig-node" in body["error"]["message"]

    asyncio.run(run())
    assert session.attempts == 0 and not session.used
    refused = refusal_from(v1_listener, session.code, b)
    assert refused.code == "unsupported_protocol" and "speaks luckrig-pair-v1" in str(refused)


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
        commitment = pairing.commitment_of("c" * 32, mallory.public_b64)  # a listener that keeps its commitment
        if request.method == "GET":
            hello = {"protocol": pairing.PROTOCOL, "public_key": mallory.public_b64, "name": "x"}
            return web.json_response(hello | {"session": "s" * 24, "commitment": commitment})
        sent = await request.json()
        nonces = (sent["nonce"], "c" * 32)
        answer = pairing.transcript("A", mallory.public_b64, sent["public_key"], "s" * 24, commitment, nonces, "x", "l")
        return web.json_response(
            {
                "public_key": mallory.public_b64,
                "nonce": "c" * 32,
                "proof": "f" * 64,
                "signature": pairing._sign(mallory, answer),
            }
        )

    assert "did not prove it knows the code" in str(refusal_from(impostor_answers, pairing.new_code(), b))


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
            return web.json_response(session.hello())
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

"""The router page's JSON endpoints (node_agent/router_page.py), in process: pairing with a rig through a real
pairing listener (node_agent/pairing.py's, on a loopback test server, fed to the router as its mDNS browser would
feed it), every refusal, and the checks that keep another site's page from pairing or unpairing through the user's
browser. The page itself, clicked through in Chromium, is tests/browser/test_router_page.py's."""

import asyncio
import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node_agent import identity, lan, paired, pairing
from node_agent.router import Router, build_app
from tests.node_agent.test_pairing import Clock
from tests.node_agent.test_router import announce


def listener_announced(router: Router, key: identity.Identity, port: int, as_key: identity.Identity | None = None):
    """What the router's browser of `_luckrig-pair._tcp` hands it for a `pair` listener at 127.0.0.1:`port`."""
    fields, _ = lan.parse_txt({"txtvers": lan.TXT_VERSION, "pk": (as_key or key).public_b64})
    name = f"{lan.instance_name(key)}.{lan.PAIRING_SERVICE_TYPE}"
    router.page.listener_seen(name, lan.SeenRig(name, ["127.0.0.1"], port, fields, [], first_seen=0.0))


async def csrf_of(client) -> str:
    page = await (await client.get("/")).text()
    return re.search(r'<meta name="luckrig-csrf" content="([^"]+)">', page).group(1)


async def post(client, path: str, body, csrf: str, **headers) -> tuple[int, dict]:
    r = await client.post(path, json=body, headers={"X-LuckRig-CSRF": csrf, **headers})
    return r.status, await r.json()


def code_of(outcome: tuple[int, dict]) -> tuple[int, str]:
    status, body = outcome
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    return status, body["error"]["code"]


@pytest.fixture
def lan_router(tmp_path):
    router = Router(identity.load_or_create(tmp_path / "router"), paired.PairedStore(tmp_path / "router"))
    router.page.listener_wait = 0.3
    return router


def test_pairing_from_the_page_pins_the_rig_only_on_confirm_and_says_why_it_did_not(tmp_path, lan_router):
    router = lan_router
    rig, other = identity.load_or_create(tmp_path / "rig"), identity.load_or_create(tmp_path / "other")
    rig_name = announce(router, "rig", rig, 9, "alpha")
    clock = Clock()

    async def run():
        async with TestClient(TestServer(build_app(router))) as client:
            csrf = await csrf_of(client)

            def pair(code: str, which: str = rig_name):
                return post(client, "/lan/pair", {"rig": which, "code": code}, csrf)

            assert code_of(await pair("nope")) == (400, "invalid_code")
            assert code_of(await post(client, "/lan/pair", {"rig": rig_name}, csrf)) == (400, "invalid_request")
            gone = "luckrig-gone._luckrig._tcp.local."
            assert code_of(await pair(pairing.new_code(), gone)) == (404, "rig_not_found")
            # No `luckrig-node pair` running on the rig: said, after a short wait for its announcement.
            assert code_of(await pair(pairing.new_code())) == (404, "no_pairing_listener")

            session = pairing.PairingSession(rig, "desk", clock=clock)
            async with TestServer(pairing.listener_app(session)) as listener:
                listener_announced(router, rig, listener.port)
                wrong = next(c for c in iter(pairing.new_code, None) if c != session.code)
                assert code_of(await pair(wrong)) == (400, "wrong_code")
                # The right code, typed any way: the comparison code, the same as the rig's, and nothing pinned.
                status, held = await pair(pairing.display_code(session.code).lower())
                assert status == 200, held
                assert held["comparison_code"] == session.done.result().comparison
                assert held["device"] == {"name": "desk", "fingerprint": rig.fingerprint}
                assert held["rig"]["fingerprint"] == rig.fingerprint and router.pinned() == {}
                # Cancel drops it; the handle is then gone.
                cancel = await post(client, "/lan/pair/cancel", {"pairing": held["pairing"]}, csrf)
                assert cancel == (200, {"cancelled": True}) and router.pinned() == {}
                again = await post(client, "/lan/pair/confirm", {"pairing": held["pairing"]}, csrf)
                assert code_of(again) == (404, "pairing_not_found")
                assert code_of(await pair(session.code)) == (410, "code_used")

            # A listener that is not the rig (it announces the rig's key, holds another): refused, nothing held.
            impostor = pairing.PairingSession(other, "desk")
            async with TestServer(pairing.listener_app(impostor)) as listener:
                router.page.listeners.clear()
                listener_announced(router, other, listener.port, as_key=rig)
                assert code_of(await pair(impostor.code)) == (409, "wrong_device")

            expired = pairing.PairingSession(rig, "desk", clock=clock)
            clock.now += pairing.CODE_TTL + 1
            async with TestServer(pairing.listener_app(expired)) as listener:
                router.page.listeners.clear()
                listener_announced(router, rig, listener.port)
                assert code_of(await pair(expired.code)) == (410, "code_expired")

            # The rig's luckrig-node is older (luckrig-pair-v1): said so, nothing held.
            async def v1_listener(request):
                return web.json_response({"protocol": "luckrig-pair-v1", "public_key": rig.public_b64, "name": "d"})

            old_app = web.Application()
            old_app.router.add_route("*", "/v1/pair", v1_listener)
            async with TestServer(old_app) as listener:
                router.page.listeners.clear()
                listener_announced(router, rig, listener.port)
                assert code_of(await pair(pairing.new_code())) == (409, "unsupported_protocol")

            # Someone floods the rig's listener between the router's GET and its POST: the attempt is crowded out.
            crowded = pairing.PairingSession(rig, "desk")
            handle = crowded.handle

            def flooded_then_handled(body):
                for _ in range(pairing.MAX_SESSIONS):
                    crowded.hello()
                return handle(body)

            crowded.handle = flooded_then_handled
            async with TestServer(pairing.listener_app(crowded)) as listener:
                router.page.listeners.clear()
                listener_announced(router, rig, listener.port)
                assert code_of(await pair(crowded.code)) == (409, "unknown_session")

            fresh = pairing.PairingSession(rig, "desk")
            async with TestServer(pairing.listener_app(fresh)) as listener:
                router.page.listeners.clear()
                listener_announced(router, rig, listener.port)
                status, held = await pair(fresh.code)
                assert status == 200, held
                done = await post(client, "/lan/pair/confirm", {"pairing": held["pairing"]}, csrf)
                assert done == (200, {"paired": {"name": "desk", "fingerprint": rig.fingerprint}})
            assert list(paired.PairedStore(tmp_path / "router").devices()) == [rig.fingerprint]
            assert code_of(await pair(pairing.new_code())) == (409, "already_paired")

            unpaired = await post(client, "/lan/unpair", {"fingerprint": rig.fingerprint}, csrf)
            assert unpaired == (200, {"unpaired": {"name": "desk", "fingerprint": rig.fingerprint}})
            assert router.pinned() == {}
            assert code_of(await post(client, "/lan/unpair", {"fingerprint": rig.fingerprint}, csrf)) == (
                404,
                "not_paired",
            )

    asyncio.run(run())


def test_another_sites_page_cannot_use_the_paired_rigs_through_the_users_browser(tmp_path, lan_router):
    """Any page the user opens can make the browser post to 127.0.0.1:8790 (a simple request: no preflight), and a
    page whose name was rebound to 127.0.0.1 can read the answers too. The router's /v1 refuses a foreign Origin and,
    listening on loopback, a Host that is not this machine's; the OpenAI SDK sends neither."""
    router = lan_router
    rig = identity.load_or_create(tmp_path / "rig")
    router.store.pin(rig.public_b64, "desk")
    announce(router, "desk", rig, 9, "alpha")  # nothing listens there: a request that gets through is a 503
    body = json.dumps({"model": "alpha", "messages": [{"role": "user", "content": "hi"}]})

    async def run():
        async with TestClient(TestServer(build_app(router))) as client:
            rebound = {"Host": f"evil.example:{client.port}"}
            for path in ("/v1/chat/completions", "/chat/completions"):
                foreign = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
                r = await client.post(path, data=body, headers=foreign)
                assert code_of((r.status, await r.json())) == (403, "bad_origin"), path
                r = await client.post(
                    path, data=body, headers=rebound | {"Origin": f"http://evil.example:{client.port}"}
                )
                assert code_of((r.status, await r.json())) == (403, "bad_host"), path
            r = await client.get("/v1/models", headers=rebound)
            assert code_of((r.status, await r.json())) == (403, "bad_host")
            # The SDK's requests (no Origin, the address it was given) go through.
            assert (await client.get("/v1/models")).status == 200
            r = await client.post("/v1/chat/completions", data=body)
            assert code_of((r.status, await r.json())) == (503, "no_rig_available")

    asyncio.run(run())


def test_another_sites_page_cannot_pair_or_unpair_through_the_users_browser(tmp_path, lan_router):
    router = lan_router
    rig = identity.load_or_create(tmp_path / "rig")
    router.store.pin(rig.public_b64, "desk")
    body = {"fingerprint": rig.fingerprint}

    async def run():
        async with TestClient(TestServer(build_app(router))) as client:
            csrf = await csrf_of(client)
            own = f"http://{client.host}:{client.port}"
            assert code_of(await post(client, "/lan/unpair", body, "")) == (403, "csrf_failed")
            assert code_of(await post(client, "/lan/unpair", body, csrf + "x")) == (403, "csrf_failed")
            assert code_of(await post(client, "/lan/unpair", body, "é" * 10)) == (403, "csrf_failed")
            # A DNS-rebound name: the browser sends the attacker's host name, whatever address it now points to.
            rebound = {"Host": f"evil.example:{client.port}"}
            assert code_of(await post(client, "/lan/unpair", body, csrf, **rebound)) == (403, "bad_host")
            wrong_port = {"Host": f"127.0.0.1:{client.port + 1}"}
            assert code_of(await post(client, "/lan/unpair", body, csrf, **wrong_port)) == (403, "bad_host")
            page = await client.get("/", headers=rebound)
            assert code_of((page.status, await page.json())) == (403, "bad_host")
            for origin in ("http://evil.example", "null", f"https://{client.host}:{client.port}"):
                refused = await post(client, "/lan/unpair", body, csrf, Origin=origin)
                assert code_of(refused) == (403, "bad_origin"), origin
            assert (await client.get("/lan/unpair")).status == 405
            assert code_of(await post(client, "/lan/pair/confirm", {"pairing": "x"}, csrf, Origin=own)) == (
                404,
                "pairing_not_found",
            )
            deep = await client.post("/lan/unpair", data="[" * 5000 + "]" * 5000, headers={"X-LuckRig-CSRF": csrf})
            assert code_of((deep.status, await deep.json())) == (400, "invalid_json")
            assert router.pinned() != {}  # none of the refused requests unpaired anything

            # The page itself: its own origin and `localhost` both work; it cannot be framed and runs no other script.
            for host in (f"127.0.0.1:{client.port}", f"localhost:{client.port}"):
                ok = await client.get("/", headers={"Host": host})
                assert ok.status == 200, host
            assert "frame-ancestors 'none'" in ok.headers["Content-Security-Policy"]
            status, _ = await post(client, "/lan/unpair", body, csrf, Origin=own)
            assert status == 200 and router.pinned() == {}

    asyncio.run(run())

"""The relay against a scripted agent (tests/relay/harness.py), the tunnel's side: tickets, replacement, every
malformed frame an agent could send, what a hostile or broken agent can and cannot do, health, metrics and the
tracker. What tasters get through the tunnel (streaming, back-pressure, cancellation, the witness, refusals) is
in test_tunnel_tasters.py."""

import asyncio
import json
import time

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node_agent import frames
from relay import server, tunnels
from tests.relay.harness import SSE_HEADERS, relay_setup, run

# --- tickets ------------------------------------------------------------------------------------------------


def test_bad_tickets_are_accepted_then_closed_with_4401(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            t = s.tracker
            now = int(time.time())
            bad = {
                "forged": t.sign({"sub": "rig-1", "aud": "r1"}, "luckrig-tunnel+jwt", key=Ed25519PrivateKey.generate()),
                "expired": t.ticket("rig-1", exp=now - 120, iat=now - 1000),
                "other relay": t.ticket("rig-1", relay_id="r2"),
                "a tasting token": t.token("rig-1"),
                "garbage": "not.a.jwt",
                "empty": "",
            }
            for what, ticket in bad.items():
                ws = await s.connect(ticket=ticket)
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE, what
                assert ws.close_code == frames.CLOSE_REFUSED, what
            assert not s.relay.registry.tunnels
            r = await s.session.get(s.base + "/metrics")
            assert 'luckrig_relay_refusals_total{code="tunnel_invalid_token"}' in await r.text()

    run(scenario())


def test_a_second_tunnel_for_a_node_replaces_the_first(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            first = await s.agent()
            second = await s.agent()
            await asyncio.wait_for(first._reader, 5)
            assert first.ws.close_code == frames.CLOSE_REPLACED
            # The newer tunnel serves.
            resp = asyncio.ensure_future(s.session.get(s.base + "/n/rig-1/health"))
            sid, head, _ = await asyncio.wait_for(second.requests.get(), 5)
            assert head.path == "/health"
            await second.respond(sid, body=b'{"ok":true}')
            r = await resp
            assert r.status == 200 and await r.json() == {"ok": True}

    run(scenario())


def test_a_renewed_ticket_keeps_the_tunnel_past_the_first_ones_expiry(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            now = int(time.time())
            # Expires (with the relay's 30 s leeway) two seconds from now.
            short = s.tracker.ticket("rig-1", exp=now - 28)
            ws = await s.connect(ticket=short)
            renewed = s.tracker.ticket("rig-1")
            await ws.send_bytes(frames.encode(frames.TICKET, 0, renewed.encode()))
            await asyncio.sleep(3)
            assert not ws.closed and s.relay.registry.get("rig-1") is not None
            # Another unrenewed short ticket: closed with its own code when it runs out.
            ws2 = await s.connect(ticket=s.tracker.ticket("rig-2", exp=int(time.time()) - 28))
            msg = await ws2.receive(timeout=5)
            while msg.type == aiohttp.WSMsgType.BINARY:
                msg = await ws2.receive(timeout=5)
            assert ws2.close_code == frames.CLOSE_TICKET_EXPIRED
            # A renewed ticket for another node closes the tunnel as refused.
            await ws.send_bytes(frames.encode(frames.TICKET, 0, s.tracker.ticket("rig-9").encode()))
            msg = await ws.receive(timeout=5)
            while msg.type == aiohttp.WSMsgType.BINARY:
                msg = await ws.receive(timeout=5)
            assert ws.close_code == frames.CLOSE_REFUSED

    run(scenario())


# --- malformed frames from an agent -------------------------------------------------------------------------


def test_malformed_frames_close_the_tunnel_or_reset_the_stream_never_crash_the_relay(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            closing = {
                "text frame": lambda ws: ws.send_str("hello"),
                "short frame": lambda ws: ws.send_bytes(b"\x01"),
                "unknown type": lambda ws: ws.send_bytes(b"\x01\x7f\x00\x00\x00\x01"),
                "wrong version": lambda ws: ws.send_bytes(b"\x09\x02\x00\x00\x00\x01"),
                "never-opened stream": lambda ws: ws.send_bytes(frames.encode(frames.DATA, 99, b"x")),
                "a relay-only frame": lambda ws: ws.send_bytes(frames.encode(frames.PAUSE, 1)),
                "oversized frame": lambda ws: ws.send_bytes(
                    b"\x01\x02\x00\x00\x00\x01" + b"z" * (frames.MAX_FRAME + 10)
                ),
            }
            for what, send in closing.items():
                agent = await s.agent()
                await send(agent.ws)
                await asyncio.wait_for(agent._reader, 5)
                assert agent.ws.close_code in (frames.CLOSE_PROTOCOL, 1009), what
                assert s.relay.registry.get("rig-1") is None, what
            # A malformed response head resets only that stream: the taster gets a clean error, the tunnel lives.
            agent = await s.agent()
            pending = asyncio.ensure_future(s.chat())
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.send(frames.encode_json(frames.RESPONSE, sid, {"status": "teapot", "headers": []}))
            r = await asyncio.wait_for(pending, 5)
            assert r.status == 503 and (await r.json())["error"]["code"] == "upstream_unavailable"
            await agent.wait_for_frame(frames.CANCEL, sid)
            # Data before a head, and a second head, reset their streams too.
            for misstep in ("data first", "two heads"):
                pending = asyncio.ensure_future(s.chat())
                sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
                if misstep == "data first":
                    await agent.send(frames.encode(frames.DATA, sid, b"data: x\n\n"))
                else:
                    await agent.respond(sid, headers=SSE_HEADERS, end=False)
                    await agent.respond(sid, headers=SSE_HEADERS, end=False)
                r = await asyncio.wait_for(pending, 5)
                await asyncio.wait_for(r.read(), 5)
                await agent.wait_for_frame(frames.CANCEL, sid)
            assert s.relay.registry.get("rig-1") is not None
            health = await s.session.get(s.base + "/health")
            assert (await health.json())["tunnels"] == 1

    run(scenario())


# --- health, metrics, tracker -------------------------------------------------------------------------------


def test_health_metrics_and_heartbeats_say_what_the_relay_carries(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            await s.agent("rig-a")
            await s.agent("rig-b")
            health = await (await s.session.get(s.base + "/health")).json()
            assert health == {
                "ok": True,
                "service": "luckrig-relay",
                "relay_id": "r1",
                "version": health["version"],
                "tunnels": 2,
            }
            metrics = await (await s.session.get(s.base + "/metrics")).text()
            assert "luckrig_relay_tunnels 2.0" in metrics and "luckrig_relay_open_streams 0.0" in metrics
            deadline = time.monotonic() + 5
            while not any(h["tunnels"] == ["rig-a", "rig-b"] for h in s.tracker.heartbeats):
                assert time.monotonic() < deadline, s.tracker.heartbeats
                await asyncio.sleep(0.05)
            assert "lrr_" not in json.dumps(health) + metrics

    run(scenario())


def test_with_the_tracker_down_open_tunnels_keep_serving_and_a_restarted_relay_uses_cached_keys(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            s.tracker.up = False
            await s.relay.link.refresh_keys()  # fails: the keys it has stay
            pending = asyncio.ensure_future(s.chat(body=s.chat_body(stream=False)))
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.respond(sid, body=b'{"object":"chat.completion"}')
            assert (await pending).status == 200
            # A second relay process on the same state dir, started while the tracker is down, still verifies.
            from relay.config import RelayConfig
            from relay.server import RELAY, build_app

            cfg = RelayConfig(
                tracker=s.tracker.base, relay_id="r1", relay_secret="x", state_dir=str(tmp_path / "relay-state")
            )
            app = build_app(cfg)
            relay = app[RELAY]
            relay.session = aiohttp.ClientSession()
            from relay.tracker_link import TrackerLink

            relay.link = TrackerLink(session=relay.session, config=cfg, keys=relay.keys, registry=relay.registry)
            relay.link.load_cached_keys()
            assert relay.keys.ticket("Bearer " + s.tracker.ticket("rig-1"), "r1").node_id == "rig-1"
            await relay.session.close()

    run(scenario())


# --- what a hostile or broken agent can and cannot do ----------------------------------------------------------


def test_a_hostile_agent_cannot_set_cookies_redirect_or_serve_pages_from_the_relays_origin(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            try:
                pending = asyncio.ensure_future(session.get(s.base + "/n/rig-1/health"))
                sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
                sneaky = [
                    ("Content-Type", "application/json"),
                    ("Set-Cookie", "sessionid=attacker; Domain=example.org; Path=/"),
                    ("Refresh", "0; url=https://evil.example"),
                    ("Content-Security-Policy", "default-src *"),
                    ("Retry-After", "3"),
                ]
                await agent.respond(sid, headers=sneaky, body=b'{"ok":true}')
                r = await pending
                assert r.status == 200 and await r.json() == {"ok": True} and r.headers["Retry-After"] == "3"
                assert "Set-Cookie" not in r.headers and "Refresh" not in r.headers and not session.cookie_jar
                assert r.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                # A redirect, an informational status or an HTML page is no answer an agent gives: 502.
                for status, content_type in ((302, "application/json"), (101, "application/json"), (200, "text/html")):
                    pending = asyncio.ensure_future(session.get(s.base + "/n/rig-1/health", allow_redirects=False))
                    sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
                    await agent.respond(
                        sid,
                        status=status,
                        headers=[("Content-Type", content_type), ("Location", "https://evil.example")],
                    )
                    r = await asyncio.wait_for(pending, 5)
                    assert r.status == 502 and (await r.json())["error"]["code"] == "upstream_error", (
                        status,
                        content_type,
                    )
                    assert "Location" not in r.headers
            finally:
                await session.close()

    run(scenario())


def test_an_agent_that_ends_without_an_answer_or_cuts_a_json_answer_never_leaves_the_taster_hanging(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            pending = asyncio.ensure_future(s.chat(body=s.chat_body(stream=False)))
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.send(frames.encode(frames.END, sid))  # END, no head
            r = await asyncio.wait_for(pending, 5)
            assert r.status == 502 and (await r.json())["error"]["code"] == "upstream_error"
            # A JSON answer with its length announced, cut halfway by an ERROR: the taster's read fails, rather
            # than a short body that looks complete (or a wait for bytes that never come).
            pending = asyncio.ensure_future(s.chat(body=s.chat_body(stream=False)))
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.respond(
                sid, headers=[("Content-Type", "application/json"), ("Content-Length", "100")], end=False
            )
            await agent.send(frames.encode(frames.DATA, sid, b'{"object": "chat.'))
            r = await asyncio.wait_for(pending, 5)
            await agent.send(frames.encode_json(frames.ERROR, sid, {"code": "upstream_error", "message": "x"}))
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(r.read(), 5)

    run(scenario())


def test_an_agent_that_reads_nothing_gets_no_more_streams_and_then_loses_its_tunnel(tmp_path, monkeypatch):
    monkeypatch.setattr(tunnels, "OUTBOX_CAP_BYTES", 256 * 1024)
    monkeypatch.setattr(tunnels, "SEND_TIMEOUT_SEC", 2.0)

    async def scenario():
        async with relay_setup(tmp_path, max_body_bytes=2 * 1024 * 1024) as s:
            agent = await s.agent()
            agent._reader.cancel()  # the agent stops reading its socket; its buffers fill, then the relay's queue
            body = {"messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}
            statuses, pending = [], []
            for _ in range(40):
                task = asyncio.ensure_future(s.chat(body=body))
                done, _ = await asyncio.wait({task}, timeout=0.3)
                if done:
                    r = task.result()
                    statuses.append(r.status)
                    if r.status == 429:
                        assert (await r.json())["error"]["code"] == "queue_full"
                        break
                else:
                    pending.append(task)
            assert 429 in statuses, statuses
            # Nothing is read for SEND_TIMEOUT_SEC: the relay closes the tunnel, and every waiting taster is told.
            deadline = time.monotonic() + 20
            while s.relay.registry.get("rig-1") is not None:
                assert time.monotonic() < deadline, "the stalled tunnel was never closed"
                await asyncio.sleep(0.1)
            for task in pending:
                r = await asyncio.wait_for(task, 10)
                assert r.status == 503

    run(scenario())


def test_expired_tickets_are_kept_while_the_tracker_is_down_and_closed_once_it_is_back(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "OUTAGE_RECHECK_SEC", 0.2)
    monkeypatch.setattr(server, "OUTAGE_RENEW_GRACE_SEC", 1.5)

    async def scenario():
        async with relay_setup(tmp_path) as s:
            s.tracker.up = False
            while not s.relay.link.tracker_down():  # heartbeats every 0.5 s here; a blip does not count
                await asyncio.sleep(0.1)
            ws = await s.connect(ticket=s.tracker.ticket("rig-1", exp=int(time.time()) - 29))
            await asyncio.sleep(2.5)  # expired (past the leeway), but nobody could have renewed it
            assert not ws.closed and s.relay.registry.get("rig-1") is not None
            s.tracker.up = True
            msg = await ws.receive(timeout=10)
            while msg.type == aiohttp.WSMsgType.BINARY:
                msg = await ws.receive(timeout=10)
            assert ws.close_code == frames.CLOSE_TICKET_EXPIRED  # its agent had the grace minute and did not renew

    run(scenario())

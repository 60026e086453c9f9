"""The relay against a scripted agent (tests/relay/harness.py): tickets, replacement, every malformed frame an agent
could send, streaming, back-pressure, cancellation, the witness, and what a taster gets when things go wrong."""

import asyncio
import json
import time

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node_agent import frames
from relay import server, tunnels
from tests.relay.harness import SSE_HEADERS, relay_setup, run, sse_chunk

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


# --- what tasters get ---------------------------------------------------------------------------------------


def test_no_tunnel_is_503_node_offline_at_once_naming_the_right_relay(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            started = time.monotonic()
            r = await s.chat("rig-nowhere")
            assert r.status == 503 and time.monotonic() - started < 1
            body = await r.json()
            assert body["error"]["code"] == "node_offline" and r.headers["Retry-After"]
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            # The tracker says another relay is live: a node that hashes to it is pointed there.
            s.tracker.relays = [
                {"relay_id": "r1", "public_url": "http://relay-one.test"},
                {"relay_id": "r2", "public_url": "http://relay-two.test"},
            ]
            await s.relay.link.heartbeat_once()
            from relay.routes import rendezvous_pick

            other = next(n for n in (f"rig-{i}" for i in range(100)) if rendezvous_pick(n, ["r1", "r2"]) == "r2")
            r = await s.chat(other)
            assert r.status == 503
            assert f"http://relay-two.test/n/{other}/v1" in (await r.json())["error"]["message"]

    run(scenario())


def test_tokens_the_agent_would_refuse_never_cross_the_tunnel(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            t = s.tracker
            now = int(time.time())
            cases = [
                (t.token("rig-1", exp=now - 120, iat=now - 1000), 401, "invalid_token"),
                (
                    t.sign({"sub": "x", "aud": "rig-1"}, "luckrig-tasting+jwt", key=Ed25519PrivateKey.generate()),
                    401,
                    "invalid_token",
                ),
                (t.token("rig-2"), 403, "wrong_node"),
                (t.ticket("rig-1"), 401, "invalid_token"),
                ("x" * 5000, 401, "invalid_token"),
            ]
            for token, status, code in cases:
                r = await s.chat(token=token)
                assert r.status == status and (await r.json())["error"]["code"] == code
            r = await s.session.post(s.base + "/n/rig-1/v1/chat/completions", json=s.chat_body())
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            assert agent.requests.empty() and not agent.seen(frames.REQUEST)

    run(scenario())


def test_a_body_over_the_cap_is_413_and_unknown_paths_404(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path, max_body_bytes=4096) as s:
            agent = await s.agent()
            r = await s.chat(body={"messages": [{"role": "user", "content": "x" * 5000}]})
            assert r.status == 413 and (await r.json())["error"]["code"] == "body_too_large"
            r = await s.session.get(s.base + "/n/rig-1/v1/embeddings")
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
            r = await s.session.get(s.base + "/n/rig-1/v1/chat/completions")
            assert r.status == 405
            r = await s.session.options(
                s.base + "/n/rig-1/v1/chat/completions",
                headers={"Origin": "https://luckrig.example", "Access-Control-Request-Method": "POST"},
            )
            assert r.status == 204 and "Authorization" in r.headers["Access-Control-Allow-Headers"]
            assert not agent.seen(frames.REQUEST)

    run(scenario())


def test_the_per_ip_rate_limit_answers_429_with_retry_after(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path, rate_per_min=60, rate_burst=3) as s:
            statuses = [(await s.session.get(s.base + "/n/rig-1/health")).status for _ in range(5)]
            assert statuses[:3] == [503, 503, 503] and statuses[3:] == [429, 429]
            r = await s.session.get(s.base + "/n/rig-1/health")
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            error = (await r.json())["error"]
            assert error["code"] == "ip_rate_limited"
            # When it lifts, in the body too (issue 12), and that no tier lifts it.
            assert error["retry_after_sec"] == int(r.headers["Retry-After"]) and error["resets_at"].endswith("Z")
            assert "every tier" in error["earn_more"]

    run(scenario())


def test_sse_streams_through_chunk_by_chunk_and_the_witness_reports_it(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            token = s.tracker.token("rig-1")
            jti = jwt.decode(token, options={"verify_signature": False})["jti"]
            pending = asyncio.ensure_future(s.chat(token=token))
            sid, head, body = await asyncio.wait_for(agent.requests.get(), 5)
            assert head.path == "/v1/chat/completions" and json.loads(body)["stream"] is True
            assert dict(head.headers)["Authorization"] == f"Bearer {token}"
            await agent.respond(sid, headers=SSE_HEADERS, end=False)
            r = await pending
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            arrivals = []
            for i in range(5):
                await agent.send(frames.encode(frames.DATA, sid, sse_chunk(f"tok{i} ")))
                line = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
                arrivals.append(time.monotonic())
                assert f"tok{i}".encode() in line
                await asyncio.sleep(0.05)
            await agent.send(frames.encode(frames.DATA, sid, b"data: [DONE]\n\n"))
            await agent.send(frames.encode(frames.END, sid))
            assert (await r.content.read()) == b"data: [DONE]\n\n"
            assert arrivals[-1] - arrivals[0] > 0.15  # spread over time: streamed, not buffered
            deadline = time.monotonic() + 5
            while not s.tracker.entries():
                assert time.monotonic() < deadline, "no witness report"
                await asyncio.sleep(0.05)
            (entry,) = s.tracker.entries()
            assert entry["jti"] == jti and entry["node_id"] == "rig-1" and entry["ended"] == "done"
            assert entry["status"] == 200 and entry["stream"] is True and entry["content_chunks"] == 5
            assert entry["ttft_ms"] is not None and entry["chunks_per_sec"] > 0
            assert entry["bytes"] == sum(len(sse_chunk(f"tok{i} ")) for i in range(5)) + len(b"data: [DONE]\n\n")
            assert "hello" not in json.dumps(s.tracker.reports)  # never the text

    run(scenario())


def test_full_size_frames_cross_both_ways(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            body = {"messages": [{"role": "user", "content": "x" * (3 * frames.MAX_DATA)}], "stream": True}
            pending = asyncio.ensure_future(s.chat(body=body))
            sid, _, received = await asyncio.wait_for(agent.requests.get(), 5)
            assert json.loads(received) == body  # a body of several full frames, reassembled
            payload = b"data: " + b"z" * (frames.MAX_DATA - 8) + b"\n\n"
            assert len(frames.encode(frames.DATA, sid, payload)) == frames.MAX_FRAME
            await agent.respond(sid, headers=SSE_HEADERS, body=payload * 3)
            r = await pending
            assert await r.read() == payload * 3
            assert s.relay.registry.get("rig-1") is not None

    run(scenario())


def test_a_tunnel_lost_mid_stream_ends_with_an_error_chunk_then_done(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            pending = asyncio.ensure_future(s.chat())
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.respond(sid, headers=SSE_HEADERS, end=False)
            await agent.send(frames.encode(frames.DATA, sid, sse_chunk("half")[:20]))  # an event cut in half
            r = await pending
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await agent.close()
            rest = await asyncio.wait_for(r.content.read(), 5)
            assert time.monotonic() - started < 3
            events = [e for e in rest.split(b"\n\n") if e.startswith(b"data: ")]
            error = json.loads(events[-2][6:])
            assert error["error"]["code"] == "upstream_unavailable" and events[-1] == b"data: [DONE]"

    run(scenario())


def test_a_tunnel_lost_before_the_answer_is_503_upstream_unavailable(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            pending = asyncio.ensure_future(s.chat())
            await asyncio.wait_for(agent.requests.get(), 5)
            await agent.close()
            r = await asyncio.wait_for(pending, 5)
            assert r.status == 503 and (await r.json())["error"]["code"] == "upstream_unavailable"

    run(scenario())


def test_a_taster_who_hangs_up_cancels_the_stream_at_the_agent_within_a_second(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            agent = await s.agent()
            pending = asyncio.ensure_future(s.chat())
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.respond(sid, headers=SSE_HEADERS, end=False)
            r = await pending
            await agent.send(frames.encode(frames.DATA, sid, sse_chunk("one")))
            await r.content.readuntil(b"\n\n")
            r.close()  # the taster goes away
            assert await agent.wait_for_frame(frames.CANCEL, sid, timeout=1) < 1
            assert not s.relay.registry.get("rig-1").streams
            # Late data for the cancelled stream is ignored: the tunnel stays up and serves the next taster.
            await agent.send(frames.encode(frames.DATA, sid, sse_chunk("late")))
            await agent.send(frames.encode(frames.END, sid))
            pending = asyncio.ensure_future(s.session.get(s.base + "/n/rig-1/health"))
            sid2, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.respond(sid2, body=b"{}")
            assert (await pending).status == 200

    run(scenario())


def test_a_taster_who_stops_reading_pauses_the_agent_and_is_cancelled_when_stalled(tmp_path):
    async def scenario():
        window = 64 * 1024
        async with relay_setup(tmp_path, window_bytes=window, stall_timeout=1.5) as s:
            agent = await s.agent()
            pending = asyncio.ensure_future(s.chat())
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.respond(sid, headers=SSE_HEADERS, end=False)
            r = await pending  # headers read; the body is never read from here on
            chunk = b"data: " + b"x" * 16000 + b"\n\n"
            tunnel = s.relay.registry.get("rig-1")
            largest = 0
            started = time.monotonic()
            # A well-behaved agent: it sends while the relay lets it, and stops on PAUSE until RESUME.
            while not agent.seen(frames.CANCEL, sid):
                assert time.monotonic() - started < 20, "the stalled stream was never cancelled"
                flow = [
                    f.type for f in agent.frames_seen if f.type in (frames.PAUSE, frames.RESUME) and f.stream_id == sid
                ]
                if flow and flow[-1] == frames.PAUSE:
                    await asyncio.sleep(0.01)
                    continue
                await agent.send(frames.encode(frames.DATA, sid, chunk))
                stream = tunnel.streams.get(sid)
                largest = max(largest, stream.buffered if stream else 0)
                await asyncio.sleep(0)
            assert agent.seen(frames.PAUSE, sid)
            assert largest <= 2 * window  # the relay's own buffer stayed bounded
            assert sid not in tunnel.streams
            r.close()
            # The tunnel itself is fine.
            assert s.relay.registry.get("rig-1") is tunnel

    run(scenario())


def test_an_agent_that_ignores_pause_has_its_stream_reset_not_the_relays_memory(tmp_path):
    async def scenario():
        window = 32 * 1024
        async with relay_setup(tmp_path, window_bytes=window) as s:
            agent = await s.agent()
            pending = asyncio.ensure_future(s.chat())
            sid, _, _ = await asyncio.wait_for(agent.requests.get(), 5)
            await agent.respond(sid, headers=SSE_HEADERS, end=False)
            r = await pending
            for _ in range(200):
                await agent.send(frames.encode(frames.DATA, sid, b"data: " + b"y" * 8000 + b"\n\n"))
                if agent.seen(frames.CANCEL, sid):
                    break
                await asyncio.sleep(0)
            await agent.wait_for_frame(frames.CANCEL, sid)
            r.close()

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

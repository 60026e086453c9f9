"""The relay against a scripted agent (tests/relay/harness.py), the tasters' side: 503 node_offline naming the right
relay, refusals that never cross the tunnel, body caps and rate limits, streaming chunk by chunk with the witness,
full-size frames, a tunnel lost mid-answer, hang-ups, back-pressure and stalled readers."""

import asyncio
import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node_agent import frames
from tests.relay.harness import SSE_HEADERS, relay_setup, run, sse_chunk


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
            agent, sid, r = await s.open_stream()
            await agent.send(frames.encode(frames.DATA, sid, sse_chunk("half")[:20]))  # an event cut in half
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
            agent, sid, r = await s.open_stream()
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
            agent, sid, r = await s.open_stream()  # headers read; the body is never read from here on
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
            agent, sid, r = await s.open_stream()
            # 16 MB at most: more than the loopback socket buffers hold (they autotune to several MB), so that the
            # relay's writes to this taster really block and its stream's buffer fills, however fast the relay
            # passes chunks on (at 200 it passed because the relay was slow: a task and a turn per chunk written).
            for _ in range(2000):
                await agent.send(frames.encode(frames.DATA, sid, b"data: " + b"y" * 8000 + b"\n\n"))
                if agent.seen(frames.CANCEL, sid):
                    break
                await asyncio.sleep(0)
            await agent.wait_for_frame(frames.CANCEL, sid)
            r.close()

    run(scenario())


async def _raw_post(s, body: bytes, node_id: str = "rig-1"):
    """A taster's POST on a raw connection, its head written alone: (reader, writer); the body is the caller's."""
    host, port = s.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /n/{node_id}/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {s.tracker.token(node_id)}\r\nContent-Length: {len(body)}"
        "\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


def test_a_body_still_on_its_way_follows_the_head_that_went_first(tmp_path):
    """The agent gets a request's head while its body is still coming from the taster (it starts on the request
    meanwhile, as it would for a direct taster), then the body and END; a taster who leaves before the body is
    whole has the stream cancelled at the agent. A body of unknown length is read whole first."""

    async def scenario():
        async with relay_setup(tmp_path, max_body_bytes=4096) as s:
            agent = await s.agent()
            body = json.dumps(s.chat_body(stream=False)).encode()
            reader, writer = await _raw_post(s, body)
            await agent.wait_for_frame(frames.REQUEST, 1)  # before a byte of the body was written
            assert not agent.seen(frames.DATA, 1) and not agent.seen(frames.END, 1)
            writer.write(body)
            sid, head, received = await asyncio.wait_for(agent.requests.get(), 5)
            assert (sid, head.path, received) == (1, "/v1/chat/completions", body)
            await agent.respond(sid, body=b'{"ok": true}')
            answer = await asyncio.wait_for(reader.readuntil(b'{"ok": true}'), 5)
            assert answer.startswith(b"HTTP/1.1 200")
            writer.close()

            # Half a body, then the taster leaves: the agent hears CANCEL for the stream it started.
            reader, writer = await _raw_post(s, body)
            await agent.wait_for_frame(frames.REQUEST, 2)
            writer.write(body[:10])
            await writer.drain()
            writer.close()
            await agent.wait_for_frame(frames.CANCEL, 2)
            assert not agent.seen(frames.END, 2)

            # Chunked, its length unknown: nothing reaches the agent until the body is whole (it might pass the cap).
            host, port = s.base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"POST /n/rig-1/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {s.tracker.token('rig-1')}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            )
            await writer.drain()
            await asyncio.sleep(0.3)
            assert not agent.seen(frames.REQUEST, 3)
            writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
            sid, _, received = await asyncio.wait_for(agent.requests.get(), 5)
            assert (sid, received) == (3, body)
            writer.close()

    run(scenario())

"""The agent's tunnel client (node_agent/tunnel.py) against real relays in process and a tracker that can be told
what to answer: tickets renewed over the open tunnel, a move to another relay, a relay that goes away, a tracker
that is down while the tunnel keeps serving, a direct node that never dials, and a relay that cannot be reached.
(The client replays requests against a small stand-in for the agent's own server here; the real agent is behind it
in tests/relay/test_relayed_rigs.py.)"""

import asyncio
import contextlib
import time

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from node_agent import frames
from node_agent import tunnel as tunnel_module
from node_agent.tunnel import TunnelClient
from tests.relay.harness import relay_setup, run


@contextlib.asynccontextmanager
async def local_agent():
    """The agent's own server, as far as the tunnel can tell: /health names the node; chat streams slowly."""
    state = {"cancelled": 0}

    async def health(request):
        return web.json_response({"ok": True, "node_id": "rig-1"})

    async def chat(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(1000):
                await response.write(f'data: {{"choices":[{{"delta":{{"content":"t{i}"}}}}]}}\n\n'.encode())
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise
        return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, handler_cancellation=True)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), state
    finally:
        await server.close()


async def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


async def healthy(session, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


@contextlib.asynccontextmanager
async def client_for(setup, local: str):
    session = aiohttp.ClientSession()
    client = TunnelClient(
        session=session,
        tracker=setup.tracker.base,
        node_id="rig-1",
        node_secret="lrn_test",
        local_base=local,
        max_body_bytes=1024 * 1024,
    )
    task = asyncio.ensure_future(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if client.current is not None:
            await client.current.ws.close()
        await session.close()


def test_the_client_dials_renews_over_the_open_tunnel_and_survives_a_tracker_outage(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s, local_agent() as (local, _):
            s.tracker.ticket_ttl = 60  # renewed at the earliest sensible moment: 5 s after dialling
            async with client_for(s, local) as client:
                await until(lambda: s.relay.registry.get("rig-1") is not None, 10, "tunnel open")
                tunnel = s.relay.registry.get("rig-1")
                assert client.status == {"reachability": "relayed", "tunnel": "open", "relay_id": "r1"}
                assert await healthy(s.session, s.base + "/n/rig-1/health")
                first_exp = tunnel.ticket_exp
                await until(lambda: tunnel.ticket_exp > first_exp, 15, "the ticket renewed over the tunnel")
                assert s.relay.registry.get("rig-1") is tunnel  # the same tunnel, not a reconnection
                # The tracker goes down: renewal fails, the tunnel keeps serving on the ticket it has.
                s.tracker.up = False
                asked = len(s.tracker.tunnel_requests)
                await asyncio.sleep(6)
                assert s.relay.registry.get("rig-1") is tunnel and await healthy(s.session, s.base + "/n/rig-1/health")
                # Back up: the next renewal goes through, over the same tunnel.
                s.tracker.up = True
                renewed = tunnel.ticket_exp
                await until(lambda: tunnel.ticket_exp > renewed, 40, "renewal once the tracker is back")
                assert len(s.tracker.tunnel_requests) > asked and s.relay.registry.get("rig-1") is tunnel

    run(scenario())


def test_the_client_follows_the_tracker_to_another_relay_and_after_a_goaway(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s, local_agent() as (local, _):
            s.tracker.ticket_ttl = 60
            r2, r2_base = await s.another_relay("r2", tmp_path)
            async with client_for(s, local) as client:
                await until(lambda: s.relay.registry.get("rig-1") is not None, 10, "tunnel to r1")
                # The tracker moves the node (say r2 was added and now wins the hash): at the next renewal the
                # client dials r2 and drains r1.
                s.tracker.assign = "r2"
                await until(lambda: r2.registry.get("rig-1") is not None, 20, "moved to r2")
                assert await healthy(s.session, r2_base + "/n/rig-1/health")
                await until(lambda: s.relay.registry.get("rig-1") is None, 10, "r1 drained")
                # r2 shuts down (SIGTERM's drain): GOAWAY sends the client to the relay the tracker names next.
                s.tracker.assign = "r1"
                await r2.drain(None)
                await until(lambda: s.relay.registry.get("rig-1") is not None, 20, "back on r1 after GOAWAY")
                assert any(req.get("unreachable_relay_id") == "r2" for req in s.tracker.tunnel_requests)
                assert client.status["relay_id"] == "r1"

    run(scenario())


def test_a_lost_tunnel_is_redialled_and_a_taster_who_hangs_up_cancels_the_local_request(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s, local_agent() as (local, state), client_for(s, local):
            await until(lambda: s.relay.registry.get("rig-1") is not None, 10, "tunnel open")
            r = await s.chat()
            assert r.status == 200
            await r.content.readuntil(b"\n\n")
            r.close()
            await until(lambda: state["cancelled"] == 1, 2, "the local request cancelled")
            # The relay drops the tunnel (a restart): the client dials again, with backoff starting at 1 s.
            old = s.relay.registry.get("rig-1")
            await old.close(1006, "gone")
            await until(lambda: s.relay.registry.get("rig-1") not in (None, old), 10, "a new tunnel after the drop")

    run(scenario())


def test_a_direct_node_never_dials_and_an_unreachable_relay_is_reported(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s, local_agent() as (local, _):
            s.tracker.refuse = (409, "not_relayed")
            async with client_for(s, local) as client:
                await until(lambda: client.relayed is False, 5, "the node is direct")
                assert client.status == {"reachability": "direct"}
                assert not s.relay.registry.tunnels and len(s.tracker.tunnel_requests) == 1
            # A relay nobody can reach: the client says so when it asks for the next ticket.
            s.tracker.refuse = None
            s.tracker.relay_urls["r9"] = "http://127.0.0.1:9"
            s.tracker.assign = "r9"
            async with client_for(s, local):
                await until(lambda: len(s.tracker.tunnel_requests) >= 3, 10, "a second ticket request")
                assert s.tracker.tunnel_requests[-1].get("unreachable_relay_id") == "r9"

    run(scenario())


@contextlib.asynccontextmanager
async def hostile_relay(setup, relay_id: str = "rh"):
    """A relay that says HELLO and then does whatever the test sends through `state["ws"]`."""
    state = {"ws": None, "frames": [], "connected": asyncio.Event()}

    async def tunnel(request):
        ws = web.WebSocketResponse(max_msg_size=frames.WS_MAX_MESSAGE)
        await ws.prepare(request)
        await ws.send_bytes(frames.encode_json(frames.HELLO, 0, {"relay_id": relay_id}))
        state["ws"] = ws
        state["connected"].set()
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                state["frames"].append(frames.decode(msg.data))
        return ws

    app = web.Application()
    app.router.add_get("/tunnel", tunnel)
    server = TestServer(app)
    await server.start_server()
    setup.tracker.relay_urls[relay_id] = str(server.make_url("")).rstrip("/")
    try:
        yield state
    finally:
        await server.close()


def errors_for(state) -> dict[int, str]:
    return {f.stream_id: f.json()["code"] for f in state["frames"] if f.type == frames.ERROR}


def test_a_hostile_relay_cannot_make_the_agent_hoard_streams_or_bodies(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s, local_agent() as (local, _), hostile_relay(s) as state:
            s.tracker.assign = "rh"
            async with client_for(s, local) as client:
                await asyncio.wait_for(state["connected"].wait(), 10)
                ws = state["ws"]
                head = frames.RequestHead("POST", "/v1/chat/completions", [])
                # More streams than any relay may open, none of them ever finished.
                for sid in range(1, tunnel_module.MAX_STREAMS + 6):
                    await ws.send_bytes(head.encode(sid))
                await until(lambda: len(errors_for(state)) >= 5, 5, "refusals past the stream cap")
                assert set(errors_for(state).values()) == {"too_many_streams"}
                assert len(client.current.streams) == tunnel_module.MAX_STREAMS
                # Half-sent bodies, all streams together, past the cap: refused, and the memory given back.
                chunk = b"x" * frames.MAX_DATA
                sid = 1
                while client.current.receiving_bytes + len(chunk) <= tunnel_module.MAX_RECEIVING_BYTES:
                    await ws.send_bytes(frames.encode(frames.DATA, sid, chunk))
                    await asyncio.sleep(0)
                    sid = sid % 200 + 1
                await ws.send_bytes(frames.encode(frames.DATA, sid, chunk))
                await until(lambda: "body_too_large" in errors_for(state).values(), 5, "a refusal past the body cap")
                assert client.current.receiving_bytes <= tunnel_module.MAX_RECEIVING_BYTES

    run(scenario())


def test_a_garbled_tracker_answer_and_a_skewed_clock_neither_stop_nor_rush_the_client(tmp_path, monkeypatch):
    async def scenario():
        async with relay_setup(tmp_path) as s, local_agent() as (local, _):
            s.tracker.garbage = True  # 200 with a JSON array: retried, never the end of the loop
            async with client_for(s, local) as client:
                await until(lambda: len(s.tracker.tunnel_requests) >= 2, 10, "the client retried")
                assert client.current is None
                s.tracker.garbage = False
                await until(lambda: s.relay.registry.get("rig-1") is not None, 15, "tunnel open after the garbage")
            # The tracker's clock is an hour behind this machine's: the ticket's lifetime still counts from now.
            s.tracker.skew = -3600
            async with aiohttp.ClientSession() as session:
                client = TunnelClient(
                    session=session, tracker=s.tracker.base, node_id="rig-1", node_secret="x", local_base=local,
                    max_body_bytes=1024,
                )  # fmt: skip
                ticket = await client.fetch_ticket()
                assert 890 < ticket.expires_at - time.time() <= 900

    run(scenario())

"""The agent's tunnel serving requests in process (node_agent/tunnel_streams.py): the agent's own application, its
middlewares and `on_response_prepare` signals included, answers a relayed request as it answers one off a socket,
and no socket is opened for it; PAUSE stops the handler's writes, CANCEL cancels the handler and frees its queue slot,
a handler that fails (or drops its "connection") ends its stream with ERROR, never END, the body limits hold, and only
the allowed headers cross either way. A scripted relay sees the frames themselves; a real relay in process carries a
taster's request end to end. (The real agent behind a real relay is in tests/relay/test_relayed_rigs.py.)"""

import asyncio
import contextlib
import json
import socket

import aiohttp
import pytest
from aiohttp import web

from node_agent import corking, frames
from node_agent.queue import SlotQueue
from node_agent.tunnel import TunnelClient
from tests.relay.harness import relay_setup, run
from tests.relay.test_tunnel_client import errors_for, hostile_relay, until

MAX_BODY = 4096


def stand_in(state: dict, client_max_size: int = MAX_BODY) -> web.Application:
    """An application shaped like the agent's: a refusal middleware, a header added as the response is prepared, a
    queue of one slot, a slow stream, and handlers that echo, fail or drop their connection."""
    queue = SlotQueue(1, 4)
    state.update(queue=queue, written=0, cancelled=0, seen=[], middleware=0)

    @web.middleware
    async def refusals(request, handler):
        state["middleware"] += 1
        try:
            return await handler(request)
        except LookupError:
            return web.json_response({"error": {"code": "not_here"}}, status=409)

    async def prepared(request, response):
        response.headers["X-Prepared"] = "yes"

    async def chat(request):
        ticket = f"t{len(state['seen'])}"
        state["seen"].append(ticket)
        waiter = queue.enter(ticket, tier="limited")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            if waiter is not None:
                await response.prepare(request)
                await response.write(b": queue position=1\n\n")
                await queue.wait(waiter)
            await response.prepare(request)
            for i in range(10_000):
                await response.write(f'data: {{"choices":[{{"delta":{{"content":"t{i}"}}}}]}}\n\n'.encode())
                state["written"] += 1
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            state["cancelled"] += 1
            raise
        finally:
            queue.release(ticket)
        return response

    async def echo(request):
        body = await request.read()
        return web.json_response({"headers": dict(request.headers), "body": body.decode(), "remote": request.remote})

    async def lookup(request):
        raise LookupError

    async def boom(request):
        raise RuntimeError("a bug")

    async def drop(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: half\n\n")
        request.transport.abort()  # as node_agent/relay.py does with a taster who stopped reading
        return response

    app = web.Application(middlewares=[refusals], client_max_size=client_max_size)
    app.on_response_prepare.append(prepared)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/echo", echo)
    app.router.add_get("/lookup", lookup)
    app.router.add_get("/boom", boom)
    app.router.add_get("/drop", drop)
    return app


@contextlib.asynccontextmanager
async def dispatching_client(setup, app: web.Application):
    """A tunnel client serving `app` in process. The runner starts and freezes the application as the agent's
    server does, but no site is started: no socket listens, so nothing can reach it but the tunnel."""
    runner = web.AppRunner(app)
    await runner.setup()
    async with aiohttp.ClientSession() as session:
        client = TunnelClient(
            session=session, tracker=setup.tracker.base, node_id="rig-1", node_secret="lrn_test",
            max_body_bytes=MAX_BODY, app=app,
        )  # fmt: skip
        loop = asyncio.ensure_future(client.run())
        try:
            yield client
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            if client.current is not None:
                await client.current.ws.close()
            await runner.cleanup()


@contextlib.asynccontextmanager
async def scripted(tmp_path, **app_options):
    """A scripted relay (it records every frame) and a tunnel client serving the stand-in application through it:
    (the stand-in's state, the relay's state, its WebSocket to the agent, the client)."""
    state = {}
    async with relay_setup(tmp_path) as s, hostile_relay(s) as relay:
        s.tracker.assign = "rh"
        async with dispatching_client(s, stand_in(state, **app_options)) as client:
            await asyncio.wait_for(relay["connected"].wait(), 10)
            yield state, relay, relay["ws"], client


def of(state, kind: int, sid: int) -> list[frames.Frame]:
    return [f for f in state["frames"] if f.type == kind and f.stream_id == sid]


async def request(ws, sid: int, method: str, path: str, headers=(), body: bytes = b"") -> None:
    await ws.send_bytes(frames.RequestHead(method, path, [list(h) for h in headers]).encode(sid))
    for frame in frames.data_frames(sid, body):
        await ws.send_bytes(frame)
    await ws.send_bytes(frames.encode(frames.END, sid))


def test_a_tunnelled_request_runs_the_applications_middlewares_and_signals_with_only_the_allowed_headers(tmp_path):
    async def scenario():
        async with scripted(tmp_path) as (state, relay, ws, client):
            sent = [
                ("Authorization", "Bearer tok"),
                ("Content-Type", "application/json"),
                ("Cookie", "a=b"),
                ("X-Forwarded-For", "203.0.113.9"),
            ]
            await request(ws, 1, "POST", "/echo", sent, b'{"q": "hi"}')
            await until(lambda: of(relay, frames.END, 1), 5, "the echo's END")
            (head,) = of(relay, frames.RESPONSE, 1)
            response = frames.ResponseHead.parse(head.payload)
            names = {name.lower() for name, _ in response.headers}
            assert response.status == 200 and dict(response.headers)["X-Prepared"] == "yes"
            assert {"content-type", "content-length"} <= names
            assert not names & {"date", "server", "connection", "transfer-encoding", "keep-alive"}
            echoed = json.loads(b"".join(bytes(f.payload) for f in of(relay, frames.DATA, 1)))
            assert echoed["body"] == '{"q": "hi"}' and echoed["remote"] is None
            assert {k.lower() for k in echoed["headers"]} == {"authorization", "content-type", "content-length"}
            # The middleware turns the handler's exception into its own refusal, as for a direct taster.
            await request(ws, 2, "GET", "/lookup")
            await until(lambda: of(relay, frames.END, 2), 5, "the refusal's END")
            assert frames.ResponseHead.parse(of(relay, frames.RESPONSE, 2)[0].payload).status == 409
            assert json.loads(bytes(of(relay, frames.DATA, 2)[0].payload)) == {"error": {"code": "not_here"}}
            assert state["middleware"] == 2 and not errors_for(relay)

    run(scenario())


def test_a_request_runs_from_its_head_and_reads_its_body_as_the_frames_come(tmp_path):
    """The relay sends a request's head ahead of a body still on its way: the handler runs from the head (token
    and rules are checked meanwhile, as for a direct taster) and reads the body frame by frame, ended by END. The
    tunnel's cap and the application's own cap hold on such a body, and a handler refused its body is cancelled."""

    async def scenario():
        async with scripted(tmp_path) as (state, relay, ws, client):
            await ws.send_bytes(frames.RequestHead("POST", "/echo", [["Content-Type", "application/json"]]).encode(1))
            await until(lambda: state["middleware"] == 1, 5, "the handler running before any of the body came")
            await ws.send_bytes(frames.encode(frames.DATA, 1, b'{"q": '))
            await ws.send_bytes(frames.encode(frames.DATA, 1, b'"hi"}'))
            await asyncio.sleep(0.1)
            assert not of(relay, frames.RESPONSE, 1)  # it waits for END
            await ws.send_bytes(frames.encode(frames.END, 1))
            await until(lambda: of(relay, frames.END, 1), 5, "the echo's END")
            echoed = json.loads(b"".join(bytes(f.payload) for f in of(relay, frames.DATA, 1)))
            assert echoed["body"] == '{"q": "hi"}' and "content-length" not in {k.lower() for k in echoed["headers"]}
            # Past the tunnel's cap while the handler reads: body_too_large, and the handler is cancelled.
            await ws.send_bytes(frames.RequestHead("POST", "/echo", []).encode(2))
            await until(lambda: state["middleware"] == 2, 5, "the second handler running")
            task = client.current.streams[2].task
            await ws.send_bytes(frames.encode(frames.DATA, 2, b"x" * (MAX_BODY + 1)))
            await until(lambda: 2 in errors_for(relay), 5, "body_too_large")
            await until(task.done, 5, "the handler's end")
            assert errors_for(relay)[2] == "body_too_large" and task.cancelled() and not of(relay, frames.RESPONSE, 2)
            # A GET has no body to wait for: it runs from its END, as before.
            await request(ws, 3, "GET", "/lookup")
            await until(lambda: of(relay, frames.END, 3), 5, "the GET's END")
            # Answered before its body came (a 404 reads none), and no END ever sent: nothing of it is kept.
            await ws.send_bytes(frames.RequestHead("POST", "/nowhere", []).encode(4))
            await until(lambda: of(relay, frames.END, 4), 5, "the 404's END")
            await ws.send_bytes(frames.encode(frames.DATA, 4, b"late"))
            await asyncio.sleep(0.1)
            assert 4 not in client.current.receiving and client.current.receiving_bytes == 0
        async with scripted(tmp_path, client_max_size=100) as (state, relay, ws, client):
            # The application's own cap, on a body it reads as it comes: its 413.
            await ws.send_bytes(frames.RequestHead("POST", "/echo", []).encode(1))
            await until(lambda: state["middleware"] == 1, 5, "the handler running")
            await ws.send_bytes(frames.encode(frames.DATA, 1, b"x" * 500))
            await ws.send_bytes(frames.encode(frames.END, 1))
            await until(lambda: of(relay, frames.END, 1), 5, "the 413's END")
            assert frames.ResponseHead.parse(of(relay, frames.RESPONSE, 1)[0].payload).status == 413

    run(scenario())


def test_pause_stops_the_handlers_writes_until_resume(tmp_path):
    async def scenario():
        async with scripted(tmp_path) as (state, relay, ws, client):
            await request(ws, 1, "POST", "/v1/chat/completions")
            await until(lambda: state["written"] >= 5, 5, "the stream flowing")
            await ws.send_bytes(frames.encode(frames.PAUSE, 1))
            await asyncio.sleep(0.1)
            paused_at = state["written"]
            await asyncio.sleep(0.5)  # 100 chunks' time
            assert state["written"] <= paused_at + 1, "the handler kept writing after PAUSE"
            assert state["cancelled"] == 0
            await ws.send_bytes(frames.encode(frames.RESUME, 1))
            await until(lambda: state["written"] >= paused_at + 10, 5, "the stream flowing again")

    run(scenario())


def test_cancel_cancels_the_handler_and_frees_its_queue_slot_for_the_next_taster(tmp_path):
    async def scenario():
        async with scripted(tmp_path) as (state, relay, ws, client):
            await request(ws, 1, "POST", "/v1/chat/completions")
            await until(lambda: len(of(relay, frames.DATA, 1)) >= 3, 5, "the first stream generating")
            await request(ws, 2, "POST", "/v1/chat/completions")
            await until(lambda: of(relay, frames.DATA, 2), 5, "the second waiting in the queue")
            assert bytes(of(relay, frames.DATA, 2)[0].payload).startswith(b": queue position=1")
            # The first taster hangs up: its handler is cancelled, its slot goes to the second at once.
            await ws.send_bytes(frames.encode(frames.CANCEL, 1))
            await until(lambda: state["cancelled"] == 1, 2, "the first handler cancelled")
            await until(lambda: len(of(relay, frames.DATA, 2)) >= 3, 2, "the second generating")
            assert 1 not in client.current.streams and not of(relay, frames.END, 1)
            await ws.send_bytes(frames.encode(frames.CANCEL, 2))
            await until(lambda: state["cancelled"] == 2, 2, "the second handler cancelled")
            assert state["queue"].snapshot()["active"] == 0 and not client.current.streams

    run(scenario())


def test_a_failing_or_dropped_answer_ends_with_error_never_end(tmp_path):
    async def scenario():
        async with scripted(tmp_path) as (state, relay, ws, client):
            await request(ws, 1, "GET", "/boom")
            await request(ws, 2, "GET", "/drop")
            await until(lambda: len(errors_for(relay)) == 2, 5, "two ERROR frames")
            assert errors_for(relay) == {1: "upstream_error", 2: "upstream_unavailable"}
            assert not of(relay, frames.RESPONSE, 1)  # a failure before any head: no head at all
            assert of(relay, frames.RESPONSE, 2)
            assert bytes(of(relay, frames.DATA, 2)[0].payload) == b"data: half\n\n"
            assert not of(relay, frames.END, 1) and not of(relay, frames.END, 2) and not client.current.streams

    run(scenario())


def test_the_body_limits_hold_and_an_agent_saying_goaway_starts_nothing_new(tmp_path):
    async def scenario():
        # The application's own cap (client_max_size) is below the tunnel's: its 413 answers.
        async with scripted(tmp_path, client_max_size=100) as (state, relay, ws, client):
            await request(ws, 1, "POST", "/echo", [("Content-Type", "application/json")], b"x" * 500)
            await until(lambda: of(relay, frames.END, 1), 5, "the 413's END")
            assert frames.ResponseHead.parse(of(relay, frames.RESPONSE, 1)[0].payload).status == 413
            # Past the tunnel's cap the body is refused before any handler runs.
            await request(ws, 2, "POST", "/v1/chat/completions", body=b"x" * (MAX_BODY + 1))
            await until(lambda: 2 in errors_for(relay), 5, "body_too_large")
            assert errors_for(relay)[2] == "body_too_large" and state["seen"] == []
            # GOAWAY said (the agent stopping): a stream the relay opens anyway is refused, not started.
            await client.current.say_goaway("agent shutting down")
            await request(ws, 3, "POST", "/v1/chat/completions")
            await until(lambda: 3 in errors_for(relay), 5, "a refusal after GOAWAY")
            assert errors_for(relay)[3] == "upstream_unavailable" and state["seen"] == []

    run(scenario())


def test_a_taster_streams_through_a_real_relay_and_hanging_up_frees_the_slot(tmp_path):
    async def scenario():
        state = {}
        async with relay_setup(tmp_path) as s, dispatching_client(s, stand_in(state)):
            await until(lambda: s.relay.registry.get("rig-1") is not None, 10, "tunnel open")
            r = await s.chat()
            assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
            assert (await r.content.readuntil(b"\n\n")).startswith(b'data: {"choices"')
            r.close()
            await until(lambda: state["cancelled"] == 1, 1, "the handler cancelled within a second")
            assert state["queue"].snapshot()["active"] == 0

    run(scenario())


@pytest.mark.skipif(corking.CORK is None, reason="TCP_CORK is Linux's")
def test_frames_written_together_leave_together():
    """node_agent/corking.py, which both ends use for a head and the bytes that follow it: what is written inside
    the block is held, then sent as one; with no socket, or one that is not TCP, the block just runs."""
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as writer, server.accept()[0] as reader:
        writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as aiohttp sets it
        reader.settimeout(0.05)
        with corking.corked(writer):
            writer.sendall(b"RESPONSE|")
            with pytest.raises(TimeoutError):
                reader.recv(100)  # held back while the block runs
            writer.sendall(b"DATA")
        reader.settimeout(2)
        assert reader.recv(100) == b"RESPONSE|DATA"
    with corking.corked(None):
        pass
    left, right = socket.socketpair()
    with left, right, corking.corked(left):
        left.sendall(b"x")
        assert right.recv(1) == b"x"

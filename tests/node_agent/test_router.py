"""The local router (issue 16, `luckrig-node lan`): one OpenAI-compatible endpoint over the paired rigs on the LAN.

In process: real agent apps (aiohttp test servers on loopback, each in front of its own fake model server, linked to
the fake tracker only because running_agent starts them so; the router never talks to it), paired both ways with the
router's identity. Most tests feed the router what LanBrowser feeds it (its on_change, `Router.seen`) with TXT
records made and parsed as on the LAN; one runs it all in a fresh network namespace with real mDNS: the agents
announcing themselves (`--lan`) and the router's LanBrowser following them."""

import asyncio
import contextlib
import json
import socket
import time

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncZeroconf

from node_agent import identity, lan, lan_tls, paired
from node_agent.config import AgentConfig
from node_agent.router import Router, build_app
from node_agent.server import AGENT
from node_agent.server import build_app as build_agent_app
from tests.node_agent import netns
from tests.node_agent.fakes import FakeOpenAI, FakeTracker
from tests.node_agent.test_circles import running_agent, until

QUESTION = [{"role": "user", "content": "hi"}]


def announce(router: Router, node: str, key: identity.Identity, port: int, model: str, *, tls: bool = True) -> str:
    """What LanBrowser hands the router for an announcement of `node` (127.0.0.1:`port`, TXT as the agent makes it:
    `tls=1` as a local rig announces, unless `tls` is False)."""
    txt = lan.txt_record(node_id=node, public_key=key.public_b64, model=model, radius="local", version="1", tls=tls)
    fields, problems = lan.parse_txt(txt)
    assert not problems, problems
    name = f"luckrig-{node}.{lan.SERVICE_TYPE}"
    router.seen(name, lan.SeenRig(name, ["127.0.0.1"], port, fields, problems, first_seen=0.0))
    return name


@contextlib.asynccontextmanager
async def https_server(app: web.Application, key: identity.Identity):
    """`app` on loopback over HTTPS with `key`'s certificate, as a local rig serves (node_agent/lan_tls.py)."""
    server = TestServer(app)
    await server.start_server(ssl=lan_tls.server_context(key))
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def lan_of(
    tmp_path,
    fake_tracker,
    models: dict[str, str],
    *,
    unpaired: tuple = (),
    hints: dict | None = None,
    poll_interval: float = 0.2,
):
    """Rigs named after `models` (node → the model it serves), each an agent in front of its own fake model server,
    paired with the router unless named in `unpaired`, announcing the model `hints` names (default: the one it
    serves), the router polling their /health every `poll_interval` seconds; yields (router's client, router,
    {node: (fake, service name, the agent's client)}). The rigs serve HTTPS with their identity key, as a local rig
    does."""
    me = identity.load_or_create(tmp_path / "router")
    router = Router(me, paired.PairedStore(tmp_path / "router"))
    router.poll_interval = poll_interval
    async with contextlib.AsyncExitStack() as stack:
        rigs = {}
        for node, model in models.items():
            fake = stack.enter_context(FakeOpenAI())
            fake.model = model
            rig_dir = tmp_path / node
            key = identity.load_or_create(rig_dir)
            if node not in unpaired:
                paired.PairedStore(rig_dir).pin(me.public_b64, "router")
                router.store.pin(key.public_b64, node)
            client, _ = await stack.enter_async_context(
                running_agent(
                    fake_tracker, fake, rig_dir, heartbeat_interval=60, model=model, tls=lan_tls.server_context(key)
                )
            )
            hint = (hints or {}).get(node, model)
            rigs[node] = (fake, announce(router, node, key, client.server.port, hint), client)
        client = await stack.enter_async_context(TestClient(TestServer(build_app(router), handler_cancellation=True)))
        yield client, router, rigs


async def ask(client, model: str, **extra) -> tuple[int, dict, str]:
    """(status, body, the rig that answered) of a non-streamed chat request to the router."""
    r = await client.post("/v1/chat/completions", json={"model": model, "messages": QUESTION, **extra})
    return r.status, await r.json(), r.headers.get("X-LuckRig-Rig", "")


def refusal(status: int, body: dict) -> tuple[int, str]:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    return status, body["error"]["code"]


def chats(fake: FakeOpenAI) -> int:
    return len([r for r in fake.requests if "messages" in r])


def test_models_are_the_union_of_the_paired_rigs_and_an_unpaired_rig_is_never_used(tmp_path, fake_tracker):
    async def run():
        models = {"a": "alpha", "b": "beta", "u": "alpha"}
        async with lan_of(tmp_path, fake_tracker, models, unpaired=("u",)) as (client, router, rigs):
            listed = await (await client.get("/v1/models")).json()
            assert sorted(m["id"] for m in listed["data"]) == ["alpha", "beta"]

            # The official SDK, non-streamed and streamed, through the router to the paired rigs.
            sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
            answer = await sdk.chat.completions.create(model="alpha", messages=QUESTION)
            assert answer.choices[0].message.content == rigs["a"][0].text()
            stream = await sdk.chat.completions.create(model="beta", messages=QUESTION, stream=True)
            deltas = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
            assert "".join(deltas) == rigs["b"][0].text() and len(deltas) > 3
            await sdk.close()

            # `u` announces alpha as well, but its key is not pinned: it never gets a request.
            for _ in range(4):
                status, _, rig = await ask(client, "alpha")
                assert (status, rig) == (200, "a")
            assert chats(rigs["u"][0]) == 0 and chats(rigs["a"][0]) == 5

            assert refusal(*(await ask(client, "gamma"))[:2]) == (404, "model_not_found")
            bad = await client.post("/v1/chat/completions", data=b"{not json")
            assert refusal(bad.status, await bad.json()) == (400, "invalid_json")

            # Unpairing on the router's side counts at the next request.
            router.store.unpair("b")
            assert refusal(*(await ask(client, "beta"))[:2]) == (404, "model_not_found")

            # No paired rig on the LAN: 503 at once, not a hang.
            for node in ("a", "b", "u"):
                router.seen(rigs[node][1], None)
            started = time.monotonic()
            assert refusal(*(await ask(client, "alpha"))[:2]) == (503, "no_rig_available")
            assert time.monotonic() - started < 1.0
            assert (await (await client.get("/v1/models")).json())["data"] == []

    asyncio.run(run())


def test_requests_go_round_robin_then_to_the_less_busy_rig_and_a_client_leaving_cancels_the_rig(tmp_path, fake_tracker):
    async def run():
        # One poll at the start, then none: a poll landing while a request is in flight would count it in the rig's
        # own queue until the next poll (test_router_load.py covers that); here only the router's own count moves.
        rigs_alpha = {"a": "alpha", "b": "alpha"}
        async with lan_of(tmp_path, fake_tracker, rigs_alpha, poll_interval=3600) as (client, router, rigs):
            polled = [router.loads.state(rigs[node][1]) for node in rigs]
            assert await until(lambda: all(state.polled_at is not None for state in polled))
            served = [(await ask(client, "alpha"))[2] for _ in range(4)]
            assert sorted(served) == ["a", "a", "b", "b"] and served[0] != served[1] and served[:2] == served[2:]

            # a's model server stalls after a few chunks: a stream on a stays in flight.
            rigs["a"][0].mode = "stall"
            body = {"model": "alpha", "messages": QUESTION, "stream": True}
            while True:
                held = await client.post("/v1/chat/completions", json=body)
                if held.headers["X-LuckRig-Rig"] == "a":
                    break
                await held.read()
            first = await held.content.readuntil(b"\n\n")
            assert first.startswith(b"data: ") and router.loads.in_flight(rigs["a"][1]) == 1
            # Equal turns would alternate; the busier rig is passed over while its request is in flight.
            assert [(await ask(client, "alpha"))[2] for _ in range(3)] == ["b", "b", "b"]

            # The client goes away mid-stream: the router's request to the rig closes, and the rig's model server
            # stops generating.
            held.close()
            assert await until(lambda: rigs["a"][0].cancelled == 1 and rigs["a"][0].active == 0)
            assert await until(lambda: router.loads.in_flight(rigs["a"][1]) == 0)

    asyncio.run(run())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_request_moves_on_before_the_first_byte_and_a_rig_that_left_is_not_used(tmp_path, fake_tracker):
    async def run():
        async with lan_of(tmp_path, fake_tracker, {"a": "alpha", "b": "alpha"}) as (client, router, rigs):
            # A paired rig announced but not listening, and a rig whose model server fails (its agent answers 5xx):
            # every request still gets b's answer.
            gone = identity.load_or_create(tmp_path / "gone")
            router.store.pin(gone.public_b64, "gone")
            announce(router, "gone", gone, closed_port(), "alpha")
            rigs["a"][0].mode = "http_500"
            for _ in range(6):
                status, answer, rig = await ask(client, "alpha")
                assert (status, rig) == (200, "b"), answer
            assert chats(rigs["a"][0]) >= 2  # tried first in its turns, then passed over
            body = {"model": "alpha", "messages": QUESTION, "stream": True}
            stream = await client.post("/v1/chat/completions", json=body)
            assert stream.headers["X-LuckRig-Rig"] == "b" and (await stream.text()).rstrip().endswith("data: [DONE]")

            # b leaves the LAN (goodbye or the sweep): no rig left can answer.
            before = chats(rigs["b"][0])
            router.seen(rigs["b"][1], None)
            assert refusal(*(await ask(client, "alpha"))[:2]) == (503, "no_rig_available")
            rigs["a"][0].mode = "ok"
            assert [(await ask(client, "alpha"))[2] for _ in range(3)] == ["a", "a", "a"]
            assert chats(rigs["b"][0]) == before

    asyncio.run(run())


def test_a_rig_that_no_longer_accepts_this_machine_is_passed_over_and_said_when_none_is_left(tmp_path, fake_tracker):
    """A rig that unpaired this machine on its side (`luckrig-node unpair` there) answers 401 `not_paired` before
    running anything: the request moves on to another rig, and when none is left the refusal says why."""

    async def run():
        async with lan_of(tmp_path, fake_tracker, {"a": "alpha", "b": "alpha"}) as (client, router, rigs):
            paired.PairedStore(tmp_path / "a").unpair("router")
            for _ in range(4):
                status, answer, rig = await ask(client, "alpha")
                assert (status, rig) == (200, "b"), answer
            router.seen(rigs["b"][1], None)
            status, body, _ = await ask(client, "alpha")
            assert refusal(status, body) == (503, "no_rig_available")
            assert "not_paired" in body["error"]["message"] and "pair" in body["error"]["message"]
            assert chats(rigs["a"][0]) == 0

    asyncio.run(run())


def test_a_rig_failing_mid_answer_cuts_the_client_off_rather_than_ending_its_answer(tmp_path):
    """After the first byte there is no moving on: the rig's connection dies mid-stream (a rig that stops, standing
    in for an agent process killed mid-answer) and the client sees an incomplete answer, not a finished one."""
    me = identity.load_or_create(tmp_path / "router")
    router = Router(me, paired.PairedStore(tmp_path / "router"))
    dying = identity.load_or_create(tmp_path / "dying")
    router.store.pin(dying.public_b64, "dying")

    async def dies(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": []}\n\n')
        request.transport.close()
        return response

    rig = web.Application()
    rig.router.add_post("/v1/chat/completions", dies)

    async def run():
        async with https_server(rig, dying) as dying_rig, TestClient(TestServer(build_app(router))) as client:
            announce(router, "dying", dying, dying_rig.port, "alpha")
            r = await client.post("/v1/chat/completions", json={"model": "alpha", "messages": QUESTION, "stream": True})
            assert r.status == 200 and await r.content.readuntil(b"\n\n") == b'data: {"choices": []}\n\n'
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
            assert router.loads.in_flight(router.usable()[0].name) == 0

    asyncio.run(run())


def test_the_page_lists_the_rigs_seen_paired_or_not_escaped(tmp_path):
    me = identity.load_or_create(tmp_path / "router")
    router = Router(me, paired.PairedStore(tmp_path / "router"))
    mine, theirs = identity.load_or_create(tmp_path / "mine"), identity.load_or_create(tmp_path / "theirs")
    router.store.pin(mine.public_b64, "desk")
    announce(router, "mine", mine, 8080, "alpha")
    announce(router, "theirs", theirs, 8080, "<script>alert(1)</script>")

    async def run():
        async with TestClient(TestServer(build_app(router))) as client:
            r = await client.get("/")
            return r.status, r.headers["Content-Type"], await r.text()

    status, kind, page = asyncio.run(run())
    assert status == 200 and kind.startswith("text/html")
    assert "paired as desk" in page and "not paired" in page and mine.fingerprint in page
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize("body", [{"messages": QUESTION}, {"model": 7, "messages": QUESTION}, []])
def test_a_request_without_a_model_is_refused(tmp_path, body):
    router = Router(identity.load_or_create(tmp_path / "router"), paired.PairedStore(tmp_path / "router"))

    async def run():
        async with TestClient(TestServer(build_app(router))) as client:
            r = await client.post("/v1/chat/completions", data=json.dumps(body))
            return r.status, await r.json()

    assert refusal(*asyncio.run(run())) == (400, "invalid_request")


def test_the_router_follows_rigs_announced_by_mdns_as_they_come_and_go(tmp_path):
    """Real mDNS on a fresh namespace's loopback: two agents serving with --lan, the router's LanBrowser finding
    them (paired, so routed to), then one agent stopping (its goodbye): the router stops using it, no restart."""
    me = identity.load_or_create(tmp_path / "router")
    router = Router(me, paired.PairedStore(tmp_path / "router"))
    for node in ("a", "b"):
        paired.PairedStore(tmp_path / node).pin(me.public_b64, "router")
        router.store.pin(identity.load_or_create(tmp_path / node).public_b64, node)

    async def scenario():
        # Made in this thread, so that the fakes' server threads are in the namespace too.
        with FakeTracker() as tracker, FakeOpenAI() as model_a, FakeOpenAI() as model_b:
            agents = {}
            for node, model in (("a", model_a), ("b", model_b)):
                model.model = "alpha"
                port = closed_port()
                config = AgentConfig(
                    tracker=tracker.base,
                    node_id=f"n_{node}",
                    node_secret=tracker.node_secret,
                    upstream=model.base,
                    relay="off",
                    config_dir=str(tmp_path / node),
                    heartbeat_interval=60,
                    model="alpha",
                    port=port,
                    lan=True,
                    lan_interface="lo",
                )
                app = build_agent_app(config)
                app[AGENT].tls = True  # announced as a local rig serving HTTPS does (serving.serve)
                agents[node] = TestServer(app, host="127.0.0.1", port=port)
                await agents[node].start_server(ssl=lan_tls.server_context(identity.load_or_create(tmp_path / node)))
            aiozc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
            browser = lan.LanBrowser(aiozc, sweep_interval=0.5, on_change=router.seen)
            try:
                await browser.start()
                async with TestClient(TestServer(build_app(router), handler_cancellation=True)) as client:
                    assert await until(lambda: len(router.usable()) == 2, 15), router.rigs
                    listed = await (await client.get("/v1/models")).json()
                    assert [m["id"] for m in listed["data"]] == ["alpha"]
                    served = [(await ask(client, "alpha"))[1:] for _ in range(4)]
                    assert sorted(rig for _, rig in served) == ["n_a", "n_a", "n_b", "n_b"], served
                    assert all(answer["choices"][0]["message"]["content"] == model_a.text() for answer, _ in served)

                    await agents["a"].close()  # the agent's shutdown says goodbye on the LAN first
                    assert await until(lambda: len(router.usable()) == 1, 10), router.rigs
                    assert [(await ask(client, "alpha"))[2] for _ in range(3)] == ["n_b", "n_b", "n_b"]
            finally:
                await browser.stop()
                await aiozc.async_close()
                for server in agents.values():
                    await server.close()

    with netns.namespace() as name:
        netns.run_in(name, scenario, timeout=60)

"""The local router (issue 16) by what the rigs say of themselves (node_agent/router_load.py): least busy by each
rig's own /health queue, a rig whose /health fails left out until it answers again, and /v1/models asked of each
rig (signed), the TXT hint only for a rig that cannot be asked.

Real agent apps where it matters (a rig busy with another client's request; the models two agents serve, listed
with the official `openai` SDK); small stub rigs where a rig must fail in a way an agent does not (its /health
down, its /v1/models refused)."""

import asyncio
import contextlib

import openai
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node_agent import identity, lan, paired
from node_agent.router import Router, build_app
from node_agent.router_load import RigLoads
from tests.node_agent.test_circles import until
from tests.node_agent.test_router import QUESTION, announce, ask, https_server, lan_of, refusal


class StubRig:
    """A rig's agent reduced to what the router asks: /health (503 while `up` is False), /v1/models (`models_status`),
    and a chat answer that names it. It records the signed /v1/models requests it gets."""

    def __init__(self, name: str, model: str):
        self.name, self.model = name, model
        self.up, self.models_status = True, 200
        self.chats = 0
        self.model_asks: list[dict] = []
        self.app = web.Application()
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_post("/v1/chat/completions", self.chat)

    async def health(self, request):
        if not self.up:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response({"ok": True, "queue": {"active": 0, "waiting": 0, "max_active": 1}})

    async def models(self, request):
        self.model_asks.append(dict(request.headers))
        if self.models_status != 200:
            return web.json_response({"error": {"code": "upstream_unavailable"}}, status=self.models_status)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "x"}]})

    async def chat(self, request):
        self.chats += 1
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": self.name}}]})


@contextlib.asynccontextmanager
async def stub_rigs(tmp_path, router, stubs: list[StubRig]):
    """The stubs listening on loopback, announced to `router` (TXT model: the stub's) and paired with it; yields
    {stub name: service name}."""
    async with contextlib.AsyncExitStack() as stack:
        names = {}
        for stub in stubs:
            key = identity.load_or_create(tmp_path / stub.name)
            server = await stack.enter_async_context(https_server(stub.app, key))
            router.store.pin(key.public_b64, stub.name)
            names[stub.name] = announce(router, stub.name, key, server.port, stub.model)
        yield names


def test_a_rig_busy_with_another_clients_request_is_passed_over(tmp_path, fake_tracker):
    async def run():
        async with lan_of(tmp_path, fake_tracker, {"a": "alpha", "b": "alpha"}) as (client, router, rigs):
            fake_a, name_a, agent_a = rigs["a"]
            served = [(await ask(client, "alpha"))[2] for _ in range(4)]
            assert sorted(served) == ["a", "a", "b", "b"], served

            # A taster with a tracker token, straight to a's agent (not through the router), holds its one slot.
            fake_a.mode = "stall"
            token = {"Authorization": f"Bearer {fake_tracker.token()}"}
            held = await agent_a.post(
                "/v1/chat/completions", json={"messages": QUESTION, "stream": True}, headers=token, ssl=False
            )
            assert held.status == 200 and (await held.content.readuntil(b"\n\n")).startswith(b"data: ")
            assert await until(lambda: router.loads.state(name_a).active == 1, 5), router.loads.state(name_a)
            assert router.loads.in_flight(name_a) == 0  # the router itself sent a nothing
            # Round robin alone would alternate (and a's requests would wait in its queue behind the taster's,
            # bounded here): a is passed over while its queue is full.
            served = [(await asyncio.wait_for(ask(client, "alpha"), 5))[2] for _ in range(4)]
            assert served == ["b"] * 4

            held.close()
            assert await until(lambda: fake_a.active == 0)
            fake_a.mode = "ok"
            assert await until(lambda: router.loads.state(name_a).active == 0, 5)
            served = [(await ask(client, "alpha"))[2] for _ in range(4)]
            assert sorted(served) == ["a", "a", "b", "b"], served

    asyncio.run(run())


def test_a_rig_whose_health_fails_gets_no_request_until_it_answers_again(tmp_path):
    from node_agent.router import Router, build_app

    router = Router(identity.load_or_create(tmp_path / "router"), paired.PairedStore(tmp_path / "router"))
    router.poll_interval = 0.2
    one, two = StubRig("one", "alpha"), StubRig("two", "alpha")

    async def run():
        from aiohttp.test_utils import TestClient

        app = build_app(router)
        async with stub_rigs(tmp_path, router, [one, two]) as names, TestClient(TestServer(app)) as client:
            assert await until(lambda: router.loads.state(names["one"]).polled_at is not None, 5)
            one.up = False
            assert await until(lambda: not router.loads.state(names["one"]).healthy, 5)
            assert [(await ask(client, "alpha"))[1]["choices"][0]["message"]["content"] for _ in range(4)] == [
                "two"
            ] * 4
            assert one.chats == 0
            page = await (await client.get("/")).text()
            assert "paired as one · not answering" in page and "paired as two · answering" in page

            two.up = False
            assert await until(lambda: not router.loads.state(names["two"]).healthy, 5)
            assert refusal(*(await ask(client, "alpha"))[:2]) == (503, "no_rig_available")
            assert (await (await client.get("/v1/models")).json())["data"] == []

            one.up = two.up = True
            assert await until(lambda: all(router.loads.state(n).healthy for n in names.values()), 5)
            answered = {(await ask(client, "alpha"))[1]["choices"][0]["message"]["content"] for _ in range(4)}
            assert answered == {"one", "two"}

    asyncio.run(run())


def test_models_are_asked_of_each_rig_and_the_hint_is_used_only_for_one_that_cannot_be_asked(tmp_path, fake_tracker):
    """a and a2 serve alpha (a announces an outdated hint), b serves beta; c answers /health but not /v1/models."""
    refusing = StubRig("c", "gamma")
    refusing.models_status = 503

    async def run():
        models = {"a": "alpha", "a2": "alpha", "b": "beta"}
        async with (
            lan_of(tmp_path, fake_tracker, models, hints={"a": "stale-hint"}) as (client, router, rigs),
            stub_rigs(tmp_path, router, [refusing]),
        ):
            sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
            listed = (await sdk.models.list()).data
            assert [m.id for m in listed] == ["alpha", "beta", "gamma"]
            assert all(m.object == "model" for m in listed)
            by_id = {m.id: m.model_extra["luckrig"]["rigs"] for m in listed}
            assert by_id["alpha"] == [{"rig": "a", "asked": True}, {"rig": "a2", "asked": True}]
            assert by_id["gamma"] == [{"rig": "c", "asked": False}]
            # Asked signed, as a paired device, and not again while the answers are fresh.
            asks = len(refusing.model_asks)
            assert refusing.model_asks[-1][paired.HEADER_KEY] == router.identity.fingerprint
            assert [m.id for m in (await sdk.models.list()).data] == ["alpha", "beta", "gamma"]
            assert len(refusing.model_asks) == asks

            # Routing follows the answers: the outdated hint serves nothing, the real model goes to a or a2.
            with_hint = await client.post("/v1/chat/completions", json={"model": "stale-hint", "messages": QUESTION})
            assert refusal(with_hint.status, await with_hint.json()) == (404, "model_not_found")
            answer = await sdk.chat.completions.create(model="alpha", messages=QUESTION)
            assert answer.choices[0].message.content == rigs["a"][0].text()
            assert (await ask(client, "gamma"))[1]["choices"][0]["message"]["content"] == "c"
            await sdk.close()

    asyncio.run(run())


def test_a_rig_announced_at_an_ipv6_address_alone_is_asked_at_that_address_in_brackets():
    rig = lan.SeenRig(name="r", addresses=["fd4c:7272::1"], port=8788, fields={}, problems=[], first_seen=0.0)
    assert RigLoads.base(rig) == "http://[fd4c:7272::1]:8788"
    both = lan.SeenRig(
        name="b", addresses=["192.168.1.5", "fd4c:7272::1"], port=8788, fields={}, problems=[], first_seen=0.0
    )
    assert RigLoads.base(both) == "http://192.168.1.5:8788"


def test_a_rig_answering_json_too_deep_to_parse_is_left_out_not_a_500(tmp_path):
    """A rig (or a device announcing a paired rig's key) whose /health and /v1/models answer JSON nested too deep
    for Python's json module: left out like a rig not answering; the router's /v1/models still answers."""
    deep = "[" * 5000 + "]" * 5000
    router = Router(identity.load_or_create(tmp_path / "router"), paired.PairedStore(tmp_path / "router"))

    class TooDeep(StubRig):
        async def health(self, request):
            return web.Response(text=deep, content_type="application/json")

        models = health

    good, bad = StubRig("good", "alpha"), TooDeep("bad", "beta")

    async def run():
        async with (
            stub_rigs(tmp_path, router, [good, bad]) as names,
            TestClient(TestServer(build_app(router))) as client,
        ):
            r = await client.get("/v1/models")
            assert r.status == 200, await r.text()
            await router.loads.poll_all(router.session, router.paired_rigs())
            assert not router.loads.state(names["bad"]).healthy and router.loads.state(names["good"]).healthy
            listed = await (await client.get("/v1/models")).json()
            assert [m["id"] for m in listed["data"]] == ["alpha"]

    asyncio.run(run())

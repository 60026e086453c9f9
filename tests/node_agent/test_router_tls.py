"""The local router's side of TLS pinned to a paired rig's key (issue 16; node_agent/lan_tls.py): a device announcing a
paired rig's key at its own address gets no prompt, a certificate for another key is refused before a byte of the
request is written, and a rig without TLS is used only when plain HTTP is allowed. In process, as test_router.py."""

import asyncio
import contextlib

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node_agent import identity, lan, lan_tls, paired
from node_agent.router import Router, build_app
from tests.node_agent.fakes import FakeOpenAI
from tests.node_agent.test_circles import running_agent, until
from tests.node_agent.test_router import announce, ask, chats, https_server, lan_of, refusal


class Impostor:
    """A device on the LAN that announces a paired rig's public key (TXT `pk`, anyone can) and `tls=1` at its own
    address, serving HTTPS with its own key (it cannot make a certificate for the rig's key that the handshake would
    bear out): it answers /health as an idle rig, lists the rig's model, and for a chat keeps the prompt and the
    signature headers, replays the signed request to the real rig (the nonce is fresh there) and answers something
    of its own. `requests` are all the requests that reached it."""

    def __init__(self, real_base: str):
        self.real_base = real_base
        self.requests: list[str] = []
        self.prompts: list[bytes] = []
        self.relayed: list[tuple[int, dict]] = []
        self.app = web.Application(middlewares=[self.count])
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_post("/v1/chat/completions", self.chat)

    @web.middleware
    async def count(self, request, handler):
        self.requests.append(request.path)
        return await handler(request)

    async def health(self, request):
        return web.json_response({"ok": True, "queue": {"active": 0, "waiting": 0, "max_active": 99}})

    async def models(self, request):
        return web.json_response({"object": "list", "data": [{"id": "alpha", "object": "model"}]})

    async def chat(self, request):
        raw = await request.read()
        self.prompts.append(raw)
        signature = {k: v for k, v in request.headers.items() if k.lower().startswith("x-luckrig-")}
        url = f"{self.real_base}/v1/chat/completions"
        async with aiohttp.ClientSession() as http, http.post(url, data=raw, headers=signature, ssl=False) as r:
            self.relayed.append((r.status, await r.json()))
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": "forged by the impostor"}}]})


def test_a_device_announcing_a_paired_rigs_key_at_its_own_address_gets_no_prompt(tmp_path, fake_tracker, caplog):
    caplog.set_level("INFO", logger="luckrig.agent.router")

    async def run():
        async with lan_of(tmp_path, fake_tracker, {"a": "alpha"}) as (client, router, rigs):
            real = rigs["a"][2]
            impostor = Impostor(str(real.make_url("")).rstrip("/"))
            async with https_server(impostor.app, identity.load_or_create(tmp_path / "impostor")) as server:
                name = f"luckrig-spoof.{lan.SERVICE_TYPE}"
                fields, problems = lan.parse_txt(
                    lan.txt_record(
                        node_id="a",
                        public_key=identity.load_or_create(tmp_path / "a").public_b64,
                        model="alpha",
                        radius="local",
                        version="1",
                        tls=True,
                    )
                )
                router.seen(name, lan.SeenRig(name, ["127.0.0.1"], server.port, fields, problems, first_seen=0.0))
                # Before its first poll it counts as healthy, and idle by its /health it would win every turn.
                answers = [
                    (await ask(client, "alpha", messages=[{"role": "user", "content": f"secret {i}"}]))
                    for i in range(4)
                ]
                await router.loads.poll_all(router.session, router.paired_rigs())
                assert impostor.prompts == [], (impostor.prompts, impostor.relayed)
                assert impostor.requests == []  # not even /health or the signed /v1/models
                assert all(a["choices"][0]["message"]["content"] == rigs["a"][0].text() for _, a, _ in answers)
                assert not router.loads.state(name).healthy and router.loads.state(name).wrong_key
                said = [r for r in caplog.records if "does not hold the key it announces" in r.getMessage()]
                assert len(said) == 1 and "luckrig-spoof" in said[0].getMessage()

    asyncio.run(run())


class CountingTLS:
    """A TLS server with `key`'s certificate that counts its connections and every byte the client writes after the
    handshake."""

    def __init__(self, key: identity.Identity):
        self.context = lan_tls.server_context(key)
        self.connections, self.received = 0, 0
        self.server = None

    async def handle(self, reader, writer):
        self.connections += 1
        with contextlib.suppress(OSError, TimeoutError, ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                self.received += len(chunk)
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.context)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


def test_a_certificate_for_another_key_is_refused_before_a_byte_of_the_request_is_sent(tmp_path):
    me = identity.load_or_create(tmp_path / "router")
    router = Router(me, paired.PairedStore(tmp_path / "router"))
    rig = identity.load_or_create(tmp_path / "rig")
    router.store.pin(rig.public_b64, "desk")
    listener = CountingTLS(identity.load_or_create(tmp_path / "other"))

    async def run():
        async with listener as port, TestClient(TestServer(build_app(router))) as client:
            name = announce(router, "desk", rig, port, "alpha")
            status, body, _ = await ask(client, "alpha")
            assert refusal(status, body) == (503, "no_rig_available")
            assert "desk: not the paired key" in body["error"]["message"]
            await router.loads.poll_all(router.session, router.paired_rigs())
            assert not router.loads.state(name).healthy
            assert listener.connections >= 2 and listener.received == 0
            # The same with the rig's own key: the pin holds, and the bytes arrive.
            router.store.unpair("desk")
            # Unpaired between listing and sending: the pin is a key nobody holds, never the announced one.
            assert router.ssl_for(router.rigs[name]).public_raw == bytes(32)
            router.store.pin(identity.load_or_create(tmp_path / "other").public_b64, "other")
            announce(router, "other", identity.load_or_create(tmp_path / "other"), port, "alpha")
            await router.loads.poll(router.session, router.rigs[f"luckrig-other.{lan.SERVICE_TYPE}"])
            assert await until(lambda: listener.received > 0, 5)

    asyncio.run(run())


def test_a_rig_without_tls_is_used_only_when_plain_http_is_allowed(tmp_path, fake_tracker):
    """A public or circle rig with --lan serves plain HTTP: the router sends it nothing (its TXT `pk` is no proof,
    and the LAN would read the prompt) unless started with --allow-plain-http."""
    me = identity.load_or_create(tmp_path / "router")
    router = Router(me, paired.PairedStore(tmp_path / "router"))
    key = identity.load_or_create(tmp_path / "rig")
    paired.PairedStore(tmp_path / "rig").pin(me.public_b64, "router")
    router.store.pin(key.public_b64, "rig")

    async def run():
        with FakeOpenAI() as fake:
            fake.model = "alpha"
            async with (
                running_agent(fake_tracker, fake, tmp_path / "rig", heartbeat_interval=60, model="alpha") as (rig, _),
                TestClient(TestServer(build_app(router))) as client,
            ):
                announce(router, "rig", key, rig.server.port, "alpha", tls=False)
                assert router.paired_rigs() == []
                assert refusal(*(await ask(client, "alpha"))[:2]) == (503, "no_rig_available")
                assert (await (await client.get("/v1/models")).json())["data"] == []
                assert chats(fake) == 0

                router.allow_plain_http = True
                status, answer, served_by = await ask(client, "alpha")
                assert (status, served_by) == (200, "rig") and chats(fake) == 1

    asyncio.run(run())

"""Relays in the production layout, for real: two Daphne processes sharing PostgreSQL and Redis, two relays that
talk to different Daphne processes (as behind nginx, any process may take any call), relayed agents linked to one
of them. What one process learns from a relay must be what the other serves and pushes.

Needs a PostgreSQL server (127.0.0.1:5432) and the redis-server binary; skipped, saying why, only when one is
truly absent."""

import asyncio
import uuid

import aiohttp
import openai
import pytest
import requests

from relay.routes import rendezvous_pick
from tests.agents import AGENT_TRACKER_ENV, AgentStarter, RelayStarter, Tracker
from tests.node_agent.fakes import FakeOpenAI
from tests.processes import daphne, free_port, migrate, tracker_env
from tests.relay.test_relayed_rigs import eventually
from tests.site.test_production import postgres_database, redis_server

pytestmark = pytest.mark.relay


def test_two_daphnes_two_relays_postgres_and_redis_agree_on_relayed_rigs(tmp_path):
    with postgres_database() as db, redis_server() as (redis_port, _redis), FakeOpenAI() as fake:
        fake.delay = 0.01  # a rig's pace: the relay measures a real rate
        port_a = free_port()
        site = f"http://127.0.0.1:{port_a}"
        env = tracker_env(
            db,
            tmp_path,
            **AGENT_TRACKER_ENV,
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            REDIS_PREFIX=f"t{uuid.uuid4().hex[:8]}",
            SITE_URL=site,  # one public name for both processes, as behind nginx
            TRACKER_SIGNING_KEY_FILE=str(tmp_path / "signing.pem"),
        )
        migrate(env)
        with daphne(env, port=port_a, log_path=tmp_path / "a.log") as a, daphne(env, log_path=tmp_path / "b.log") as b:
            tracker = Tracker(a, tmp_path, db, env)
            relays = RelayStarter(tracker, tmp_path)
            agents = AgentStarter(tracker, tmp_path)
            try:
                # Relay one reports to process A, relay two to process B (tokens still name the one SITE_URL).
                one = relays.start()
                two = relays.start(tracker=b, issuer=site)
                on_two = next(
                    f"prod-{i}-{uuid.uuid4().hex[:4]}"
                    for i in range(500)
                    if rendezvous_pick(f"prod-{i}", [one.relay_id, two.relay_id]) == two.relay_id
                )
                # The id above was checked without its suffix; check the real one.
                while rendezvous_pick(on_two, [one.relay_id, two.relay_id]) != two.relay_id:
                    on_two = f"prod-{uuid.uuid4().hex[:8]}"
                agent = agents.start(fake.base, relayed=True, register={"id": on_two})
                assert agent.public == f"{two.base}/n/{on_two}"

                # A token from process B, a tasting through relay two: the answer, and relay two's witness
                # report (sent to B) is what process A shows.
                token = requests.post(f"{b}/api/tokens", json={"node_id": on_two}, timeout=10).json()["token"]
                stream = openai.OpenAI(base_url=agent.v1, api_key=token, max_retries=0, timeout=30)
                chunks = list(
                    stream.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], stream=True)
                )
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fake.text()

                def relay_samples(base: str) -> int:
                    node = requests.get(f"{base}/api/nodes/{on_two}", timeout=10).json()["node"]
                    return node["community_timing"]["by_source"]["relay"]

                eventually(lambda: relay_samples(a) == 1, timeout=15)

                # The agent dies: relay two tells process B at once; a browser watching the rig's queue on
                # process A is told (through Redis), and A's REST view agrees.
                async def watch_then_kill():
                    async with (
                        aiohttp.ClientSession() as session,
                        session.ws_connect(a.replace("http://", "ws://") + f"/ws/queue/{on_two}/") as browser,
                    ):
                        await browser.receive_json(timeout=5)  # the snapshot
                        agent.proc.kill()
                        while True:
                            message = await browser.receive_json(timeout=20)
                            if message.get("status") == "unavailable":
                                return message

                message = asyncio.run(watch_then_kill())
                assert message["node_id"] == on_two
                assert requests.get(f"{a}/api/nodes/{on_two}", timeout=10).json()["node"]["health"]["status"] == (
                    "unavailable"
                )
                gone = requests.get(f"{agent.public}/health", timeout=5)
                assert gone.status_code == 503 and gone.json()["error"]["code"] == "node_offline"
            finally:
                agents.stop_all()
                relays.stop_all()

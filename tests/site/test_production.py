"""The production configuration for real: two Daphne processes sharing PostgreSQL and Redis.

Needs a PostgreSQL server (127.0.0.1:5432, trust auth) and the redis-server binary; each test starts its own
Redis on a free port so that it can also stop it. Skipped, saying why, only when one of them is truly absent."""

import asyncio
import concurrent.futures
import contextlib
import json
import shutil
import subprocess
import time
import uuid

import aiohttp
import psycopg
import pytest
import requests

from tests.processes import (
    PG_SERVER,
    daphne,
    free_port,
    migrate,
    new_postgres_database,
    postgres_available,
    private_redis,
    register_node,
    tracker_env,
)

pytestmark = pytest.mark.daphne


@contextlib.contextmanager
def redis_server():
    if not shutil.which("redis-server"):
        pytest.skip("production-configuration test skipped: no redis-server binary on this machine")
    with private_redis() as running:
        yield running


@contextlib.contextmanager
def postgres_database():
    if not postgres_available():
        pytest.skip(f"production-configuration test skipped: no PostgreSQL server at {PG_SERVER}")
    with new_postgres_database() as url:
        yield url


def held_connections(database_url: str) -> int:
    """The connections to `database_url`'s database other than this one's."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
    return row[0]


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


async def agent_then_subscriber(a: str, b: str, node_id: str, secret: str) -> list[dict]:
    """An agent linked to process A changes its queue; a browser subscribed on process B must see it."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(a, "/ws/agent/"), headers=headers) as agent,
    ):
        await agent.receive_json(timeout=5)  # tracker_keys
        await agent.receive_json(timeout=5)  # filter_rules
        await agent.send_json({"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 1}})
        assert (await agent.receive_json(timeout=5))["type"] == "heartbeat_ack"
        async with session.ws_connect(ws_url(b, f"/ws/queue/{node_id}/")) as browser:
            seen = [await browser.receive_json(timeout=5)]
            await agent.send_json(
                {
                    "type": "queue",
                    "queue": {
                        "active": 1,
                        "waiting": 0,
                        "max_active": 1,
                        "eta_sec": 3,
                        "entries": [
                            {
                                "ticket": "t_cross",
                                "position": 0,
                                "state": "generating",
                                "since": "2026-11-24T06:00:00Z",
                            }
                        ],
                    },
                }
            )
            seen.append(await browser.receive_json(timeout=5))
            return seen


def test_two_processes_share_queues_limits_quotas_and_survive_a_restart(tmp_path):
    with postgres_database() as db, redis_server() as (redis_port, _redis):
        env = tracker_env(
            db,
            tmp_path,
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            REDIS_PREFIX=f"t{uuid.uuid4().hex[:8]}",
            TRUSTED_PROXIES="127.0.0.1/32",
            LIMITED_TOKENS_PER_DAY="3",
            RATE_CONTRIBUTOR_CREATE="3/d",
            RATE_TOKEN_CREATE="1000/m",
            TRACKER_SIGNING_KEY_FILE=str(tmp_path / "signing.pem"),
            DB_CONN_MAX_AGE="60",  # as deploy/tracker.env.example sets it for every process
        )
        migrate(env)
        port_b = free_port()
        with daphne(env, log_path=tmp_path / "a.log") as a:
            with daphne(env, port=port_b, log_path=tmp_path / "b.log") as b:
                node_id, secret = register_node(a)

                # 1. A queue change through an agent linked to A reaches a browser on B (through Redis).
                seen = asyncio.run(agent_then_subscriber(a, b, node_id, secret))
                assert seen[0]["active"] == 0 and seen[1]["active"] == 1
                assert seen[1]["entries"][0]["ticket"] == "t_cross"
                assert requests.get(f"{b}/api/nodes/{node_id}", timeout=10).json()["node"]["queue"]["active"] == 1

                # 2. An IP rate limit is shared, not doubled: 3 contributor creations a day, whichever process.
                ip = {"X-Forwarded-For": "198.51.100.7"}
                codes = [
                    requests.post(f"{url}/api/contributors", json={}, headers=ip, timeout=10).status_code
                    for url in (a, b, a, b)
                ]
                assert codes == [201, 201, 201, 429]

                # 3. Daily quotas hold across processes: 3 anonymous tokens per address a day.
                requests.post(
                    f"{a}/api/nodes/{node_id}/heartbeat",
                    headers={"Authorization": f"Bearer {secret}"},
                    json={"queue": {"active": 0, "waiting": 0, "max_active": 1}},
                    timeout=10,
                )
                ip2 = {"X-Forwarded-For": "198.51.100.8"}
                tokens = [
                    requests.post(f"{url}/api/tokens", json={"node_id": node_id}, headers=ip2, timeout=10)
                    for url in (a, b, a, b)
                ]
                assert [t.status_code for t in tokens] == [201, 201, 201, 429]
                assert tokens[-1].json()["code"] == "quota_exceeded"
                # Both processes sign with the one key: tokens from either verify against either's key list.
                assert (
                    requests.get(f"{a}/api/tracker-keys", timeout=10).json()
                    == requests.get(f"{b}/api/tracker-keys", timeout=10).json()
                )

                # 4. Under ASGI every request's sync work runs in a thread of its own: a persistent connection per
                # thread would outlive its thread, and Daphne would hold one PostgreSQL connection per request until
                # the server refuses more ("too many clients"). The DB_CONN_MAX_AGE meant for WSGI workers must not
                # apply to Daphne.
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    statuses = list(
                        pool.map(lambda _: requests.get(f"{a}/api/nodes", timeout=30).status_code, range(120))
                    )
                assert statuses == [200] * 120
                assert held_connections(db) <= 12, "Daphne kept a database connection per request"

            # 5. B restarts: nothing it served is lost.
            with daphne(env, port=port_b, log_path=tmp_path / "b2.log") as b:
                assert requests.get(f"{b}/api/nodes/{node_id}", timeout=10).status_code == 200
                again = requests.post(f"{b}/api/tokens", json={"node_id": node_id}, headers=ip2, timeout=10)
                assert again.json()["code"] == "quota_exceeded"
                seen = asyncio.run(agent_then_subscriber(a, b, node_id, secret))
                assert seen[1]["active"] == 1


def test_idle_websockets_stay_up_and_live_on_redis(tmp_path):
    """channels_redis waits for messages with a blocking read of 5 s, and redis-py 8 gives every socket a 5 s
    read timeout by default: unless settings give a longer one, an idle channel raised TimeoutError after
    ~5 s, which closed agent links and told queue subscribers the view was stale."""
    with postgres_database() as db, redis_server() as (redis_port, _redis):
        env = tracker_env(
            db, tmp_path, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", REDIS_PREFIX=f"t{uuid.uuid4().hex[:8]}"
        )
        migrate(env)
        with daphne(env, log_path=tmp_path / "a.log") as a:
            node_id, secret = register_node(a)

            async def idle_then_change():
                headers = {"Authorization": f"Bearer {secret}"}
                async with (
                    aiohttp.ClientSession() as session,
                    session.ws_connect(ws_url(a, "/ws/agent/"), headers=headers) as agent,
                    session.ws_connect(ws_url(a, f"/ws/queue/{node_id}/")) as browser,
                ):
                    await agent.receive_json(timeout=5)  # tracker_keys
                    await agent.receive_json(timeout=5)  # filter_rules
                    await browser.receive_json(timeout=5)  # the snapshot
                    with pytest.raises(asyncio.TimeoutError):  # 8 s of nothing: no "stale", no close
                        await browser.receive(timeout=8)
                    await agent.send_json({"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 1}})
                    assert (await agent.receive_json(timeout=5))["type"] == "heartbeat_ack"  # the link is up
                    return await browser.receive_json(timeout=5)

            update = asyncio.run(idle_then_change())
            assert update["type"] == "queue" and update["max_active"] == 1
            log = (tmp_path / "a.log").read_text()
            assert "Timeout reading" not in log and "interrupted" not in log


def test_the_rest_api_keeps_serving_while_redis_is_down_and_its_limits_hold(tmp_path):
    """Issue 11: while Redis is down every per-IP limit used to fail open (8 of 8 contributors from one address
    against a limit of 5). Now the process counts on its own, says so once in its log and in /metrics, and
    shares the counters again once Redis is back."""
    with postgres_database() as db, redis_server() as (redis_port, redis):
        env = tracker_env(
            db,
            tmp_path,
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            REDIS_PREFIX=f"t{uuid.uuid4().hex[:8]}",
            TRUSTED_PROXIES="127.0.0.1/32",
            RATE_CONTRIBUTOR_CREATE="5/d",
        )
        migrate(env)
        with daphne(env, log_path=tmp_path / "a.log") as a:
            node_id, secret = register_node(a)
            redis.terminate()
            redis.wait(10)
            beat = requests.post(
                f"{a}/api/nodes/{node_id}/heartbeat",
                headers={"Authorization": f"Bearer {secret}"},
                json={"queue": {"active": 0, "waiting": 0, "max_active": 1}},
                timeout=20,
            )
            assert beat.status_code == 200  # the queue broadcast fails quietly; the heartbeat is recorded
            assert requests.get(f"{a}/api/nodes?page_size=5", timeout=20).status_code == 200

            ip = {"X-Forwarded-For": "198.51.100.7"}
            codes = [
                requests.post(f"{a}/api/contributors", json={}, headers=ip, timeout=20).status_code for _ in range(8)
            ]
            assert codes == [201] * 5 + [429] * 3
            issued = requests.post(f"{a}/api/tokens", json={"node_id": node_id}, timeout=20)
            assert issued.status_code == 201  # within its limits; quotas are in PostgreSQL
            assert json.loads(issued.text)["quota"]["used"] == 1
            assert "luckrig_ratelimit_fallback 1.0" in requests.get(f"{a}/metrics", timeout=20).text
            log = (tmp_path / "a.log").read_text()
            assert log.count("shared cache (Redis) unreachable") == 1, log[-3000:]

            restarted = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 30
                while "luckrig_ratelimit_fallback 0.0" not in requests.get(f"{a}/metrics", timeout=20).text:
                    assert time.monotonic() < deadline, "the process never went back to the shared counters"
                    time.sleep(1)
                    # Redis is tried again by a rate-limited request (one per few seconds), not by a scrape.
                    requests.post(
                        f"{a}/api/contributors", json={}, headers={"X-Forwarded-For": "192.0.2.1"}, timeout=20
                    )
                assert "reachable again" in (tmp_path / "a.log").read_text()
            finally:
                restarted.terminate()
                restarted.wait(10)


def test_the_queue_view_says_it_is_stale_while_redis_is_down_and_recovers_by_itself(tmp_path):
    with postgres_database() as db, redis_server() as (redis_port, redis):
        env = tracker_env(
            db, tmp_path, REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", REDIS_PREFIX=f"t{uuid.uuid4().hex[:8]}"
        )
        migrate(env)
        with daphne(env, log_path=tmp_path / "a.log") as a:
            node_id, secret = register_node(a)

            def beat(active):
                return requests.post(
                    f"{a}/api/nodes/{node_id}/heartbeat",
                    timeout=20,
                    headers={"Authorization": f"Bearer {secret}"},
                    json={"queue": {"active": active, "waiting": 0, "max_active": 2}},
                )

            async def watch():
                async with (
                    aiohttp.ClientSession() as session,
                    session.ws_connect(ws_url(a, f"/ws/queue/{node_id}/")) as browser,
                ):
                    seen = [await browser.receive_json(timeout=5)]
                    redis.terminate()
                    redis.wait(10)
                    seen.append(await browser.receive_json(timeout=15))  # stale
                    await asyncio.to_thread(beat, 1)  # recorded in PostgreSQL; no broadcast possible
                    restarted = subprocess.Popen(
                        [
                            "redis-server",
                            "--port",
                            str(redis_port),
                            "--bind",
                            "127.0.0.1",
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    try:
                        seen.append(await browser.receive_json(timeout=20))  # live again
                        seen.append(await browser.receive_json(timeout=10))  # the state it missed
                        await asyncio.to_thread(beat, 2)
                        seen.append(await browser.receive_json(timeout=10))  # and changes flow again
                    finally:
                        restarted.terminate()
                        restarted.wait(10)
                    return seen

            seen = asyncio.run(watch())
            assert seen[0]["type"] == "queue"
            assert seen[1]["type"] == "status" and seen[1]["stale"] is True
            assert seen[2] == {"type": "status", "stale": False}
            assert seen[3]["type"] == "queue" and seen[3]["active"] == 1
            assert seen[4]["active"] == 2

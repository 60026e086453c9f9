"""The production layout for real (docs/operations.md): the REST API and pages under gunicorn (two sync workers,
deploy/gunicorn.conf.py), the websockets under Daphne, both on one PostgreSQL database and one Redis.

What one ASGI process used to hold together must hold across both servers and across gunicorn's workers: the
rate-limit counters, the per-node agent budget (spent over HTTP on gunicorn and over the agent link on Daphne),
the fan-out from a view to websockets, the signing key and the quotas. And gunicorn stops within its graceful
timeout with requests in flight, finishing them.

Needs a PostgreSQL server (127.0.0.1:5432, trust auth) and the redis-server binary; the processes are shared by
the module's tests. Skipped, saying why, only when one of them is truly absent."""

import asyncio
import re
import shutil
import signal
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import requests

from node_agent.auth import TokenVerifier, load_keys
from tests.httpserver import Route, ScriptedServer
from tests.node_agent.threaded import wait_until
from tests.processes import (
    PG_SERVER,
    daphne,
    free_port,
    gunicorn,
    migrate,
    new_postgres_database,
    postgres_available,
    private_redis,
    register_node_with_key,
    tracker_env,
)
from tests.site.nginx_conf import nginx_binary, running_nginx

pytestmark = pytest.mark.daphne

CONTRIBUTORS_PER_DAY = 8
TOKENS_PER_DAY = 4
HEARTBEATS_PER_HOUR = 4
# Each line of gunicorn's access log in these tests: "<pid> METHOD /path status".
ACCESS_FORMAT = "%(p)s %(m)s %(U)s %(s)s"


@dataclass
class Layout:
    web: str  # gunicorn: the REST API and pages
    ws: str  # Daphne: /ws/
    env: dict
    access_log: Path
    log: Path  # gunicorn's own


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.skip("WSGI layout test skipped: no redis-server binary on this machine")
    if not postgres_available():
        pytest.skip(f"WSGI layout test skipped: no PostgreSQL server at {PG_SERVER}")
    tmp = tmp_path_factory.mktemp("layout")
    web_port = free_port()
    with new_postgres_database() as db, private_redis() as (redis_port, _redis):
        env = tracker_env(
            db,
            tmp,
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            REDIS_PREFIX=f"t{uuid.uuid4().hex[:8]}",
            # One public URL for both servers, as nginx gives them: the `iss` of every token.
            SITE_URL=f"http://127.0.0.1:{web_port}",
            TRUSTED_PROXIES="127.0.0.1/32",
            # Not made beforehand: the first process to sign creates it, and every process must use that one.
            TRACKER_SIGNING_KEY_FILE=str(tmp / "signing.pem"),
            RATE_CONTRIBUTOR_CREATE=f"{CONTRIBUTORS_PER_DAY}/d",
            LIMITED_TOKENS_PER_DAY=str(TOKENS_PER_DAY),
            RATE_AGENT_HEARTBEAT=f"{HEARTBEATS_PER_HOUR}/h",
            ALLOW_PRIVATE_NODE_URLS="1",
        )
        migrate(env)
        access_log = tmp / "access.log"
        access = ["--access-logfile", str(access_log), "--access-logformat", ACCESS_FORMAT]
        with (
            gunicorn(env, workers=2, port=web_port, log_path=tmp / "gunicorn.log", args=access) as (web, _arbiter),
            daphne(env, log_path=tmp / "daphne.log") as ws,
        ):
            yield Layout(web, ws, env, access_log, tmp / "gunicorn.log")


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


def heartbeat(base: str, node_id: str, secret: str, active: int = 0) -> requests.Response:
    return requests.post(
        f"{base}/api/nodes/{node_id}/heartbeat",
        headers={"Authorization": f"Bearer {secret}"},
        json={"queue": {"active": active, "waiting": 0, "max_active": 2}},
        timeout=20,
    )


def live_node(layout: Layout, **fields) -> tuple[str, str, str]:
    """(owner's key, node id, node secret) of a node registered and reported in through gunicorn."""
    key, node_id, secret = register_node_with_key(layout.web, **fields)
    assert heartbeat(layout.web, node_id, secret).status_code == 200
    return key, node_id, secret


def pids_serving(layout: Layout, request_line: str, since: int) -> set[str]:
    """The gunicorn workers that answered `request_line` ("POST /api/tokens") in the access log after `since`."""
    lines = layout.access_log.read_text()[since:].splitlines()
    return {line.split()[0] for line in lines if f" {request_line} " in line}


def in_parallel(call, n: int, connections: int = 10) -> list:
    """`n` calls of `call`, `connections` at a time, each on a connection of its own (no session is shared), so
    that both of gunicorn's workers take some."""
    with ThreadPoolExecutor(connections) as pool:
        return list(pool.map(lambda _: call(), range(n)))


async def linked_agent(session: aiohttp.ClientSession, layout: Layout, secret: str):
    """An agent's link on Daphne, past its greeting; returns (the link, the tracker's published keys)."""
    link = await session.ws_connect(ws_url(layout.ws, "/ws/agent/"), headers={"Authorization": f"Bearer {secret}"})
    keys = await link.receive_json(timeout=10)
    assert keys["type"] == "tracker_keys"
    assert (await link.receive_json(timeout=10))["type"] == "filter_rules"
    return link, keys["keys"]


def test_the_rest_api_and_pages_answer_from_gunicorn_and_the_websockets_from_daphne(layout):
    _, node_id, _ = live_node(layout)
    for path in ("/api/health", "/api/nodes", f"/api/nodes/{node_id}", "/", f"/nodes/{node_id}/", "/metrics"):
        answer = requests.get(layout.web + path, timeout=20)
        assert answer.status_code == 200, path
        assert answer.headers["Server"] == "gunicorn", path

    async def websockets():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(layout.ws, f"/ws/queue/{node_id}/")) as browser:
                snapshot = await browser.receive_json(timeout=10)
            # gunicorn has no websockets: nginx must send /ws/ to Daphne (deploy/nginx-luckrig.conf).
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url(layout.web, f"/ws/queue/{node_id}/"))
            return snapshot, refused.value.status

    snapshot, refused = asyncio.run(websockets())
    assert snapshot["type"] == "queue" and snapshot["node_id"] == node_id
    assert refused == 404
    # RATELIMIT_FALLBACK_PROCESSES is left at 1 here: gunicorn says at start what that would mean without Redis.
    assert "RATELIMIT_FALLBACK_PROCESSES is 1 but gunicorn runs 2 workers" in layout.log.read_text()


def requests_counted(metrics: str) -> float:
    """luckrig_http_requests_total for GET answered 200, as one scrape of /metrics says."""
    line = re.search(
        r'^luckrig_http_requests_total\{(?=[^}]*method="GET")(?=[^}]*status="200")[^}]*\} (\S+)$', metrics, re.M
    )
    return float(line.group(1))


def test_one_scrape_of_gunicorn_counts_the_requests_of_every_worker(layout):
    before = requests_counted(requests.get(f"{layout.web}/metrics", timeout=20).text)
    since = layout.access_log.stat().st_size
    assert in_parallel(lambda: requests.get(f"{layout.web}/api/health", timeout=20).status_code, 16) == [200] * 16
    assert len(pids_serving(layout, "GET /api/health", since)) == 2
    # Whichever worker answers the scrape, it adds up both (prometheus_client's multiprocess files).
    for _ in range(4):
        scrape = requests.get(f"{layout.web}/metrics", timeout=20).text
        assert requests_counted(scrape) >= before + 16
        assert "luckrig_ratelimit_fallback 0.0" in scrape and "luckrig_nodes{" in scrape


def test_a_per_address_rate_limit_is_shared_by_the_gunicorn_workers(layout):
    since = layout.access_log.stat().st_size
    ip = {"X-Forwarded-For": "198.51.100.20"}
    codes = in_parallel(
        lambda: requests.post(f"{layout.web}/api/contributors", json={}, headers=ip, timeout=20).status_code, 20
    )
    # Counted in Redis: two workers together allow the limit once, not twice.
    assert sorted(codes) == [201] * CONTRIBUTORS_PER_DAY + [429] * (20 - CONTRIBUTORS_PER_DAY)
    assert len(pids_serving(layout, "POST /api/contributors", since)) == 2
    # And Daphne, which still answers HTTP when asked directly, counts in the same window.
    late = requests.post(f"{layout.ws}/api/contributors", json={}, headers=ip, timeout=20)
    assert late.status_code == 429 and late.json()["code"] == "ip_rate_limited"


def test_a_nodes_agent_budget_is_one_over_http_on_gunicorn_and_the_link_on_daphne(layout):
    """RATE_AGENT_HEARTBEAT is per node whichever way the heartbeat comes: HTTP (gunicorn) or the link (Daphne)."""
    _, node_id, secret = register_node_with_key(layout.web)
    beat = {"type": "heartbeat", "queue": {"active": 0, "waiting": 0, "max_active": 1}}

    async def spend():
        async with aiohttp.ClientSession() as session:
            link, _ = await linked_agent(session, layout, secret)
            acks = []
            for _ in range(HEARTBEATS_PER_HOUR // 2):
                await link.send_json(beat)
                acks.append((await link.receive_json(timeout=10))["type"])
            over_http = [
                (await asyncio.to_thread(heartbeat, layout.web, node_id, secret)).status_code
                for _ in range(HEARTBEATS_PER_HOUR - HEARTBEATS_PER_HOUR // 2 + 1)
            ]
            await link.send_json(beat)
            refused = await link.receive_json(timeout=10)
            await link.close()
            return acks, over_http, refused

    acks, over_http, refused = asyncio.run(spend())
    assert acks == ["heartbeat_ack"] * (HEARTBEATS_PER_HOUR // 2)
    assert over_http == [200] * (HEARTBEATS_PER_HOUR - HEARTBEATS_PER_HOUR // 2) + [429]
    assert refused["type"] == "error" and refused["code"] == "rate_limited"


def test_what_a_view_on_gunicorn_broadcasts_reaches_websockets_on_daphne(layout):
    """A sync WSGI view sends through the channel layer (async_to_sync → channels_redis) to consumers on Daphne:
    an HTTP heartbeat updates the queue view, a node PATCH pushes its circle policy down the agent's link."""
    key, node_id, secret = live_node(layout)

    async def watch():
        async with aiohttp.ClientSession() as session:
            agent, _ = await linked_agent(session, layout, secret)
            async with session.ws_connect(ws_url(layout.ws, f"/ws/queue/{node_id}/")) as browser:
                before = await browser.receive_json(timeout=10)
                assert (await asyncio.to_thread(heartbeat, layout.web, node_id, secret, 1)).status_code == 200
                update = await browser.receive_json(timeout=10)
                patched = await asyncio.to_thread(
                    requests.patch,
                    f"{layout.web}/api/nodes/{node_id}",
                    json={"circle_only_hours": [3, 4]},
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=20,
                )
                assert patched.status_code == 200, patched.text
                pushed = await agent.receive_json(timeout=10)
            await agent.close()
            return before, update, pushed

    before, update, pushed = asyncio.run(watch())
    assert before["active"] == 0 and update["type"] == "queue" and update["active"] == 1
    assert pushed["type"] == "circles" and pushed["circle_only_hours"] == [3, 4]


def test_tokens_minted_by_either_worker_verify_at_an_agent_and_spend_one_quota(layout):
    _, node_id, secret = live_node(layout)
    since = layout.access_log.stat().st_size
    ip = {"X-Forwarded-For": "198.51.100.30"}
    answers = in_parallel(
        lambda: requests.post(f"{layout.web}/api/tokens", json={"node_id": node_id}, headers=ip, timeout=20), 12
    )
    issued = [a.json() for a in answers if a.status_code == 201]
    refused = [a.json()["code"] for a in answers if a.status_code != 201]
    # The quota is a conditional UPDATE in PostgreSQL: 12 requests at once on two workers take exactly 4.
    assert len(issued) == TOKENS_PER_DAY and refused == ["quota_exceeded"] * (12 - TOKENS_PER_DAY)
    assert len(pids_serving(layout, "POST /api/tokens", since)) == 2
    # Daphne reads the same quota.
    late = requests.post(f"{layout.ws}/api/tokens", json={"node_id": node_id}, headers=ip, timeout=20)
    assert late.status_code == 429 and late.json()["code"] == "quota_exceeded"

    async def published_keys():
        async with aiohttp.ClientSession() as session:
            link, keys = await linked_agent(session, layout, secret)
            await link.close()
            return keys

    # Every worker signed with the one key the agent is given on its link (served by Daphne).
    verifier = TokenVerifier(
        node_id=node_id, issuer=layout.env["SITE_URL"], keys=load_keys(asyncio.run(published_keys()))
    )
    claims = [verifier.verify(f"Bearer {token['token']}") for token in issued]
    assert len({c.jti for c in claims}) == TOKENS_PER_DAY
    assert {c.raw["aud"] for c in claims} == {node_id} and {c.tier for c in claims} == {"limited"}


def test_gunicorn_under_load_reloads_without_refusing_anything_then_stops_within_its_graceful_timeout(layout, tmp_path):
    """HUP (systemctl reload, a deploy): new workers, the socket stays open, nothing is refused. Then SIGTERM
    (systemctl stop/restart): gunicorn closes its socket, each worker finishes the request in hand, and the arbiter
    exits within graceful_timeout. Two requests that take 2 s (a fingerprint check against a slow node) are in
    flight on both workers while other clients keep asking."""
    graceful = 8
    with ScriptedServer() as slow:
        slow.routes["/health"] = Route(200, b"nothing to see", delay=2.0)
        _, node_id, _ = live_node(layout, endpoint_url=f"{slow.base}/v1")
        env = {**layout.env, "WEB_GRACEFUL_TIMEOUT": str(graceful)}
        log = tmp_path / "gunicorn.log"
        with gunicorn(env, workers=2, log_path=log) as (web, arbiter):
            stop = threading.Event()
            load_outcomes: list[str] = []

            def load():
                while not stop.is_set():
                    try:
                        load_outcomes.append(str(requests.get(f"{web}/api/nodes", timeout=20).status_code))
                    except requests.ConnectionError as exc:
                        load_outcomes.append(type(exc).__name__)
                        time.sleep(0.05)

            def verify():
                return requests.post(f"{web}/api/fingerprint/verify", json={"node_id": node_id}, timeout=30)

            def wait_for(condition, what: str):
                deadline = time.monotonic() + 20
                while not condition():
                    assert time.monotonic() < deadline, what
                    time.sleep(0.02)

            with ThreadPoolExecutor(6) as pool:
                loaders = [pool.submit(load) for _ in range(4)]
                wait_for(lambda: len(load_outcomes) > 20, "no load")
                arbiter.send_signal(signal.SIGHUP)
                # Two new workers booted and two old ones gone, while the load went on.
                wait_for(lambda: log.read_text().count("Worker exiting") >= 2, "the old workers never left")
                reloaded = len(load_outcomes)
                wait_for(lambda: len(load_outcomes) > reloaded + 20, "no load after the reload")
                during_reload = list(load_outcomes)

                in_flight = [pool.submit(verify) for _ in range(2)]
                wait_for(lambda: slow.hits.count("/health") == 2, "the slow requests never reached the node")
                started = time.monotonic()  # both workers are now inside a request
                arbiter.send_signal(signal.SIGTERM)
                code = arbiter.wait(timeout=graceful + 10)
                took = time.monotonic() - started
                stop.set()
                finished = [f.result(timeout=30) for f in in_flight]
                for f in loaders:
                    f.result(timeout=30)

    assert set(during_reload) == {"200"}
    assert log.read_text().count("Booting worker") == 4
    assert code == 0
    # It waited for the requests in hand (about 2 s from when they reached the node), and no longer than allowed.
    assert 1.0 <= took <= graceful, f"{took:.1f} s"
    assert [r.status_code for r in finished] == [200, 200]
    assert all(r.json()["url"] == f"{slow.base}/health" for r in finished)
    # Other clients were served until the socket closed, then refused: never a 5xx, never a hang.
    assert set(load_outcomes) <= {"200", "ConnectionError"}, sorted(set(load_outcomes))
    text = log.read_text()
    assert "Handling signal: term" in text and "WORKER TIMEOUT" not in text and "SIGKILL" not in text


def test_a_token_minted_and_revoked_on_gunicorn_is_pushed_to_its_agent_on_daphne(layout):
    """The revocation path (a circle deleted, as a member removed or a moderator's ban): the jtis reach the agent's
    link at once, through Redis, from a sync view on another server."""
    key, node_id, secret = live_node(layout)
    owner = {"Authorization": f"Bearer {key}"}
    circle = requests.post(f"{layout.web}/api/circles", json={"name": "flatmates"}, headers=owner, timeout=20)
    assert circle.status_code == 201, circle.text
    circle_id = circle.json()["circle"]["id"]

    async def watch():
        async with aiohttp.ClientSession() as session:
            agent, _ = await linked_agent(session, layout, secret)

            def http(method, path, **kwargs):
                return requests.request(method, layout.web + path, headers=owner, timeout=20, **kwargs)

            shared = await asyncio.to_thread(
                http, "PATCH", f"/api/nodes/{node_id}", json={"visibility": "circle", "circles": [circle_id]}
            )
            assert shared.status_code == 200, shared.text
            told = await agent.receive_json(timeout=10)
            token = await asyncio.to_thread(
                http, "POST", "/api/tokens", json={"node_id": node_id, "circle_id": circle_id}
            )
            assert token.status_code == 201, token.text
            assert (await asyncio.to_thread(http, "DELETE", f"/api/circles/{circle_id}")).status_code == 204
            pushed = [await agent.receive_json(timeout=10), await agent.receive_json(timeout=10)]
            await agent.close()
            return told, token.json(), pushed

    told, token, pushed = asyncio.run(watch())
    assert told["type"] == "circles" and told["circles"] == [circle_id] and told["visibility"] == "circle"
    assert token["circle"]["id"] == circle_id
    by_type = {message["type"]: message for message in pushed}
    assert by_type["revoke"]["jtis"] == [token["jti"]]
    assert by_type["circles"]["circles"] == []


def test_the_shipped_nginx_site_sends_the_api_and_pages_to_gunicorn_and_the_websockets_to_daphne(layout, tmp_path):
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx test skipped: no nginx binary on this machine (apt-get install nginx)")
    _, node_id, _ = live_node(layout)
    ports = {"web_port": int(layout.web.rsplit(":", 1)[1]), "ws_ports": [int(layout.ws.rsplit(":", 1)[1])]}
    with running_nginx(binary, tmp_path / "nginx", **ports) as (http, https, cert):
        (tmp_path / "nginx" / "static" / "probe.css").write_text("body{}")
        served = layout.access_log.read_text().count("GET /api/health 200")
        answer = requests.get(https + "/api/health", timeout=20, verify=cert)
        assert answer.status_code == 200 and answer.headers["Server"].startswith("nginx")
        # gunicorn answered it (its access log is written just after the answer)
        assert wait_until(lambda: layout.access_log.read_text().count("GET /api/health 200") == served + 1, 5)
        page = requests.get(https + f"/nodes/{node_id}/", timeout=20, verify=cert)
        assert page.status_code == 200 and node_id in page.text
        # Plain HTTP is sent to HTTPS; static files come from disk; a body over 256 KiB never reaches a worker.
        redirect = requests.get(http + "/api/health", timeout=10, allow_redirects=False)
        assert redirect.status_code == 301 and redirect.headers["Location"].startswith("https://")
        static = requests.get(https + "/static/probe.css", timeout=10, verify=cert)
        assert static.status_code == 200 and static.text == "body{}"
        big = requests.post(https + "/api/tokens", data=b"x" * 300_000, timeout=10, verify=cert)
        # nginx's own page, not the tracker's JSON 413 (which a body over 64 KiB would get from it too)
        assert big.status_code == 413 and "<center>nginx" in big.text

        async def through_nginx():
            async with aiohttp.ClientSession() as session:
                url = https.replace("https://", "wss://") + f"/ws/queue/{node_id}/"
                async with session.ws_connect(url, ssl=ssl.create_default_context(cafile=cert)) as browser:
                    return await browser.receive_json(timeout=10)

        snapshot = asyncio.run(through_nginx())
        assert snapshot["type"] == "queue" and snapshot["node_id"] == node_id

"""The tracker-key cache the agent and the relay share (node_agent/tracker_keys.py), in process against a small
aiohttp server: a good list is cached, and nothing (an outage, an empty or malformed answer, a read-only state
directory) ever wipes keys that work."""

import asyncio
import logging

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node_agent.tracker_keys import TrackerKeyCache

LOG = logging.getLogger("test.tracker_keys")


def published_key(kid: str) -> dict:
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {"kid": kid, "alg": "EdDSA", "public_key_pem": pem, "not_after": None}


async def fetch_each(tmp_path, answers: list) -> list[set[str]]:
    """Serve `answers` one per request (a dict: the JSON body; an int: that status) and fetch once per answer;
    the kids the cache holds on disk after each fetch."""
    pending = list(answers)

    async def keys(_request):
        answer = pending.pop(0)
        return web.Response(status=answer) if isinstance(answer, int) else web.json_response(answer)

    app = web.Application()
    app.router.add_get("/api/tracker-keys", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    cache = TrackerKeyCache(tracker=f"http://127.0.0.1:{port}/", path=tmp_path / "state" / "keys.json", log=LOG)
    seen = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in answers:
                await cache.fetch(session)
                seen.append(set(cache.cached()))
    finally:
        await runner.cleanup()
    return seen


def test_a_good_list_is_cached_and_bad_answers_never_wipe_it(tmp_path):
    answers = [
        {"keys": [published_key("k1")]},
        {"keys": []},  # an empty list
        {"keys": [{"kid": "k9", "alg": "RS256", "public_key_pem": "x"}]},  # no usable key
        {"keys": {"kid": "k9"}},  # not a list
        {"nothing": True},
        503,
        {"keys": [published_key("k2"), published_key("k3")]},
    ]
    seen = asyncio.run(fetch_each(tmp_path, answers))
    assert seen == [{"k1"}] * 6 + [{"k2", "k3"}]


def test_an_unreachable_tracker_returns_nothing_and_keeps_the_cache(tmp_path):
    cache = TrackerKeyCache(tracker="http://127.0.0.1:9", path=tmp_path / "keys.json", log=LOG)
    assert set(cache.store([published_key("k1")])) == {"k1"}

    async def fetch():
        async with aiohttp.ClientSession() as session:
            return await cache.fetch(session)

    assert asyncio.run(fetch()) == {}
    assert set(cache.cached()) == {"k1"}


def test_a_state_directory_that_cannot_be_written_costs_the_cache_not_the_keys(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    cache = TrackerKeyCache(tracker="http://127.0.0.1:9", path=blocker / "keys.json", log=LOG)
    assert set(cache.store([published_key("k1")])) == {"k1"}
    assert cache.cached() == {}

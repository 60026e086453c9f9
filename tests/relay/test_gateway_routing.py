"""The gateway (relay/gateway.py) in process, against the harness's tracker (catalog and tokens) and scripted agents
(tests/relay/harness.py): routing by rig and by model through this relay's own tunnels, tokens asked for and cached
on the caller's behalf, refusals that move a model route and not a rig route, the tracker's refusals and outage,
max_wait, and the rig named in every answer. The real tracker and agents, with the OpenAI SDK, are in
tests/relay/test_gateway.py."""

import asyncio
import json

import jwt

from node_agent import frames
from tests.relay.harness import SSE_HEADERS, relay_setup, run, sse_chunk

KEY = "lrk_" + "k" * 43


def final_chunk(node_id: str) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "luckrig": {"node_id": node_id, "queue_wait_ms": 0},
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def answer(node_id: str, words=("Hel", "lo")) -> bytes:
    return b"".join(sse_chunk(w) for w in words) + final_chunk(node_id) + b"data: [DONE]\n\n"


def refusal(status: int, code: str) -> bytes:
    return json.dumps({"error": {"message": code, "type": "x", "code": code}}).encode()


async def serve(agent, node_id: str, script=None, seen=None):
    """Answer each request of `agent`: `script(sid, head, body)` may answer itself (and return True)."""
    while True:
        sid, head, body = await agent.requests.get()
        if seen is not None:
            seen.append((head, json.loads(body)))
        if script is not None and await script(sid, head, body):
            continue
        await agent.respond(sid, headers=SSE_HEADERS, body=answer(node_id))


async def gateway(s, body: dict, key: str | None = KEY, headers=None):
    hdrs = {"Authorization": f"Bearer {key}"} if key else {}
    r = await s.session.post(s.base + "/v1/chat/completions", json=body, headers={**hdrs, **(headers or {})})
    return r, await r.read()


def chat(model: str, stream: bool = False, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream, **extra}


def test_a_model_route_and_a_rig_route_through_this_relays_tunnels(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            s.tracker.rig("rig-1")
            s.tracker.aliases = {"smollm2": "smollm2-135m-instruct"}
            agent = await s.agent("rig-1")
            seen = []

            async def lying(sid, head, body):  # this agent names another node in its final chunk
                await agent.respond(sid, headers=SSE_HEADERS, body=answer("someone-else"))
                return True

            task = asyncio.ensure_future(serve(agent, "rig-1", lying, seen))
            r, raw = await gateway(s, chat("SmolLM2-135M-Instruct"))
            assert r.status == 200 and r.headers["X-LuckRig-Node"] == "rig-1"
            done = json.loads(raw)
            assert done["object"] == "chat.completion" and done["choices"][0]["message"]["content"] == "Hello"
            assert done["usage"]["completion_tokens"] == 2 and done["luckrig"]["node_id"] == "rig-1"
            # The agent was asked for a stream, with a token the tracker issued for this caller, never the key.
            head, body = seen[0]
            token = dict(head.headers)["Authorization"].removeprefix("Bearer ")
            assert jwt.decode(token, options={"verify_signature": False})["aud"] == "rig-1"
            assert body["stream"] is True and "model" not in body and KEY not in json.dumps(body)
            # Streaming, by alias and by rig: real SSE, the final chunk corrected, the token cached (one issued).
            for model in ("smollm2", "rig:rig-1", "rig-1"):
                r, raw = await gateway(s, chat(model, stream=True))
                assert r.status == 200 and r.headers["X-LuckRig-Node"] == "rig-1"
                assert r.headers["Content-Type"].startswith("text/event-stream")
                assert raw.endswith(b"data: [DONE]\n\n") and b'"node_id":"rig-1"' in raw and b"someone-else" not in raw
            assert r.headers["Access-Control-Expose-Headers"] == "Retry-After, X-LuckRig-Node"
            r = await s.session.options(s.base + "/v1/chat/completions")
            assert r.status == 204 and "X-LuckRig-Max-Wait" in r.headers["Access-Control-Allow-Headers"]
            assert len(s.tracker.token_requests) == 2  # 3 requests a token: the fourth request got a new one
            assert s.tracker.token_requests[0]["contributor_key"] == KEY
            assert s.tracker.token_requests[0]["client_ip"] == "127.0.0.1"
            # An anonymous caller gets tokens of its own (by address), a wrong credential 401.
            r, _ = await gateway(s, chat("smollm2"), key=None)
            assert r.status == 200 and s.tracker.token_requests[-1]["contributor_key"] is None
            r, raw = await gateway(s, chat("smollm2"), key="eyJhbGciOi.a.b")
            assert r.status == 401 and json.loads(raw)["error"]["code"] == "invalid_credential"
            # `Bearer anonymous`, the placeholder for an SDK that refuses an empty key, is no credential; a word
            # near it is a mistyped credential, refused rather than demoted to the limited tier.
            asked = len(s.tracker.token_requests)
            r, _ = await gateway(s, chat("smollm2"), key="anonymous")
            assert r.status == 200 and s.tracker.token_requests[asked:] == []  # the anonymous caller's cached token
            for typo in ("anonymou", "Anonymous", "anonymous2", "lrk-anonymous"):
                r, raw = await gateway(s, chat("smollm2"), key=typo)
                assert r.status == 401 and json.loads(raw)["error"]["code"] == "invalid_credential", typo
            # The relay witnessed what it carried through its tunnel, with the tokens' jtis, as on /n/ paths.
            jti = jwt.decode(token, options={"verify_signature": False})["jti"]
            for _ in range(50):
                if any(e["jti"] == jti for e in s.tracker.entries()):
                    break
                await asyncio.sleep(0.1)
            entry = next(e for e in s.tracker.entries() if e["jti"] == jti)
            assert entry["node_id"] == "rig-1" and entry["ended"] == "done" and entry["content_chunks"] == 2
            task.cancel()

    run(scenario())


def test_unknown_models_and_known_models_without_a_rig_fail_at_once(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            s.tracker.rig("rig-1", "qwen3:35b")
            s.tracker.rig("rig-2", "smollm2-135m-instruct")
            r, raw = await gateway(s, chat("qwen3:32b"))
            error = json.loads(raw)["error"]
            assert r.status == 404 and error["code"] == "model_not_found" and error["param"] == "model"
            assert error["suggestions"][0] == "qwen3:35b" and "qwen3:35b" in error["message"]
            assert r.headers["X-LuckRig-Node"] == "none"
            r, raw = await gateway(s, chat("rig:nowhere"))
            assert r.status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
            # The rig serving qwen3 leaves the catalog: its model is known, so 503 at once, naming what is on offer.
            s.tracker.rigs = [r for r in s.tracker.rigs if r["node_id"] != "rig-1"]
            await s.relay.gateway.catalog.refresh()
            r, raw = await gateway(s, chat("QWEN3:35B"))
            error = json.loads(raw)["error"]
            assert r.status == 503 and error["code"] == "no_rig_available"
            assert (
                error["available_models"] == ["smollm2-135m-instruct"] and "smollm2-135m-instruct" in error["message"]
            )
            # Parameters no rig can serve: 400 naming them, before any token is asked for.
            for name, value in (("n", 2), ("tools", [{"type": "function"}]), ("logprobs", True)):
                r, raw = await gateway(s, chat("smollm2-135m-instruct", **{name: value}))
                error = json.loads(raw)["error"]
                assert r.status == 400 and error["code"] == "unsupported_parameter" and error["param"] == name
            assert s.tracker.token_requests == []
            # GET /v1/models: one entry per model, one per rig.
            r = await s.session.get(s.base + "/v1/models")
            ids = [m["id"] for m in (await r.json())["data"]]
            assert ids == ["smollm2-135m-instruct", "rig:rig-2"]

    run(scenario())


def test_a_refusal_before_the_first_byte_moves_a_model_route_but_not_a_rig_route(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            s.tracker.rig("rig-1", tok_per_sec_p50=100.0)  # faster: tried first
            s.tracker.rig("rig-2", tok_per_sec_p50=10.0)
            one, two = await s.agent("rig-1"), await s.agent("rig-2")

            async def full(sid, head, body):
                await one.respond(
                    sid, 429, [("Content-Type", "application/json"), ("Retry-After", "7")], refusal(429, "queue_full")
                )
                return True

            tasks = [asyncio.ensure_future(serve(one, "rig-1", full)), asyncio.ensure_future(serve(two, "rig-2"))]
            r, raw = await gateway(s, chat("smollm2-135m-instruct", stream=True))
            assert r.status == 200 and r.headers["X-LuckRig-Node"] == "rig-2" and b'"node_id":"rig-2"' in raw
            r, raw = await gateway(s, chat("rig:rig-1", stream=True))
            assert r.status == 429 and r.headers["Retry-After"] == "7" and r.headers["X-LuckRig-Node"] == "rig-1"
            assert json.loads(raw)["error"]["code"] == "queue_full"
            # A rig whose tunnel is gone (the catalog is seconds behind): the model route goes on, the rig route 503.
            await one.close()
            await asyncio.sleep(0.2)
            r, raw = await gateway(s, chat("smollm2-135m-instruct"))
            assert r.status == 200 and r.headers["X-LuckRig-Node"] == "rig-2"
            r, raw = await gateway(s, chat("rig:rig-1"))
            assert r.status == 503 and json.loads(raw)["error"]["code"] == "upstream_unavailable"
            for task in tasks:
                task.cancel()

    run(scenario())


def test_an_agent_refusing_the_token_gets_one_fresh_token_and_one_retry(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            s.tracker.rig("rig-1")
            agent = await s.agent("rig-1")
            refused = []

            async def exhausted_once(sid, head, body):
                if not refused:
                    refused.append(sid)
                    await agent.respond(sid, 429, body=refusal(429, "token_exhausted"))
                    return True
                return False

            task = asyncio.ensure_future(serve(agent, "rig-1", exhausted_once))
            r, _ = await gateway(s, chat("rig:rig-1"))
            assert r.status == 200 and len(refused) == 1 and len(s.tracker.token_requests) == 2
            task.cancel()

    run(scenario())


def test_the_trackers_refusals_pass_unchanged_and_an_outage_spares_cached_tokens(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            s.tracker.rig("rig-1")
            agent = await s.agent("rig-1")
            task = asyncio.ensure_future(serve(agent, "rig-1"))
            ban = {"ban": {"kind": "contributor", "reason": "spam", "expires_at": None}}
            s.tracker.token_refusal = (403, {"error": "You are banned.", "code": "banned", **ban}, {})
            r, raw = await gateway(s, chat("rig:rig-1"))
            error = json.loads(raw)["error"]
            assert r.status == 403 and error["code"] == "banned" and error["ban"]["reason"] == "spam"
            quota = {"error": "Quota.", "code": "quota_exceeded", "retry_after_sec": 60, "resets_at": "x"}
            s.tracker.token_refusal = (429, quota, {"Retry-After": "60"})
            r, raw = await gateway(s, chat("smollm2-135m-instruct"))
            error = json.loads(raw)["error"]
            assert r.status == 429 and r.headers["Retry-After"] == "60" and error["code"] == "quota_exceeded"
            assert error["retry_after_sec"] == 60
            s.tracker.token_refusal = None
            r, _ = await gateway(s, chat("rig:rig-1"))
            assert r.status == 200
            # The tracker goes down: the cached token keeps serving; a caller without one gets 503 at once.
            s.tracker.up = False
            r, _ = await gateway(s, chat("rig:rig-1"))
            assert r.status == 200
            r, raw = await gateway(s, chat("rig:rig-1"), key="lrk_" + "z" * 43)
            error = json.loads(raw)["error"]
            assert r.status == 503 and error["code"] == "tracker_unavailable" and "tracker" in error["message"]
            # ... and once the cached token is spent (3 requests), 503 too.
            r, _ = await gateway(s, chat("rig:rig-1"))
            assert r.status == 200
            r, raw = await gateway(s, chat("rig:rig-1"))
            assert r.status == 503 and json.loads(raw)["error"]["code"] == "tracker_unavailable"
            task.cancel()

    run(scenario())


def test_max_wait_refuses_a_long_queue_at_once_and_ends_a_wait_that_runs_over(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            s.tracker.rig("rig-1", queue={"active": 1, "waiting": 3, "max_active": 1, "eta_sec": 120})
            s.tracker.rig("rig-2", "tiny")
            agent = await s.agent("rig-2")
            r, raw = await gateway(s, chat("rig:rig-1", max_wait=30))
            assert r.status == 429 and json.loads(raw)["error"]["code"] == "queue_timeout"
            assert r.headers["Retry-After"] == "120"
            r, raw = await gateway(s, chat("rig:rig-1", max_wait=601))
            assert r.status == 400 and json.loads(raw)["error"]["param"] == "max_wait"

            sids = []

            async def waiting(sid, head, body):  # a rig whose queue never moves: comments only
                sids.append(sid)
                await agent.respond(sid, headers=SSE_HEADERS, body=b": queue position=2 eta_sec=40\n\n", end=False)
                return True

            task = asyncio.ensure_future(serve(agent, "rig-2", waiting))
            r, raw = await gateway(s, chat("tiny", stream=True), headers={"X-LuckRig-Max-Wait": "1"})
            assert r.status == 200 and raw.startswith(b": queue position=2")
            assert b'"code":"queue_timeout"' in raw and raw.endswith(b"data: [DONE]\n\n")
            await agent.wait_for_frame(frames.CANCEL, sids[0])  # the rig's slot is given back
            r, raw = await gateway(s, chat("tiny", max_wait=1))
            assert r.status == 429 and json.loads(raw)["error"]["code"] == "queue_timeout"
            assert r.headers["Retry-After"] == "40"
            await agent.wait_for_frame(frames.CANCEL, sids[1])
            task.cancel()

    run(scenario())


def test_the_gateway_never_carries_a_request_to_a_private_address_unless_told_to(tmp_path):
    """A direct rig's endpoint_url is its contributor's choice and a name can resolve anywhere later (DNS
    rebinding): without the guard the relay POSTed the prompt and a token to whatever its own network reaches, and
    passed the answer back. Literal loopback IPs and names resolving to loopback are refused; a relay started with
    --allow-private-rigs (make run, the tests) still reaches them."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def scenario():
        hits = []

        async def direct_rig(request):
            hits.append(request.path)
            return web.Response(body=answer("rig-d"), headers=SSE_HEADERS)

        app = web.Application()
        app.router.add_post("/v1/chat/completions", direct_rig)
        inside = TestServer(app, host="127.0.0.1")
        await inside.start_server()
        try:
            for host in ("127.0.0.1", "localhost"):
                async with relay_setup(tmp_path, allow_private_rigs=0) as s:
                    s.tracker.rig("rig-d", endpoint_url=f"http://{host}:{inside.port}/v1", relay_id=None)
                    await s.relay.gateway.catalog.refresh()
                    r, raw = await gateway(s, chat("rig:rig-d"))
                    assert r.status == 503, (host, r.status, raw)
                    assert hits == [], host  # nothing reached the address behind the relay
            async with relay_setup(tmp_path) as s:  # allowed: the same rig answers
                s.tracker.rig("rig-d", endpoint_url=f"http://localhost:{inside.port}/v1", relay_id=None)
                await s.relay.gateway.catalog.refresh()
                r, raw = await gateway(s, chat("rig:rig-d"))
                assert r.status == 200 and json.loads(raw)["luckrig"]["node_id"] == "rig-d"
                assert hits == ["/v1/chat/completions"]
        finally:
            await inside.close()

    run(scenario())

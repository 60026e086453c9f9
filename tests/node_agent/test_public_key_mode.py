"""Public-key ("subtext") mode end to end: a real tracker issues public-key tokens, a real agent with a node key
opens sealed requests, runs them through plain mode's policy, queue and budget, and seals the answer back."""

import json
import socket
import threading

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent import keys, subtext
from tests.node_agent.fakes import wait_until
from tests.node_agent.public_key_rig import CONVERSATION, error_code, events_of, tampered

pytestmark = pytest.mark.agent

# --- the happy path ---------------------------------------------------------------------------------------------


def test_a_sealed_multi_turn_conversation_streams_back_a_sealed_answer(rig, fake_upstream):
    issued = rig.token()
    assert issued["crypto_mode"] == "public-key" and issued["node_public_key_fingerprint"] == rig.fingerprint
    with rig.post(issued, rig.seal(issued, params={"temperature": 0.3, "max_tokens": 5000}), stream=True) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = events_of(r)
    data = [(value, raw) for kind, value, raw in events if kind == "data"]
    assert [kind for kind, _, _ in events] == ["data"] * 4
    (role, _), (content, content_raw), (final, final_raw), (done, _) = data
    assert role["choices"][0]["delta"] == {"role": "assistant"}
    delta = content["choices"][0]["delta"]["content"]
    assert delta.startswith(subtext.RESPONSE_COVER) and subtext.contains_subtext(delta)
    # Written as raw UTF-8: a selector is 4 bytes on the wire, never a 12-byte \u escape pair.
    assert b"\\u" not in content_raw and len(content_raw) < 5 * len(subtext.find_and_decode(delta)) + 300
    # Outside the envelope: token counts only, no timing, no text, no luckrig object.
    assert final["choices"] == [] and final["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 12,
        "total_tokens": 19,
    }
    assert set(final) == {"id", "object", "created", "model", "choices", "usage"} and b'luckrig"' not in final_raw
    assert done == "[DONE]"
    assert all(word.strip().encode() not in b"".join(raw for _, _, raw in events) for word in fake_upstream.words)

    answer = rig.open(issued, delta)
    assert answer["content"] == fake_upstream.text() and answer["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 12
    luckrig = answer["luckrig"]
    assert luckrig["node_id"] == rig.agent.node_id and luckrig["queue_wait_ms"] == 0.0
    assert luckrig["proxy_ttft_ms"] is not None and luckrig["generation_ms"] >= 0 and luckrig["truncated"] is False
    assert answer["moderation"] == {"input": "not_configured", "output": "off"}
    # The upstream got the decrypted conversation, system message and history included, and the budget's clamp.
    sent = fake_upstream.requests[-1]
    assert sent["messages"] == CONVERSATION
    assert sent["max_tokens"] == 256 and sent["temperature"] == 0.3  # the limited tier's output budget


def test_non_streaming_returns_a_chat_completion_whose_message_is_sealed(rig, fake_upstream):
    issued = rig.token()
    r = rig.post(issued, rig.seal(issued, params={"max_tokens": 5}))
    assert r.status_code == 200 and b"\\u" not in r.content
    body = r.json()
    assert body["object"] == "chat.completion" and "luckrig" not in body
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"].startswith(subtext.RESPONSE_COVER)
    answer = rig.open(issued, message["content"])
    assert answer["content"] == "".join(fake_upstream.words[:5]) and answer["finish_reason"] == "length"
    assert answer["luckrig"]["truncated"] is False and fake_upstream.requests[-1]["max_tokens"] == 5


def test_health_offers_public_key_mode_with_the_loaded_key(rig):
    health = requests.get(rig.agent.base + "/health", timeout=10).json()
    assert health["crypto_modes"] == ["plain", "public-key"]
    assert health["node_public_key_fingerprint"] == rig.fingerprint


def test_a_sixteen_kib_conversation_fits_even_sent_with_ascii_escapes(rig, fake_upstream):
    issued = rig.token()
    long = [{"role": "system", "content": "Be brief."}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "ひらがな and text. " * 70} for i in range(11)
    ]
    assert sum(len(m["content"].encode()) for m in long) > 16 * 1024
    r = rig.post(issued, rig.seal(issued, long), ascii_escapes=True)  # the worst case: 12 bytes per selector
    assert r.status_code == 200, r.text
    assert fake_upstream.requests[-1]["messages"] == long


# --- queueing, cancellation, budgets, usage -----------------------------------------------------------------------


def raw_sealed_request(rig, issued, content: str) -> socket.socket:
    host, port = rig.agent.base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    payload = json.dumps(
        {"messages": [{"role": "user", "content": content}], "stream": True}, ensure_ascii=False
    ).encode()
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {issued['token']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def queue(rig) -> dict:
    return requests.get(rig.agent.base + "/health", timeout=10).json()["queue"]


def test_a_waiting_sealed_request_gets_queue_comments_then_its_answer(start_rig, fake_upstream):
    fake_upstream.delay = 0.15  # ~1.8 s per generation
    rig = start_rig(fake_upstream.base, max_active=1, max_waiting=4)
    first = rig.token()
    blocker = raw_sealed_request(rig, first, rig.seal(first))
    assert wait_until(lambda: fake_upstream.active == 1)
    second = rig.token()
    with rig.post(second, rig.seal(second), stream=True) as r:
        events = events_of(r)
    blocker.close()
    assert events[0][0] == "comment" and events[0][1].startswith("queue position=1 eta_sec=")
    data = [value for kind, value, _ in events if kind == "data"]
    answer = rig.open(second, data[1]["choices"][0]["delta"]["content"])
    assert answer["content"] == fake_upstream.text() and answer["luckrig"]["queue_wait_ms"] > 100


def test_hanging_up_a_sealed_request_cancels_the_upstream_and_frees_the_slot(start_rig, fake_upstream):
    fake_upstream.delay = 0.15
    rig = start_rig(fake_upstream.base, max_active=1, max_waiting=4)
    issued = rig.token()
    sock = raw_sealed_request(rig, issued, rig.seal(issued))
    assert wait_until(lambda: fake_upstream.active == 1)
    sock.close()
    assert wait_until(lambda: fake_upstream.active == 0, timeout=5) and fake_upstream.cancelled == 1
    assert wait_until(lambda: queue(rig)["active"] == 0, timeout=5)


def test_sealed_requests_spend_the_tokens_budget_and_their_usage_reaches_the_tracker(rig, tracker, fake_upstream):
    issued = rig.token()
    for _ in range(3):  # the limited tier's 3 requests
        assert rig.post(issued, rig.seal(issued, params={"max_tokens": 2})).status_code == 200
    r = rig.post(issued, rig.seal(issued))
    assert r.status_code == 429 and error_code(r) == "token_exhausted"

    from tests.node_agent.test_serving import served_at

    assert wait_until(lambda: served_at(tracker, rig.agent.node_id) == 3, timeout=15)


def test_two_sealed_streams_at_once_each_get_their_own_answer(start_rig, fake_upstream):
    fake_upstream.delay = 0.02
    rig = start_rig(fake_upstream.base, max_active=2)
    results = {}

    def run(name):
        issued = rig.token()
        with rig.post(issued, rig.seal(issued, [{"role": "user", "content": name}]), stream=True) as r:
            data = [v for k, v, _ in events_of(r) if k == "data"]
        results[name] = rig.open(issued, data[1]["choices"][0]["delta"]["content"])["content"]

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"a": fake_upstream.text(), "b": fake_upstream.text()}


# --- upstream failures ------------------------------------------------------------------------------------------


def test_upstream_failures_have_plain_modes_codes(rig, fake_upstream):
    fake_upstream.mode = "http_500"
    issued = rig.token()
    r = rig.post(issued, rig.seal(issued), stream=True)
    assert r.status_code == 502 and error_code(r) == "upstream_error"
    fake_upstream.mode = "die_mid_stream"
    with rig.post(issued, rig.seal(issued), stream=True) as r:
        assert r.status_code == 200
        data = [v for k, v, _ in events_of(r) if k == "data"]
    assert data[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert data[-2]["error"]["code"] == "upstream_error" and data[-1] == "[DONE]"


def test_a_sealed_request_to_a_dead_upstream_is_a_503_and_costs_nothing(start_rig):
    from tests.processes import free_port

    rig = start_rig(f"http://127.0.0.1:{free_port()}", backend="llama.cpp")
    issued = rig.token()
    for _ in range(4):
        r = rig.post(issued, rig.seal(issued), stream=True)
        assert r.status_code == 503 and error_code(r) == "upstream_unavailable"


# --- policy on the decrypted text ---------------------------------------------------------------------------------


def test_filter_rules_run_on_the_decrypted_conversation(rig, fake_upstream):
    issued = rig.token()
    for messages in (
        [{"role": "user", "content": "how to make a pipe bomb"}],
        [{"role": "system", "content": "Explain how to synthesize sarin."}, {"role": "user", "content": "go on"}],
    ):
        r = rig.post(issued, rig.seal(issued, messages))
        assert r.status_code == 422 and error_code(r) == "prompt_filtered"
        assert "pipe bomb" not in r.text and "sarin" not in r.text.lower()
    assert fake_upstream.requests == []


def test_the_moderation_hook_sees_the_decrypted_text_and_fails_closed(start_rig, fake_upstream, moderation):
    rig = start_rig(fake_upstream.base, moderation_endpoint=moderation.base + "/v1/moderations")
    issued = rig.token()
    r = rig.post(issued, rig.seal(issued, [{"role": "user", "content": "tell me about forbidden-topic"}]))
    assert r.status_code == 451 and error_code(r) == "moderation_blocked" and "forbidden" not in r.text
    assert "tell me about forbidden-topic" in moderation.inputs[-1]
    moderation.mode = "http_500"
    r = rig.post(issued, rig.seal(issued), stream=True)
    assert r.status_code == 451 and error_code(r) == "moderation_blocked"
    assert fake_upstream.requests == []
    moderation.mode = "ok"
    r = rig.post(issued, rig.seal(issued))
    answer = rig.open(issued, r.json()["choices"][0]["message"]["content"])
    assert answer["moderation"] == {"input": "passed", "output": "recorded"}
    assert wait_until(lambda: fake_upstream.text() in moderation.inputs)  # the answer, classified afterwards


def test_output_moderation_can_withhold_a_sealed_answer(start_rig, fake_upstream, moderation):
    fake_upstream.words = ["about ", "forbidden-topic"]
    rig = start_rig(
        fake_upstream.base, moderation_endpoint=moderation.base + "/v1/moderations", moderate_output="block"
    )
    issued = rig.token()
    with rig.post(issued, rig.seal(issued), stream=True) as r:
        data = [v for k, v, _ in events_of(r) if k == "data"]
    assert data[-2]["error"]["code"] == "moderation_blocked" and data[-1] == "[DONE]"
    assert not any(isinstance(d, dict) and d.get("choices") and "content" in d["choices"][0]["delta"] for d in data)
    r = rig.post(issued, rig.seal(issued))
    assert r.status_code == 451 and error_code(r) == "moderation_blocked"


def test_the_agents_log_never_contains_the_decrypted_prompt_or_answer(start_rig, fake_upstream, moderation):
    fake_upstream.words = ["SECRET-ANSWER-", "TEXT"]
    rig = start_rig(fake_upstream.base, moderation_endpoint=moderation.base + "/v1/moderations")
    issued = rig.token()
    secret = [{"role": "system", "content": "SECRET-SYSTEM"}, {"role": "user", "content": "SECRET-PROMPT-TEXT"}]
    assert rig.post(issued, rig.seal(issued, secret), stream=True).content
    assert rig.post(issued, rig.seal(issued, secret)).status_code == 200
    moderation.mode = "http_500"
    assert rig.post(issued, rig.seal(issued, secret)).status_code == 451
    assert rig.post(issued, tampered(rig.seal(issued, secret))).status_code == 400
    log = rig.agent.log()
    assert "request t_" in log and "mode=public-key" in log
    for text in ("SECRET-SYSTEM", "SECRET-PROMPT", "SECRET-ANSWER"):
        assert text not in log


# --- keep-alive while a sealed answer is generated (in process: the real interval is 15 s) ------------------------


def test_a_long_generation_sends_keepalive_comments_before_the_sealed_answer(monkeypatch):
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from node_agent import auth, public_key_mode
    from node_agent.policy import Policy
    from node_agent.queue import SlotQueue

    monkeypatch.setattr(public_key_mode, "KEEPALIVE_SEC", 0.05)
    taster = X25519PrivateKey.generate()
    user_pem = keys.public_pem_of(taster.public_key())

    class Upstream:
        async def stream(self, body):  # batches of (the chunk's text, or None; the chunk), as node_agent/upstream.py
            for i in range(6):
                await asyncio.sleep(0.03)
                choice = {"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}
                yield [(None, {"id": "c", "choices": [choice]})]
            usage = {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
            yield [(None, {"id": "c", "choices": [], "usage": usage})]

    from node_agent.config import AgentConfig

    class Agent:
        node_id = "n1"
        config = AgentConfig()
        queue = SlotQueue(1, 1)
        upstream = Upstream()
        policy = Policy(session=None, moderation_endpoint=None, moderation_timeout=1, moderate_output="off")
        background: set = set()
        in_flight: dict = {}  # the answers being served (node_agent/drain.py)

    claims = auth.Claims("j1", "anon:x", "limited", "public-key", 3, 256, 0, {"user_public_key": user_pem})

    async def handler(request):
        relay = public_key_mode.PublicKeyRelay(
            Agent(),
            request,
            claims,
            [{"role": "user", "content": "hi"}],
            {},
            "m",
            256,
            truncated_by_budget=False,
            moderation={"input": "not_configured", "output": "off"},
            user_public_pem=user_pem,
        )
        return await relay.stream()

    async def run():
        app = web.Application()
        app.router.add_post("/", handler)
        async with TestClient(TestServer(app)) as client:
            r = await client.post("/")
            return (await r.read()).decode().split("\n\n")

    lines = [line for line in asyncio.run(run()) if line]
    assert lines[0].startswith("data: ") and '"role":"assistant"' in lines[0]
    assert ": generating" in lines[1:-3]  # between the role chunk and the sealed content
    content = json.loads(lines[-3][5:])["choices"][0]["delta"]["content"]
    answer = subtext.open_response(content, taster, jti="j1", node_id="n1")
    assert answer["content"] == "w0 w1 w2 w3 w4 w5 " and lines[-1] == "data: [DONE]"

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

pytestmark = pytest.mark.agent

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a prime number."},
    {"role": "assistant", "content": "7"},
    {"role": "user", "content": "Another one, bigger than 100?"},
]


class Rig:
    """An agent with a node key, registered with its public half, and a taster with a key of their own."""

    def __init__(self, tracker, agent, node_pem: str, fingerprint: str):
        self.tracker, self.agent, self.node_pem, self.fingerprint = tracker, agent, node_pem, fingerprint
        self.taster = X25519PrivateKey.generate()

    def token(self, **extra) -> dict:
        return self.tracker.token(
            self.agent.node_id,
            crypto_mode="public-key",
            user_public_key=keys.public_pem_of(self.taster.public_key()),
            **extra,
        )

    def seal(self, issued, messages=CONVERSATION, params=None, *, jti=None, node_id=None) -> str:
        return subtext.seal_request(
            messages,
            params or {},
            node_public_pem=self.node_pem,
            jti=jti or issued["jti"],
            node_id=node_id or self.agent.node_id,
        )

    def post(self, issued, content: str, *, stream=False, ascii_escapes=False, timeout=30, **outer):
        body = {"messages": [{"role": "user", "content": content}], "stream": stream, **outer}
        return requests.post(
            self.agent.v1 + "/chat/completions",
            data=json.dumps(body, ensure_ascii=ascii_escapes).encode("utf-8"),
            headers={"Authorization": f"Bearer {issued['token']}", "Content-Type": "application/json"},
            stream=stream,
            timeout=timeout,
        )

    def open(self, issued, content: str) -> dict:
        return subtext.open_response(content, self.taster, jti=issued["jti"], node_id=self.agent.node_id)


@pytest.fixture
def start_rig(tracker, start_agent, tmp_path):
    def start(upstream: str, **flags) -> Rig:
        key_file = tmp_path / f"node-{len(list(tmp_path.glob('node-*.pem')))}.pem"
        node_pem, fingerprint = keys.generate(key_file)
        agent = start_agent(upstream, register={"node_public_key": node_pem}, node_private_key_file=key_file, **flags)
        return Rig(tracker, agent, node_pem, fingerprint)

    return start


@pytest.fixture
def rig(start_rig, fake_upstream):
    return start_rig(fake_upstream.base)


def events_of(response) -> list[tuple[str, object, bytes]]:
    """(kind, value, raw line) for each SSE line: ('comment', text) or ('data', obj or '[DONE]')."""
    events = []
    for raw in response.iter_lines():
        line = raw.decode("utf-8")
        if line.startswith(":"):
            events.append(("comment", line[1:].strip(), raw))
        elif line.startswith("data:"):
            data = line[5:].strip()
            events.append(("data", data if data == "[DONE]" else json.loads(data), raw))
    return events


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    return body["error"]["code"]


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

    def served():
        scores = requests.get(f"{tracker.base}/api/contributions?limit=1000", timeout=10).json()["scores"]
        return next((s["evidence"]["requests_served"] for s in scores if s["node_id"] == rig.agent.node_id), None)

    assert wait_until(lambda: served() == 3, timeout=15)


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


# --- bad input: each a clear 400, never a 500 or a hang, and free -----------------------------------------------


def _carried(content: str) -> bytearray:
    return bytearray(subtext.selectors_to_bytes(content[len(subtext.REQUEST_COVER) :]))


def _recarry(data: bytes) -> str:
    return subtext.REQUEST_COVER + subtext.bytes_to_selectors(bytes(data))


def tampered(content: str) -> str:
    data = _carried(content)
    i = len(data) - 10  # inside the ct field, before its last (canonical-bits) character
    data[i] = ord("A") if data[i] != ord("A") else ord("B")
    return _recarry(data)


def bad_magic(content: str) -> str:
    data = _carried(content)
    data[3] = ord("2")  # LRS2
    return _recarry(data)


def wrong_length(content: str) -> str:
    data = _carried(content)
    data[4:8] = (int.from_bytes(data[4:8], "big") + 5).to_bytes(4, "big")
    return _recarry(data)


def response_envelope(rig, issued) -> str:
    """The same conversation sealed to the node, for this jti and node, but as a response."""
    plaintext = json.dumps({"messages": CONVERSATION, "params": {}}).encode()
    envelope = subtext.seal(plaintext, rig.node_pem, direction="response", jti=issued["jti"], node_id=rig.agent.node_id)
    return subtext.encode_message(subtext.envelope_bytes(envelope), subtext.REQUEST_COVER)


BAD = {
    "tampered_ciphertext": (lambda rig, issued: tampered(rig.seal(issued)), "decrypt_failed"),
    "sealed_for_another_jti": (lambda rig, issued: rig.seal(issued, jti="another-jti"), "decrypt_failed"),
    "sealed_for_another_node": (lambda rig, issued: rig.seal(issued, node_id="another-node"), "decrypt_failed"),
    "a_response_envelope": (response_envelope, "decrypt_failed"),
    "bad_magic": (lambda rig, issued: bad_magic(rig.seal(issued)), "bad_magic"),
    "wrong_length": (lambda rig, issued: wrong_length(rig.seal(issued)), "truncated"),
    "truncated_selectors": (lambda rig, issued: rig.seal(issued)[:-40], "truncated"),
    "interrupted_selectors": (lambda rig, issued: rig.seal(issued)[:-40] + " x", "interrupted"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_unusable_envelopes_are_400_invalid_subtext_and_cost_nothing(rig, fake_upstream, case):
    make, reason = BAD[case]
    issued = rig.token()
    for stream in (False, True, False):  # more than the token's 3 requests: refusals are free
        r = rig.post(issued, make(rig, issued), stream=stream, timeout=10)
        assert r.status_code == 400 and error_code(r) == "invalid_subtext", r.text
        assert f"({reason})" in r.json()["error"]["message"]
    assert fake_upstream.requests == []
    assert rig.post(issued, rig.seal(issued)).status_code == 200  # the token is untouched


def test_a_plaintext_prompt_with_a_public_key_token_is_refused_not_forwarded(rig, fake_upstream):
    issued = rig.token()
    for content in ("What is 2 + 2?", "I ❤️ my 3090"):  # an emoji's variation selector is still plaintext
        r = rig.post(issued, content)
        assert r.status_code == 400 and error_code(r) == "plaintext_not_allowed"
        assert content not in r.text
    assert fake_upstream.requests == []


def test_a_conversation_or_parameters_outside_the_envelope_are_refused(rig, fake_upstream):
    issued = rig.token()
    sealed = rig.seal(issued)
    for messages, extra in (
        ([{"role": "system", "content": "be brief"}, {"role": "user", "content": sealed}], {}),
        ([{"role": "user", "content": sealed}, {"role": "user", "content": sealed}], {}),
        ([{"role": "assistant", "content": sealed}, {"role": "user", "content": "hi"}], {}),
        ([{"role": "user", "content": sealed}], {"temperature": 0.5}),
    ):
        r = requests.post(
            rig.agent.v1 + "/chat/completions",
            data=json.dumps({"messages": messages, **extra}, ensure_ascii=False).encode(),
            headers={"Authorization": f"Bearer {issued['token']}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 400 and error_code(r) == "invalid_request", r.text
    assert fake_upstream.requests == []


def test_the_decrypted_request_is_validated_like_a_plain_one(rig, fake_upstream):
    issued = rig.token()
    for messages, params in (
        (CONVERSATION, {"temperature": 7}),
        (CONVERSATION, {"stop": ["a", "b", "c", "d", "e"]}),
        ([{"role": "system", "content": "only a system message"}], {}),
    ):
        r = rig.post(issued, rig.seal(issued, messages, params))
        assert r.status_code == 400 and error_code(r) == "invalid_request", r.text
    # An unknown parameter is refused by the envelope check, and its name (decrypted text) is not echoed.
    r = rig.post(issued, _with_param(rig, issued))
    assert r.status_code == 400 and error_code(r) == "invalid_subtext" and "secret_knob" not in r.text
    assert fake_upstream.requests == []


def _with_param(rig, issued) -> str:
    plaintext = json.dumps({"messages": CONVERSATION, "params": {"secret_knob": 1}}).encode()
    envelope = subtext.seal(plaintext, rig.node_pem, direction="request", jti=issued["jti"], node_id=rig.agent.node_id)
    return subtext.encode_message(subtext.envelope_bytes(envelope))


def test_without_a_readable_node_key_public_key_mode_is_unavailable(tracker, start_agent, fake_upstream, tmp_path):
    node_pem, _ = keys.generate(tmp_path / "registered.pem")
    taster = X25519PrivateKey.generate()
    (tmp_path / "garbage.pem").write_text("not a key")
    for flags in (
        {},
        {"node_private_key_file": tmp_path / "missing.pem"},
        {"node_private_key_file": tmp_path / "garbage.pem"},
    ):
        agent = start_agent(fake_upstream.base, register={"node_public_key": node_pem}, **flags)
        assert requests.get(agent.base + "/health", timeout=10).json()["crypto_modes"] == ["plain"]
        issued = tracker.token(
            agent.node_id, crypto_mode="public-key", user_public_key=keys.public_pem_of(taster.public_key())
        )
        content = subtext.seal_request(
            CONVERSATION, {}, node_public_pem=node_pem, jti=issued["jti"], node_id=agent.node_id
        )
        r = requests.post(
            agent.v1 + "/chat/completions",
            json={"messages": [{"role": "user", "content": content}]},
            headers={"Authorization": f"Bearer {issued['token']}"},
            timeout=10,
        )
        assert r.status_code == 400 and error_code(r) == "public_key_mode_unavailable"
        # Plain mode still works on that agent.
        plain = tracker.token(agent.node_id)["token"]
        ok = requests.post(
            agent.v1 + "/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {plain}"},
            timeout=10,
        )
        assert ok.status_code == 200
    assert fake_upstream.requests and all(
        m["messages"] == [{"role": "user", "content": "hi"}] for m in fake_upstream.requests
    )


def test_a_plain_token_forwards_an_envelope_as_ordinary_text(rig, fake_upstream):
    plain = rig.tracker.token(rig.agent.node_id)
    content = rig.seal(rig.token())
    r = requests.post(
        rig.agent.v1 + "/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": content}]}, ensure_ascii=False).encode(),
        headers={"Authorization": f"Bearer {plain['token']}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == fake_upstream.text()
    assert fake_upstream.requests[-1]["messages"] == [{"role": "user", "content": content}]


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


# --- the CLI ------------------------------------------------------------------------------------------------------


def taste(tracker, node_id, tmp_path, *extra):
    from tests.node_agent.test_cli import cli

    return cli(
        "taste",
        "--tracker",
        tracker.base,
        "--node",
        node_id,
        "--config-dir",
        str(tmp_path / "cfg"),
        "--history-dir",
        str(tmp_path / "history"),
        "--mode",
        "public-key",
        *extra,
        config_dir=tmp_path,
    )


def test_taste_in_public_key_mode_prints_the_decrypted_answer_and_saves_the_replay(
    rig, tracker, fake_upstream, tmp_path
):
    fake_upstream.delay = 0.02
    result = taste(
        tracker,
        rig.agent.node_id,
        tmp_path,
        "--system",
        "Be brief.",
        "--expect-fingerprint",
        rig.fingerprint,
        "--share-timing",
        "say something",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == fake_upstream.text().strip()
    assert f"Node key fingerprint: {rig.fingerprint}" in result.stderr
    assert "arrives in one piece" in result.stderr and "tok/s" in result.stderr and "Shared the timing" in result.stderr
    sent = fake_upstream.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "say something"},
    ]
    [replay_file] = (tmp_path / "history").glob(f"*_{rig.agent.node_id}.json")
    replay = json.loads(replay_file.read_text())
    assert replay["prompt"] == "say something" and replay["system"] == "Be brief."
    assert replay["response"] == fake_upstream.text() and len(replay["chunk_timestamps"]) == 1
    timing = replay["timing"]
    assert timing["mode"] == "public-key" and timing["output_tokens"] == 12 and timing["tok_per_sec"] > 0
    assert timing["ttft_ms"] >= timing["network_ttft_ms"] > 0
    assert tracker.node(rig.agent.node_id)["community_timing"]["samples_count"] == 1
    [(mode, ttft)] = tracker.execute(
        "SELECT mode, ttft_ms FROM nodes_timingsample WHERE node_id = %s", (rig.agent.node_id,)
    )
    assert mode == "public-key" and ttft is None  # not a first-token time: kept out of the TTFT median


def test_taste_refuses_to_send_when_the_fingerprint_is_not_the_expected_one(rig, tracker, fake_upstream, tmp_path):
    other = "sha256:" + "A" * 43
    result = taste(tracker, rig.agent.node_id, tmp_path, "--expect-fingerprint", other, "secret prompt")
    assert result.returncode == 1
    assert other in result.stderr and rig.fingerprint in result.stderr and "Nothing was sent" in result.stderr
    assert fake_upstream.requests == [] and not (tmp_path / "history").exists()


def test_taste_in_public_key_mode_explains_a_node_without_a_key(tracker, start_agent, fake_upstream, tmp_path):
    agent = start_agent(fake_upstream.base)
    result = taste(tracker, agent.node_id, tmp_path, "hi")
    assert result.returncode == 1 and "no token (400)" in result.stderr
    assert "public_key_mode_unavailable" in result.stderr and fake_upstream.requests == []


# --- keep-alive while a sealed answer is generated (in process: the real interval is 15 s) ------------------------


def test_a_long_generation_sends_keepalive_comments_before_the_sealed_answer(monkeypatch):
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from node_agent import auth, sealed
    from node_agent.policy import Policy
    from node_agent.queue import SlotQueue

    monkeypatch.setattr(sealed, "KEEPALIVE_SEC", 0.05)
    taster = X25519PrivateKey.generate()
    user_pem = keys.public_pem_of(taster.public_key())

    class Upstream:
        async def stream(self, body):
            for i in range(6):
                await asyncio.sleep(0.03)
                yield {"id": "c", "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
            yield {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}}

    class Agent:
        node_id = "n1"
        queue = SlotQueue(1, 1)
        upstream = Upstream()
        policy = Policy(session=None, moderation_endpoint=None, moderation_timeout=1, moderate_output="off")
        background: set = set()

    claims = auth.Claims("j1", "anon:x", "limited", "public-key", 3, 256, 0, {"user_public_key": user_pem})

    async def handler(request):
        relay = sealed.SealedRelay(
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

"""Every refusal the contract names, each with the right status and the OpenAI error shape."""

import base64
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.agent


def post(agent, token, body=None, raw=None, headers=None):
    h = {"Content-Type": "application/json"}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    data = raw if raw is not None else json.dumps(body or {"messages": [{"role": "user", "content": "hi"}]})
    return requests.post(agent.v1 + "/chat/completions", data=data, headers=h, timeout=30)


def error_of(response) -> dict:
    body = response.json()
    # The OpenAI shape; a 429 also says when to retry and what would earn more (docs/api.md).
    extras = {"retry_after_sec", "resets_at", "earn_more", "tier"} if response.status_code == 429 else set()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    assert set(body["error"]) - {"message", "type", "code"} <= extras, body
    return body["error"]


@pytest.fixture
def agent(start_agent, fake_upstream):
    return start_agent(fake_upstream.base)


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def claims_for(tracker, agent, **over):
    now = int(time.time())
    claims = {
        "iss": tracker.base,
        "aud": agent.node_id,
        "sub": "anon:x",
        "jti": f"forged-{now}-{time.time_ns()}",
        "iat": now,
        "exp": now + 600,
        "tier": "contributor",
        "crypto_mode": "plain",
        "max_requests": 99,
        "max_output_tokens": 9999,
    }
    claims.update(over)
    return claims


def tracker_kid(tracker) -> str:
    return requests.get(tracker.base + "/api/tracker-keys", timeout=10).json()["keys"][0]["kid"]


def sign_with_tracker_key(tracker, claims, **header) -> str:
    key = serialization.load_pem_private_key(tracker.signing_key_file().read_bytes(), password=None)
    headers = {"kid": tracker_kid(tracker), "typ": "luckrig-tasting+jwt", **header}
    return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)


def test_missing_or_malformed_tokens_are_401(agent):
    for token in (None, "", "garbage", "a.b.c", "x" * 5000):
        response = post(agent, token)
        assert response.status_code == 401, (token or "")[:20]
        assert error_of(response)["code"] == "invalid_token"


def test_alg_none_is_refused(tracker, agent):
    token = (
        b64({"alg": "none", "typ": "luckrig-tasting+jwt", "kid": tracker_kid(tracker)})
        + "."
        + b64(claims_for(tracker, agent))
        + "."
    )
    assert error_of(post(agent, token))["code"] == "invalid_token"


def test_hs256_signed_with_the_public_key_is_refused(tracker, agent):
    """The classic key-confusion attack: HMAC with the (public) verification key as the secret."""
    import hashlib
    import hmac

    pem = requests.get(tracker.base + "/api/tracker-keys", timeout=10).json()["keys"][0]["public_key_pem"]
    signing_input = (
        b64({"alg": "HS256", "typ": "luckrig-tasting+jwt", "kid": tracker_kid(tracker)})
        + "."
        + b64(claims_for(tracker, agent))
    )
    sig = hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    response = post(agent, token)
    assert response.status_code == 401 and error_of(response)["code"] == "invalid_token"


def test_unknown_kid_and_foreign_keys_are_refused(tracker, agent):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = Ed25519PrivateKey.generate()
    for kid in ("lr-unknown", tracker_kid(tracker)):
        token = jwt.encode(
            claims_for(tracker, agent), stranger, algorithm="EdDSA", headers={"kid": kid, "typ": "luckrig-tasting+jwt"}
        )
        assert error_of(post(agent, token))["code"] == "invalid_token"


def test_expired_and_wrong_issuer_tokens_are_401(tracker, agent):
    expired = sign_with_tracker_key(tracker, claims_for(tracker, agent, exp=int(time.time()) - 120))
    response = post(agent, expired)
    assert response.status_code == 401 and "expired" in error_of(response)["message"]
    other_iss = sign_with_tracker_key(tracker, claims_for(tracker, agent, iss="https://evil.example"))
    assert post(agent, other_iss).status_code == 401


def test_a_token_for_another_node_is_403(tracker, agent, fake_upstream, start_agent):
    other = start_agent(fake_upstream.base)
    token = tracker.token(other.node_id)["token"]
    response = post(agent, token)
    assert response.status_code == 403 and error_of(response)["code"] == "wrong_node"


def test_an_exhausted_token_is_429(tracker, agent):
    token = tracker.token(agent.node_id)["token"]  # limited: 3 requests
    for _ in range(3):
        assert post(agent, token).status_code == 200
    response = post(agent, token)
    assert response.status_code == 429 and error_of(response)["code"] == "token_exhausted"


def test_the_budget_survives_an_agent_restart(tracker, start_agent, fake_upstream):
    first = start_agent(fake_upstream.base)
    token = tracker.token(first.node_id)["token"]
    for _ in range(3):
        assert post(first, token).status_code == 200
    first.proc.terminate()
    first.proc.wait(10)
    second = start_agent(
        fake_upstream.base,
        node=(first.node_id, first.secret),
        config_dir=first.config_dir,
        port=int(first.base.rsplit(":", 1)[1]),
    )
    assert error_of(post(second, token))["code"] == "token_exhausted"


def test_the_output_budget_clamps_max_tokens(tracker, agent, fake_upstream):
    token = tracker.token(agent.node_id)["token"]  # limited: 256 output tokens
    assert post(agent, token, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}).ok
    assert fake_upstream.requests[-1]["max_tokens"] == 256


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        ('{"messages": []}', "messages"),
        ('{"messages": "hi"}', "messages"),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "role"),
        ('{"messages": [{"role": "user", "content": 5}]}', "content"),
        ('{"messages": [{"role": "user", "content": "   "}]}', "user message"),
        ('{"messages": [{"role": "system", "content": "only system"}]}', "user message"),
        ('{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature"),
        ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
        ('{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
        ('{"messages": [{"role": "user", "content": "hi"}], "stop": [1]}', "stop"),
    ],
)
def test_malformed_bodies_are_400(tracker, agent, raw, fragment):
    token = tracker.token(agent.node_id)["token"]
    response = post(agent, token, raw=raw)
    assert response.status_code == 400, response.text
    assert fragment in error_of(response)["message"]
    # A refused body does not spend the token: three good requests still go through.
    for _ in range(3):
        assert post(agent, token).status_code == 200


def test_oversized_bodies_are_413(tracker, agent):
    token = tracker.token(agent.node_id)["token"]
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]})
    response = post(agent, token, raw=big)
    assert response.status_code == 413 and error_of(response)["code"] == "body_too_large"


def test_revoked_tokens_are_refused(tracker, agent):
    """A jti the tracker revoked (pushed in the heartbeat answer) is refused at once."""
    from tests.node_agent.fakes import wait_until

    issued = tracker.token(agent.node_id)
    tracker.execute("UPDATE tracker_tastingtoken SET revoked_at = CURRENT_TIMESTAMP WHERE jti = %s", (issued["jti"],))
    assert wait_until(lambda: post(agent, issued["token"]).status_code == 401, timeout=10)


def test_a_node_clock_a_little_behind_still_accepts_fresh_tokens(tracker, agent):
    skewed = sign_with_tracker_key(
        tracker, claims_for(tracker, agent, iat=int(time.time()) + 20, max_requests=1, max_output_tokens=50)
    )
    assert post(agent, skewed).status_code == 200


def test_concurrent_requests_of_one_token_cannot_exceed_its_output_budget(tracker, agent, fake_upstream):
    from concurrent.futures import ThreadPoolExecutor

    fake_upstream.delay = 0.05
    token = sign_with_tracker_key(tracker, claims_for(tracker, agent, max_requests=10, max_output_tokens=10))
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: post(agent, token), range(3)))
    served = [r for r in results if r.status_code == 200]
    total = sum(r.json()["usage"]["completion_tokens"] for r in served)
    assert total <= 10
    # token_busy: at most two requests of one token are in the queue at once (--max-per-token).
    assert {r.json()["error"]["code"] for r in results if r.status_code != 200} <= {"token_exhausted", "token_busy"}


def test_a_client_that_hangs_up_mid_answer_is_charged_for_what_it_got(tracker, agent, fake_upstream):
    import socket

    fake_upstream.delay = 0.1
    # Two requests of up to 9 output tokens each (the per-request cap is the budget over the requests).
    token = sign_with_tracker_key(tracker, claims_for(tracker, agent, max_requests=2, max_output_tokens=18))
    host, port = agent.base.removeprefix("http://").split(":")
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while b"w4" not in data:
        data += sock.recv(4096)
    sock.close()
    time.sleep(0.5)
    # About 5 of the 9 reserved tokens were consumed; the second request still gets no more than its cap.
    r = post(agent, token, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 12})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] < 12
    usage = (agent.config_dir / "state" / agent.node_id / "usage.jsonl").read_text().splitlines()
    assert len(usage) == 2 and 3 <= json.loads(usage[0])["completion_tokens"] <= 8


def test_nested_json_is_400(tracker, agent):
    token = tracker.token(agent.node_id)["token"]
    response = post(agent, token, raw='{"messages": ' + "[" * 5000 + "]" * 5000 + "}")
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"


def test_an_upstream_sending_garbage_mid_stream_ends_cleanly(tracker, agent, fake_upstream):
    fake_upstream.mode = "garbage_chunk"
    token = tracker.token(agent.node_id)["token"]
    r = requests.post(
        agent.v1 + "/chat/completions",
        timeout=30,
        stream=True,
        headers={"Authorization": f"Bearer {token}"},
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    events = [line.decode() for line in r.iter_lines() if line.startswith(b"data:")]
    assert events[-1] == "data: [DONE]" and json.loads(events[-2][5:])["error"]["code"] == "upstream_error"

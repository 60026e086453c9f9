"""Public-key mode refusals: every unusable envelope, plaintext or misplaced field is a clear 400 (never a 500
or a hang) and costs the token nothing; a node without a readable key offers no public-key mode."""

import json

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent import keys, subtext
from tests.node_agent.public_key_rig import CONVERSATION, _carried, _recarry, error_code, tampered

pytestmark = pytest.mark.agent


# --- bad input: each a clear 400, never a 500 or a hang, and free -----------------------------------------------


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

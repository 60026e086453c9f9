"""Subtext mode's pure core (node_agent/subtext.py) against the shared vectors, and its properties."""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_agent import chat, keys, subtext
from node_agent.subtext import SubtextError
from tests.vectors import make_subtext_vectors

VECTORS_PATH = Path(__file__).resolve().parents[1] / "vectors" / "subtext.json"
VECTORS = json.loads(VECTORS_PATH.read_text())
KEYS = {
    name: X25519PrivateKey.from_private_bytes(bytes.fromhex(k["private_raw_hex"]))
    for name, k in VECTORS["keys"].items()
}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def by_name(items):
    return pytest.mark.parametrize("vector", items, ids=[v["name"] for v in items])


def test_the_committed_vectors_are_exactly_what_the_generator_writes():
    assert VECTORS_PATH.read_text() == make_subtext_vectors.render()


def test_the_vector_keys_load_from_their_pems_and_fingerprints_match():
    for name, entry in VECTORS["keys"].items():
        public = keys.public_key_from_pem(entry["public_spki_pem"])
        assert keys.public_pem_of(KEYS[name].public_key()) == keys.public_pem_of(public)
        assert keys.fingerprint_of_public_pem(entry["public_spki_pem"]) == entry["fingerprint"]
        assert len(entry["fingerprint"]) == len("sha256:") + 43


@by_name(VECTORS["codec"])
def test_codec_vectors_map_each_byte_to_its_selector(vector):
    data = bytes.fromhex(vector["bytes_hex"])
    assert subtext.bytes_to_selectors(data) == vector["selectors"]
    assert [ord(ch) for ch in vector["selectors"]] == vector["code_points"]
    assert subtext.selectors_to_bytes(vector["selectors"]) == data


@by_name(VECTORS["positive"])
def test_positive_vectors_seal_to_the_exact_bytes_and_open(vector):
    expected = vector["expected"]
    inject = {
        "ephemeral_private": bytes.fromhex(vector["ephemeral_private_hex"]),
        "salt": bytes.fromhex(vector["salt_hex"]),
        "iv": bytes.fromhex(vector["iv_hex"]),
    }
    ctx = {"jti": vector["jti"], "node_id": vector["node_id"]}
    recipient = KEYS[vector["recipient"]]
    plaintext = bytes.fromhex(vector["plaintext_hex"])

    envelope = subtext.seal(plaintext, recipient.public_key(), direction=vector["direction"], **ctx, **inject)
    assert envelope == expected["envelope"]
    assert subtext.envelope_bytes(envelope).decode() == expected["envelope_json"]
    assert subtext.aad(vector["direction"], **ctx).decode() == expected["aad"]
    carried = bytes.fromhex(expected["carried_hex"])
    assert carried == b"LRS1" + len(expected["envelope_json"]).to_bytes(4, "big") + expected["envelope_json"].encode()
    assert subtext.encode_message(subtext.envelope_bytes(envelope), expected["cover"]) == expected["content"]
    assert expected["content"] == expected["cover"] + subtext.bytes_to_selectors(carried)

    found = subtext.find_and_decode(expected["content"])
    assert found == expected["envelope_json"].encode()
    assert subtext.open_envelope(found, recipient, direction=vector["direction"], **ctx) == plaintext

    if vector["kind"] == "request":
        pem = VECTORS["keys"]["node"]["public_spki_pem"]
        request = vector["request"]
        sealed = subtext.seal_request(request["messages"], request["params"], node_public_pem=pem, **ctx, **inject)
        assert sealed == expected["content"]
        assert subtext.open_request(expected["content"], recipient, **ctx) == request
    elif vector["kind"] == "response":
        pem = VECTORS["keys"]["taster"]["public_spki_pem"]
        sealed = subtext.seal_response(**vector["response"], user_public_pem=pem, **ctx, **inject)
        assert sealed == expected["content"]
        assert subtext.open_response(expected["content"], recipient, **ctx) == vector["response"]


@by_name(VECTORS["negative"])
def test_negative_vectors_fail_with_invalid_subtext_at_the_right_check(vector):
    with pytest.raises(SubtextError) as caught:
        if vector["operation"] == "decode":
            subtext.find_and_decode(vector["content"])
        elif vector["operation"] == "open_envelope":
            subtext.open_envelope(
                bytes.fromhex(vector["envelope_hex"]),
                KEYS[vector["recipient"]],
                direction=vector["direction"],
                jti=vector["jti"],
                node_id=vector["node_id"],
            )
        else:
            opener = getattr(subtext, vector["operation"])
            opener(vector["content"], KEYS[vector["recipient"]], jti=vector["jti"], node_id=vector["node_id"])
    assert caught.value.code == vector["expected_error"]["code"] == "invalid_subtext"
    assert caught.value.reason == vector["expected_error"]["reason"]


@pytest.mark.parametrize("case", VECTORS["contains_subtext"], ids=lambda c: repr(c["text"][:24]))
def test_contains_subtext_tells_plaintext_from_an_attempt(case):
    assert subtext.contains_subtext(case["text"]) is case["expected"]


def test_the_sampling_allowlist_is_plain_modes():
    assert set(chat.SAMPLING) == subtext.SAMPLING_PARAMS


def test_every_envelope_is_fresh_without_injected_values():
    pem = VECTORS["keys"]["node"]["public_spki_pem"]
    messages = [{"role": "user", "content": "same"}]
    one = subtext.seal_request(messages, {}, node_public_pem=pem, jti="j", node_id="n")
    two = subtext.seal_request(messages, {}, node_public_pem=pem, jti="j", node_id="n")
    assert one != two
    assert subtext.open_request(one, KEYS["node"], jti="j", node_id="n") == {"messages": messages, "params": {}}


def test_deeply_nested_json_is_invalid_subtext_not_a_crash():
    with pytest.raises(SubtextError) as caught:
        subtext.open_envelope(b"[" * 100_000, KEYS["node"], direction="request", jti="j", node_id="n")
    assert caught.value.reason == "bad_json"


def test_a_bar_in_jti_or_node_id_is_refused_because_it_would_make_aads_collide():
    with pytest.raises(ValueError):
        subtext.aad("request", "a|b", "c")
    with pytest.raises(ValueError):
        subtext.aad("sideways", "a", "c")


# ---- properties ----------------------------------------------------------------------------------------------

NODE_PEM = VECTORS["keys"]["node"]["public_spki_pem"]
SELECTORS = st.one_of(
    st.integers(0xFE00, 0xFE0F).map(chr),
    st.integers(0xE0100, 0xE01EF).map(chr),
)
# Text full of what real text contains: emoji with U+FE0F, ZWJ, ideographic variation selectors, long runs.
TRICKY_TEXT = st.lists(
    st.one_of(st.text(max_size=20), SELECTORS, st.sampled_from(["\u2764\ufe0f", "\U0001f44d\U0001f3fd", "\u200d"])),
    max_size=12,
).map("".join)


def not_selector_first(text: str) -> bool:
    return not text or not subtext.is_selector(text[0])


@FAST
@given(st.binary(max_size=2048))
def test_codec_round_trips_any_bytes(data):
    text = subtext.bytes_to_selectors(data)
    assert len(text) == len(data) and all(subtext.is_selector(ch) for ch in text)
    assert subtext.selectors_to_bytes(text) == data


@FAST
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=30))
def test_base64url_accepts_exactly_one_spelling_per_byte_string(text):
    try:
        raw = subtext.b64url_decode(text, "x")
    except SubtextError:
        return
    assert subtext.b64url(raw) == text


@FAST
@given(st.binary(min_size=1, max_size=2048))
def test_message_round_trips_any_envelope_bytes(data):
    assert subtext.find_and_decode(subtext.encode_message(data)) == data


@FAST
@given(
    st.binary(min_size=1, max_size=512),
    TRICKY_TEXT,
    TRICKY_TEXT.map(lambda t: " " + t),
)
def test_decode_ignores_stray_selectors_before_and_after(data, before, after):
    # `after` starts with a non-selector: a selector directly after the run would lengthen it (trailing_selectors).
    message = subtext.encode_message(data)
    assert subtext.find_and_decode(before + message + after) == data


@FAST
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(subtext.ROLES)), TRICKY_TEXT).map(
            lambda rc: {"role": rc[0], "content": rc[1]}
        ),
        min_size=1,
        max_size=5,
    ),
    st.fixed_dictionaries({}, optional={"temperature": st.floats(0, 2), "max_tokens": st.integers(1, 4096)}),
)
def test_request_round_trips_any_conversation(messages, params):
    content = subtext.seal_request(messages, params, node_public_pem=NODE_PEM, jti="jti-p", node_id="node-p")
    assert content.startswith(subtext.REQUEST_COVER) and subtext.contains_subtext(content)
    assert subtext.open_request(content, KEYS["node"], jti="jti-p", node_id="node-p") == {
        "messages": messages,
        "params": params,
    }


@FAST
@given(TRICKY_TEXT, st.sampled_from(["stop", "length", None]))
def test_response_round_trips_any_text(text, finish_reason):
    pem = VECTORS["keys"]["taster"]["public_spki_pem"]
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    content = subtext.seal_response(
        text, finish_reason, usage, {"node_id": "n"}, {}, user_public_pem=pem, jti="j", node_id="n"
    )
    assert subtext.open_response(content, KEYS["taster"], jti="j", node_id="n") == {
        "content": text,
        "finish_reason": finish_reason,
        "usage": usage,
        "luckrig": {"node_id": "n"},
        "moderation": {},
    }


@FAST
@given(st.binary(min_size=1, max_size=300), st.data())
def test_any_cut_of_a_message_is_invalid_subtext(data, draw):
    message = subtext.encode_message(data)
    cut = draw.draw(st.integers(len(subtext.REQUEST_COVER), len(message) - 1))
    with pytest.raises(SubtextError) as caught:
        subtext.find_and_decode(message[:cut])
    assert caught.value.reason in {"no_subtext", "truncated"}


@FAST
@given(st.text(max_size=200).filter(lambda t: not subtext.contains_subtext(t)))
def test_text_that_is_not_subtext_is_refused_as_such(text):
    with pytest.raises(SubtextError) as caught:
        subtext.find_and_decode(text)
    assert caught.value.reason == "no_subtext"

"""Bad replay files: each is a clear 4xx naming the field, and arbitrary JSON never causes a 5xx."""

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from showcase.models import Replay
from tests.showcase.conftest import replay_file, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready(api, live_node, settings):
    settings.RATELIMIT_ENABLE = False
    node, _ = live_node
    return node, token_for(api, node)["upload_key"]


def without(key):
    return lambda body: {k: v for k, v in body.items() if k != key}


def setting(key, value):
    return lambda body: {**body, key: value}


def timing(**fields):
    return lambda body: {**body, "timing": {**body["timing"], **fields}}


BAD = [
    # (change to a good file, status, code, field)
    (setting("extra", 1), 400, "unknown_field", "extra"),
    (setting("contributor_id", "c_x"), 400, "unknown_field", "contributor_id"),
    (without("schema_version"), 400, "invalid_field", "schema_version"),
    (setting("schema_version", 2), 400, "invalid_field", "schema_version"),
    (setting("schema_version", True), 400, "invalid_field", "schema_version"),
    (without("node_id"), 400, "invalid_field", "node_id"),
    (setting("node_id", 7), 400, "invalid_field", "node_id"),
    (without("prompt"), 400, "invalid_field", "prompt"),
    (setting("prompt", ""), 400, "invalid_field", "prompt"),
    (setting("prompt", ["hi"]), 400, "invalid_field", "prompt"),
    (setting("prompt", "x" * 16_001), 400, "invalid_field", "prompt"),
    (setting("prompt", "nul\x00"), 400, "invalid_field", "prompt"),
    (setting("system", 3), 400, "invalid_field", "system"),
    (setting("system", "s" * 16_001), 400, "invalid_field", "system"),
    (without("response"), 400, "invalid_field", "response"),
    (setting("response", None), 400, "invalid_field", "response"),
    (setting("response", "y" * 64_001), 400, "invalid_field", "response"),
    (without("created_at"), 400, "invalid_field", "created_at"),
    (setting("created_at", "yesterday"), 400, "invalid_field", "created_at"),
    (setting("created_at", 1764633600), 400, "invalid_field", "created_at"),
    (without("chunk_timestamps"), 400, "invalid_field", "chunk_timestamps"),
    (setting("chunk_timestamps", "1,2,3"), 400, "invalid_field", "chunk_timestamps"),
    (setting("chunk_timestamps", {"0": 1}), 400, "invalid_field", "chunk_timestamps"),
    (setting("chunk_timestamps", [0.5] * 8193), 400, "invalid_field", "chunk_timestamps"),
    (setting("chunk_timestamps", [1, 2, -3]), 400, "invalid_field", "chunk_timestamps[2]"),
    (setting("chunk_timestamps", [-1]), 400, "invalid_field", "chunk_timestamps[0]"),
    (setting("chunk_timestamps", [5, 4]), 400, "invalid_field", "chunk_timestamps[1]"),
    (setting("chunk_timestamps", [1, "2"]), 400, "invalid_field", "chunk_timestamps[1]"),
    (setting("chunk_timestamps", [1, True]), 400, "invalid_field", "chunk_timestamps[1]"),
    (setting("chunk_timestamps", [1, None]), 400, "invalid_field", "chunk_timestamps[1]"),
    (setting("chunk_timestamps", [[1]]), 400, "invalid_field", "chunk_timestamps[0]"),
    (setting("chunk_timestamps", [10**12]), 400, "invalid_field", "chunk_timestamps[0]"),
    (without("timing"), 400, "invalid_field", "timing"),
    (setting("timing", []), 400, "invalid_field", "timing"),
    (setting("timing", "fast"), 400, "invalid_field", "timing"),
    (timing(gpu_temp=70), 400, "unknown_field", "timing.gpu_temp"),
    (timing(prompt_tokens=12), 400, "disallowed_field", "timing.prompt_tokens"),
    (timing(tokenizer={"name": "x"}), 400, "nested_value", "timing.tokenizer"),
    (timing(tok_per_sec="fast"), 400, "invalid_field", "timing.tok_per_sec"),
    (timing(tok_per_sec=-1), 400, "invalid_field", "timing.tok_per_sec"),
    (timing(output_tokens=1.5), 400, "invalid_field", "timing.output_tokens"),
    (timing(limited_output_truncated="no"), 400, "invalid_field", "timing.limited_output_truncated"),
    (timing(mode="quantum"), 400, "invalid_field", "timing.mode"),
    (timing(node_id="someone-elses-rig"), 400, "invalid_field", "timing.node_id"),
    (timing(schema_version=2), 400, "invalid_field", "timing.schema_version"),
]


@pytest.mark.parametrize("change, status, code, field", BAD)
def test_bad_replay_files_are_refused_naming_the_field(api, ready, change, status, code, field):
    node, token = ready
    got, body = api.post("/api/replays", change(replay_file(node)), auth=token)
    assert (got, body["code"], body.get("field")) == (status, code, field), body
    assert body["schema_version"] == 1 and body["error"]
    assert not Replay.objects.exists()


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b'"a string"', b"null", b'{"prompt": NaN}', b"\xff\xfe", b"[" * 20000]
)
def test_malformed_bodies_are_invalid_json(api, ready, raw):
    _, token = ready
    status, body = api.call("post", "/api/replays", raw=raw, auth=token)
    assert status == 400 and body["code"] == "invalid_json"


def test_a_form_body_is_415(api, ready):
    _, token = ready
    status, body = api.call(
        "post", "/api/replays", raw="prompt=x", content_type="application/x-www-form-urlencoded", auth=token
    )
    assert status == 415 and body["code"] == "unsupported_media_type"


def test_the_largest_replay_fits_and_a_larger_body_is_413(api, ready, settings):
    """Replays have their own body limit (API_REPLAY_MAX_BODY_BYTES): the general 64 KiB would not hold a
    replay at its field limits; everything else keeps the general limit."""
    node, token = ready
    largest = replay_file(
        node,
        prompt="漢" * 16_000,
        response="字" * 64_000,
        chunk_timestamps=[round(i * 7.3, 1) for i in range(8192)],
    )
    raw = json.dumps(largest, ensure_ascii=False).encode()
    assert settings.API_MAX_BODY_BYTES < len(raw) <= settings.API_REPLAY_MAX_BODY_BYTES
    status, body = api.call("post", "/api/replays", raw=raw, auth=token)
    assert status == 201, body

    too_big = b'{"prompt": "' + b"x" * settings.API_REPLAY_MAX_BODY_BYTES + b'"}'
    status, body = api.call("post", "/api/replays", raw=too_big, auth=token)
    assert status == 413 and body["code"] == "body_too_large"
    # The replay limit is for this path only.
    status, body = api.call("post", "/api/replay/timing", raw=raw, auth=token)
    assert status == 413 and body["code"] == "body_too_large"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["schema_version", "node_id", "created_at", "prompt", "system", "response", "chunk_timestamps", "timing"]


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(replaced=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=4))
def test_arbitrary_json_never_causes_a_5xx(api, ready, replaced):
    node, token = ready
    status, payload = api.post("/api/replays", {**replay_file(node), **replaced}, auth=token)
    assert status < 500, (replaced, payload)
    if status >= 400:
        assert set(payload) >= {"error", "code"}
    Replay.objects.all().delete()  # let the next example publish with the same token


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.dictionaries(
        st.sampled_from(["node", "page", "page_size"]),
        st.text(max_size=70) | st.integers().map(str),
        max_size=3,
    ),
    replay_id=st.text(max_size=30),
)
def test_arbitrary_list_queries_and_ids_never_cause_a_5xx(api, ready, params, replay_id):
    response = api.client.get("/api/replays", params)
    assert response.status_code in (200, 400, 404), (params, response.content[:200])
    response = api.client.get("/api/replays/" + replay_id.replace("/", "").replace("?", "").replace("#", "") + "x")
    assert response.status_code == 404

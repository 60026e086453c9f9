"""Every write endpoint gets a table of bad bodies; a property-based run throws arbitrary JSON at all of them.
The answer is always a clear 4xx in the contract's error shape, never a 500."""

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def creds(api, owner, settings):
    settings.RATELIMIT_ENABLE = False
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    _, issued = api.post("/api/tokens", {"node_id": node.id})
    return {"owner": owner.key, "node": node, "secret": secret, "upload_key": issued["upload_key"]}


def endpoints(c):
    """(method, path, credential) of every write endpoint."""
    return [
        ("post", "/api/contributors", None),
        ("post", "/api/nodes", c["owner"]),
        ("patch", f"/api/nodes/{c['node'].id}", c["owner"]),
        ("post", f"/api/nodes/{c['node'].id}/heartbeat", c["secret"]),
        ("post", f"/api/nodes/{c['node'].id}/usage", c["secret"]),
        ("post", "/api/tokens", None),
        ("post", "/api/replay/timing", c["upload_key"]),
        ("post", "/api/fingerprint/verify", None),
    ]


def assert_error_shape(status, body, expected_status=None):
    assert 400 <= status < 500, (status, body)
    if expected_status:
        assert status == expected_status, body
    assert set(body) >= {"schema_version", "error", "code"} and isinstance(body["error"], str) and body["error"]
    assert body["schema_version"] == 1


RAW_BAD = [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2, 3]", 400, "invalid_json"),
    (b'"a string"', 400, "invalid_json"),
    (b"null", 400, "invalid_json"),
    (b'{"a": NaN}', 400, "invalid_json"),
    (b"\xff\xfe\x00", 400, "invalid_json"),
    (b'{"a": ' + b"[" * 20000 + b"]" * 20000 + b"}", 400, "invalid_json"),  # nested past Python's recursion limit
]


@pytest.mark.parametrize("raw, status, code", RAW_BAD)
def test_malformed_bodies_are_invalid_json_on_every_write_endpoint(api, creds, raw, status, code):
    for method, path, auth in endpoints(creds):
        got, body = api.call(method, path, raw=raw, auth=auth)
        assert (got, body["code"]) == (status, code), (method, path, body)


def test_oversized_bodies_are_413_on_every_write_endpoint(api, creds, settings):
    big = json.dumps({"tuning_note": "x" * (settings.API_MAX_BODY_BYTES + 1)})
    for method, path, auth in endpoints(creds):
        status, body = api.call(method, path, raw=big, auth=auth)
        assert status == 413 and body["code"] == "body_too_large", (path, body)


def test_form_bodies_are_415_with_a_hint(api, creds):
    status, body = api.call(
        "post", "/api/contributors", raw="handle=x", content_type="application/x-www-form-urlencoded"
    )
    assert status == 415 and "application/json" in body["error"]


NODE_BAD = [
    (
        {"endpoint_url": "https://x.example/" + "p" * 480, "model_name": "m", "quantization": "q", "gpu": "g"},
        "endpoint_url",
    ),
    # No endpoint_url makes a relayed node (tests/tracker/test_relays.py), which has no health_url to probe.
    ({"health_url": "https://x.example/health", "model_name": "m", "quantization": "q", "gpu": "g"}, "health_url"),
    ({"endpoint_url": 42, "model_name": "m", "quantization": "q", "gpu": "g"}, "endpoint_url"),
    (
        {"endpoint_url": "ftp://x.example/v1", "model_name": "m", "quantization": "q", "gpu": "g"},
        "endpoint_url",
    ),
    (
        {"endpoint_url": "javascript:alert(1)", "model_name": "m", "quantization": "q", "gpu": "g"},
        "endpoint_url",
    ),
    ({"endpoint_url": "https://x.example", "model_name": 42, "quantization": "q", "gpu": "g"}, "model_name"),
    (
        {"endpoint_url": "https://x.example", "model_name": "m" * 121, "quantization": "q", "gpu": "g"},
        "model_name",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "vram_gb": "24",
        },
        "vram_gb",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "vram_gb": 1e400,
        },
        None,
    ),  # 1e400 is not valid JSON for Python's encoder; sent raw below
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "context_length": 12.5,
        },
        "context_length",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "context_length": 10**30,
        },
        "context_length",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "tags": [f"t{i}" for i in range(13)],
        },
        "tags",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "tags": ["x" * 33],
        },
        "tags",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "tags": ["a,b"],
        },
        "tags",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "tags": "showcase",
        },
        "tags",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "tuning_note": "x" * 4001,
        },
        "tuning_note",
    ),
    (
        {"endpoint_url": "https://x.example", "model_name": "m\x00", "quantization": "q", "gpu": "g"},
        "model_name",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "visibility": "secret",
        },
        "visibility",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "owner": "someone-else",
        },
        "owner",
    ),
    (
        {
            "endpoint_url": "https://x.example",
            "model_name": "m",
            "quantization": "q",
            "gpu": "g",
            "schema_version": 2,
        },
        "schema_version",
    ),
]


@pytest.mark.parametrize("body, field", [b for b in NODE_BAD if b[1]])
def test_bad_node_bodies_name_the_field(api, creds, body, field):
    status, err = api.post("/api/nodes", body, auth=creds["owner"])
    assert_error_shape(status, err, 400)
    assert err["field"] == field, err


def test_huge_numbers_in_raw_json_are_400(api, creds):
    raw = '{"endpoint_url": "https://x.example", "model_name": "m", "quantization": "q", "gpu": "g", "vram_gb": 1e400}'
    status, err = api.call("post", "/api/nodes", raw=raw, auth=creds["owner"])
    assert_error_shape(status, err, 400)


OTHER_BAD = [
    ("/api/contributors", None, {"handle": "has spaces"}, "handle"),
    ("/api/contributors", None, {"handle": ["list"]}, "handle"),
    ("/api/contributors", None, {"handle": "x" * 41}, "handle"),
    ("/api/tokens", None, {}, "node_id"),
    ("/api/tokens", None, {"node_id": 5}, "node_id"),
    ("/api/tokens", None, {"node_id": "n", "crypto_mode": "quantum"}, "crypto_mode"),
    ("/api/tokens", None, {"node_id": "n", "ttl_sec": "600"}, "ttl_sec"),
    ("/api/tokens", None, {"node_id": "n", "extra": 1}, "extra"),
    ("/api/fingerprint/verify", None, {"node_id": "n", "url": "gopher://x"}, "url"),
    ("/api/fingerprint/verify", None, {}, "node_id"),
]


@pytest.mark.parametrize("path, auth, body, field", OTHER_BAD)
def test_bad_bodies_elsewhere_name_the_field(api, creds, path, auth, body, field):
    status, err = api.post(path, body, auth=auth)
    assert_error_shape(status, err, 400)
    assert err["field"] == field, err


def test_bad_agent_bodies_name_the_field(api, creds):
    hb = f"/api/nodes/{creds['node'].id}/heartbeat"
    usage = f"/api/nodes/{creds['node'].id}/usage"
    cases = [
        (hb, {}, "queue"),
        (hb, {"queue": {"active": -1, "waiting": 0, "max_active": 1}}, "queue.active"),
        (hb, {"queue": {"active": "1", "waiting": 0, "max_active": 1}}, "queue.active"),
        (hb, {"queue": {"active": 0, "waiting": 0, "max_active": 1}, "models": ["m"] * 65}, "models"),
        (
            hb,
            {"queue": {"active": 0, "waiting": 0, "max_active": 1}, "telemetry": {"a": {"b": 1}}},
            "telemetry",
        ),
        (
            hb,
            {"queue": {"active": 0, "waiting": 0, "max_active": 1}, "agent_version": "v" * 41},
            "agent_version",
        ),
        (usage, {"entries": []}, "report_id"),
        (usage, {"report_id": "r", "entries": [{"jti": "j"}]}, "entries[0].requests"),
        (
            usage,
            {"report_id": "r", "entries": [{"jti": "j", "requests": 1, "first_at": "yesterday"}]},
            "entries[0].first_at",
        ),
        (
            usage,
            {"report_id": "r", "entries": [{"jti": "j", "requests": 1, "first_at": 12}]},
            "entries[0].first_at",
        ),
        (usage, {"report_id": "r", "entries": "all"}, "entries"),
    ]
    for path, body, field in cases:
        status, err = api.post(path, body, auth=creds["secret"])
        assert_error_shape(status, err, 400)
        assert err["field"] == field, (body, err)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = [
    "handle",
    "node_id",
    "crypto_mode",
    "user_public_key",
    "ttl_sec",
    "endpoint_url",
    "model_name",
    "quantization",
    "gpu",
    "vram_gb",
    "context_length",
    "tags",
    "visibility",
    "tuning_note",
    "queue",
    "models",
    "telemetry",
    "report_id",
    "entries",
    "tok_per_sec",
    "ttft_ms",
    "mode",
    "url",
    "id",
    "schema_version",
    "health_url",
    "node_public_key",
    "output_tokens",
    "limited_output_truncated",
]
bodies = st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=10), json_values, max_size=8)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, which=st.integers(min_value=0, max_value=7))
def test_arbitrary_json_never_causes_a_5xx(api, creds, body, which):
    method, path, auth = endpoints(creds)[which]
    status, payload = api.call(method, path, body, auth=auth)
    assert status < 500, (method, path, body, payload)
    if status >= 400:
        assert set(payload) >= {"error", "code"}


query_values = st.text(max_size=30) | st.integers().map(str) | st.floats().map(str)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "status",
                "model",
                "gpu",
                "quantization",
                "min_vram",
                "min_ctx",
                "tag",
                "order",
                "page",
                "page_size",
                "limit",
            ]
        ),
        query_values,
        max_size=5,
    )
)
def test_arbitrary_list_queries_never_cause_a_5xx(api, creds, params):
    for path in ("/api/nodes", "/api/contributions"):
        response = api.client.get(path, params)
        assert response.status_code in (200, 400), (path, params, response.content[:200])


@pytest.mark.parametrize("node_id", ["a%00b", "x" * 65, "%00"])
def test_a_node_id_that_cannot_name_a_node_is_an_ordinary_4xx_on_every_node_path(api, creds, node_id):
    """NUL (which PostgreSQL refuses to compare) and over-long ids in the path: the owner's, the agent's and the
    public paths (and the rig's page) answer as for any unknown node, never 500."""
    for method, suffix, auth in [
        ("get", "", None),
        ("get", "/metrics", None),
        ("patch", "", creds["owner"]),
        ("delete", "", creds["owner"]),
        ("post", "/heartbeat", creds["secret"]),
        ("post", "/usage", creds["secret"]),
        ("post", "/tunnel", creds["secret"]),
    ]:
        kw = {"auth": auth} if auth else {}
        status, body = getattr(api, method)(f"/api/nodes/{node_id}{suffix}", **kw)
        assert status in (401, 404) and body["code"] in ("node_not_found", "unauthorized"), (method, suffix, body)
    assert api.client.get(f"/nodes/{node_id}/").status_code == 404  # the rig's page

"""The gateway's catalog (`GET /api/relays/<relay_id>/catalog`, nodes.catalog), its model keys and alias table
(nodes.model_names), and where clients find the gateway (`GET /api/gateway`)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from moderation import services as moderation
from nodes import model_names
from nodes.model_names import ALIASES, model_key
from nodes.models import Node
from tests import factories

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "catalog-test")


def catalog(api, secret, relay_id="relay-a"):
    status, body = api.get(f"/api/relays/{relay_id}/catalog", auth=secret)
    assert status == 200, body
    return body


def rigs_by_id(body) -> dict:
    return {rig["node_id"]: rig for rig in body["rigs"]}


def make_rig(api, person, **fields):
    node, secret = factories.make_node(person, **fields)
    factories.heartbeat(api, node, secret)
    return node, secret


# --- what a rig entry says --------------------------------------------------------------------------------


def test_the_catalog_lists_available_and_busy_rigs_with_what_routing_reads(api, owner, relay_a, relayed):
    direct, secret = make_rig(api, owner, model_name="SmolLM2-135M-Instruct", quantization="Q4_1")
    busy, busy_secret = make_rig(api, owner, model_name="qwen3:35b")
    factories.heartbeat(api, busy, busy_secret, active=2, waiting=3, max_active=2)
    Node.objects.filter(pk=busy.pk).update(queue_eta_sec=40, tok_per_sec_p50=31.5, ttft_ms_p50=210.0)
    body = catalog(api, relay_a)
    assert body["schema_version"] == 1 and body["generated_at"].endswith("Z")
    assert body["aliases"] == ALIASES
    rigs = rigs_by_id(body)
    assert set(rigs) == {direct.id, busy.id, relayed[0]}
    assert rigs[direct.id] == {
        "node_id": direct.id,
        "model": "SmolLM2-135M-Instruct",
        "model_key": "smollm2-135m-instruct",
        "quantization": "Q4_1",
        "gpu": direct.gpu,
        "status": "available",
        "endpoint_url": direct.endpoint_url,
        "relay_id": None,
        "queue": {"active": 0, "waiting": 0, "max_active": 1, "eta_sec": None},
        "tok_per_sec_p50": None,
        "ttft_ms_p50": None,
        "rarity_score": Node.objects.get(pk=direct.pk).rarity_score,
    }
    assert rigs[busy.id]["status"] == "busy" and rigs[busy.id]["model_key"] == "qwen3:35b"
    assert rigs[busy.id]["queue"] == {"active": 2, "waiting": 3, "max_active": 2, "eta_sec": 40}
    assert (rigs[busy.id]["tok_per_sec_p50"], rigs[busy.id]["ttft_ms_p50"]) == (31.5, 210.0)
    # A relayed rig names its relay (the relay that holds the tunnel carries it in-process) and its URL there.
    relayed_rig = rigs[relayed[0]]
    assert relayed_rig["relay_id"] == "relay-a" and relayed_rig["status"] == "available"
    assert relayed_rig["endpoint_url"] == f"https://relay-a.example.org/n/{relayed[0]}/v1"


def test_rigs_a_taster_could_not_be_sent_to_are_not_in_the_catalog(api, owner, taster, relay_a, relayed):
    shown, _ = make_rig(api, owner)
    taken_down, _ = make_rig(api, owner)
    moderation.take_down(node=taken_down, moderator=MOD, reason="illegal content")
    banned, _ = make_rig(api, owner)
    moderation.ban(kind="node", value=banned.id, moderator=MOD, reason="spam rig")
    banned_owner, _ = make_rig(api, taster)
    moderation.ban(kind="contributor", value=taster.id, moderator=MOD, reason="fake rigs")
    unlisted, _ = make_rig(api, owner, visibility="unlisted")
    never, _ = factories.make_node(owner)  # registered, never reported in
    stale, _ = make_rig(api, owner)
    Node.objects.filter(pk=stale.pk).update(last_heartbeat_at=timezone.now() - timedelta(seconds=46))
    unreachable, _ = make_rig(api, owner)
    Node.objects.filter(pk=unreachable.pk).update(consecutive_failures=3)  # its probes fail: tasters' would too
    assert set(rigs_by_id(catalog(api, relay_a))) == {shown.id, relayed[0]}
    # A relayed rig whose tunnel its relay no longer lists is gone at once.
    factories.relay_heartbeat(api, "relay-a", relay_a, [])
    assert set(rigs_by_id(catalog(api, relay_a))) == {shown.id}


def test_the_catalog_costs_the_same_queries_for_1_and_30_rigs(api, owner, taster, relay_a):
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = api.client.get("/api/relays/relay-a/catalog", HTTP_AUTHORIZATION=f"Bearer {relay_a}")
        assert response.status_code == 200
        return len(ctx.captured_queries), len(response.json()["rigs"])

    make_rig(api, owner, model_name="Model 0")
    one, listed = queries()
    assert listed == 1
    for i in range(1, 30):
        make_rig(api, owner if i % 2 else taster, model_name=f"Model {i}", gpu=f"RTX {3000 + i}", tags=["a"])
    thirty, listed = queries()
    assert listed == 30
    assert one == thirty == 2  # the relay's secret, the rigs


def test_the_catalog_needs_the_relays_own_secret(api, owner, two_relays):
    assert api.get("/api/relays/relay-a/catalog")[0] == 401
    for bad in ("garbage", "lrr_" + "x" * 43, owner.key):
        status, err = api.get("/api/relays/relay-a/catalog", auth=bad)
        assert status == 401 and err["code"] == "invalid_credential"
    status, err = api.get("/api/relays/relay-a/catalog", auth=two_relays["relay-b"])
    assert status == 403 and err["code"] == "wrong_relay"
    assert catalog(api, two_relays["relay-b"], "relay-b")["rigs"] == []


# --- model keys and aliases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
        ("  smollm2-135m-INSTRUCT ", "smollm2-135m-instruct"),
        ("/models/SmolLM2-135M-Instruct-Q8_0.gguf", "smollm2-135m-instruct"),
        ("mistral-7b-instruct-v0.2.Q5_K_M.gguf", "mistral-7b-instruct-v0.2"),
        ("Phi-3-mini.F16.gguf", "phi-3-mini"),
        ("Qwen/Qwen3-8B", "qwen3-8b"),
        ("Llama 3.1  8B", "llama-3.1-8b"),
        ("qwen3:35b", "qwen3:35b"),
        ("Qwen3:35B-Q4_K_M", "qwen3:35b-q4_k_m"),  # an ollama tag is kept, quantization and all
        ("Q4_K_M", "q4_k_m"),  # a name that is only a quantization stays
        ("", ""),
    ],
)
def test_model_names_normalise_by_the_documented_rule(name, key):
    assert model_key(name) == key
    assert model_key(key) == key  # a key is its own key: a client may send one back


def test_the_alias_table_is_normalised_and_points_at_model_keys():
    assert ALIASES
    for alias, target in ALIASES.items():
        assert model_key(alias) == alias and model_key(target) == target, alias
        assert alias != target and target not in ALIASES, alias
    assert ALIASES["smollm2"] == model_key("SmolLM2-135M-Instruct")  # the rig `make run` starts
    assert len(model_key("x" * 500)) == model_names.MAX_LENGTH


# --- where the gateway is ---------------------------------------------------------------------------------


def test_the_gateway_is_the_first_live_relay(api, db):
    assert api.get("/api/gateway") == (200, {"schema_version": 1, "base_url": None, "relays": []})
    secrets = {
        rid: factories.add_relay(rid, f"https://{rid}.example.org/") for rid in ("relay-b", "relay-a", "relay-c")
    }
    for rid, secret in secrets.items():
        factories.relay_heartbeat(api, rid, secret)
    factories.relay_heartbeat(api, "relay-c", secrets["relay-c"], draining=True)
    status, body = api.get("/api/gateway")
    assert status == 200
    assert body == {
        "schema_version": 1,
        "base_url": "https://relay-a.example.org/v1",
        "relays": [
            {"relay_id": "relay-a", "base_url": "https://relay-a.example.org/v1"},
            {"relay_id": "relay-b", "base_url": "https://relay-b.example.org/v1"},
        ],
    }
    factories.age_relay("relay-a", 61)  # gone quiet
    assert api.get("/api/gateway")[1]["base_url"] == "https://relay-b.example.org/v1"


# --- the OpenAPI schema -------------------------------------------------------------------------------------


def test_the_openapi_schema_documents_the_gateway_endpoints(api, owner, relay_a):
    doc = api.client.get("/api/schema/?format=json").json()
    for path, method in (
        ("/api/relays/{relay_id}/tokens", "post"),
        ("/api/relays/{relay_id}/catalog", "get"),
        ("/api/gateway", "get"),
    ):
        assert doc["paths"][path][method]["summary"], path
    token_request = doc["components"]["schemas"]["RelayTokenInRequest"]["properties"]
    assert set(token_request) == {"node_id", "client_ip", "contributor_key", "ttl_sec", "circle_id"}
    make_rig(api, owner)
    rig = catalog(api, relay_a)["rigs"][0]
    documented = doc["components"]["schemas"]["GatewayRig"]["properties"]
    assert set(documented) == set(rig)
    assert set(doc["components"]["schemas"]["GatewayRigQueue"]["properties"]) == set(rig["queue"])
    assert set(doc["components"]["schemas"]["GatewayCatalog"]["properties"]) == set(catalog(api, relay_a))

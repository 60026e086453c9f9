"""The model file a rig reports (heartbeat `model_identity`, nodes/model_files.py): stored on the node, validated
strictly, shown in PublicNode's `model_file` and on the rig page as the rig's claim, matched against the catalog
by sha256; and the tracker's catalog is the agent's, byte for byte."""

import copy
import json
from pathlib import Path

import pytest

from nodes import model_files
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
CATALOG = json.loads((ROOT / "node_agent" / "model_catalog.json").read_text())
SMOLLM2 = CATALOG["models"][0]
IDENTITY = {
    "model": "SmolLM2-135M-Instruct",
    "sha256": SMOLLM2["sha256"],
    "size": SMOLLM2["size"],
    "source": "file",
    "architecture": "llama",
    "parameters": 134515008,
    "size_label": "135M",
    "quantization": "Q4_1",
    "context_length": 8192,
    "tokenizer": "gpt2",
    "chat_template_sha256": "8" * 64,
}


def test_the_trackers_catalog_is_the_agents():
    # The tracker never imports the agent: it keeps a copy, and this test holds the two equal.
    assert (ROOT / "nodes" / "model_catalog.json").read_bytes() == (
        ROOT / "node_agent" / "model_catalog.json"
    ).read_bytes()
    assert model_files.catalog_names() == {m["sha256"]: m["name"] for m in CATALOG["models"]}


def _beat(api, node, secret, **extra):
    body = {"queue": {"active": 0, "waiting": 0, "max_active": 1}, "models": [node.model_name], **extra}
    return api.post(f"/api/nodes/{node.id}/heartbeat", body, auth=secret)


@pytest.fixture
def reporting(api, owner, settings):
    settings.RATE_AGENT_HEARTBEAT = "100/5s"
    node, secret = factories.make_node(owner)
    return node, secret


def test_a_reported_file_is_stored_and_shown_with_its_catalog_match(api, reporting, client):
    node, secret = reporting
    assert _beat(api, node, secret, model_identity=IDENTITY)[0] == 200
    node.refresh_from_db()
    assert node.model_identity == IDENTITY
    _, shown = api.get(f"/api/nodes/{node.id}")
    assert shown["node"]["model_file"] == {
        "sha256": SMOLLM2["sha256"],
        "quantization": "Q4_1",
        "architecture": "llama",
        "parameters": 134515008,
        "context_length": 8192,
        "catalog": "smollm2:135m-instruct-q4_1",
    }
    listed = api.get("/api/nodes")[1]["nodes"]
    assert [n["model_file"]["catalog"] for n in listed if n["id"] == node.id] == ["smollm2:135m-instruct-q4_1"]
    html = client.get(f"/nodes/{node.id}/").content.decode()
    assert f'title="sha256 {SMOLLM2["sha256"]}"' in html and "Q4_1" in html
    assert "matches catalog smollm2:135m-instruct-q4_1" in html and "reported by the rig" in html


def test_a_file_the_catalog_does_not_list_is_shown_without_a_match(api, reporting, client):
    node, secret = reporting
    other = {**IDENTITY, "sha256": "a" * 64, "quantization": "Q8_0"}
    assert _beat(api, node, secret, model_identity=other)[0] == 200
    model_file = api.get(f"/api/nodes/{node.id}")[1]["node"]["model_file"]
    assert model_file["catalog"] is None and model_file["quantization"] == "Q8_0"
    html = client.get(f"/nodes/{node.id}/").content.decode()
    assert "sha256 aaaaaaaaaaaaaaaa" in html and "matches catalog" not in html


def test_a_heartbeat_without_it_clears_it(api, reporting):
    # What the latest heartbeat says: an agent that changed its model, or an older one, reports no stale file.
    node, secret = reporting
    _beat(api, node, secret, model_identity=IDENTITY)
    assert _beat(api, node, secret)[0] == 200
    node.refresh_from_db()
    assert node.model_identity is None
    assert api.get(f"/api/nodes/{node.id}")[1]["node"]["model_file"] is None


def _without(key):
    return {k: v for k, v in IDENTITY.items() if k != key}


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:" + "a" * 64,
        [IDENTITY],
        {**IDENTITY, "sha256": "A" * 64},
        {**IDENTITY, "sha256": "a" * 63},
        {**IDENTITY, "size": -1},
        {**IDENTITY, "size": "98362432"},
        {**IDENTITY, "source": "hf"},
        {**IDENTITY, "parameters": 1.5},
        {**IDENTITY, "quantization": "Q" * 33},
        {**IDENTITY, "context_length": True},
        {**IDENTITY, "architecture": {"name": "llama"}},
        {**IDENTITY, "chat_template_sha256": "x"},
        {**IDENTITY, "licence": "MIT"},
        _without("sha256"),
        _without("model"),
        _without("size"),
    ],
)
def test_a_bad_model_identity_is_refused_naming_it(api, reporting, bad):
    node, secret = reporting
    status, err = _beat(api, node, secret, model_identity=copy.deepcopy(bad))
    assert status == 400, err
    assert err["field"].startswith("model_identity") and err["code"] in ("invalid_field", "unknown_field"), err
    node.refresh_from_db()
    assert node.model_identity is None


def test_the_optional_header_values_may_be_null(api, reporting):
    node, secret = reporting
    sparse = {**IDENTITY, **dict.fromkeys(("architecture", "parameters", "size_label", "quantization"), None)}
    sparse |= dict.fromkeys(("context_length", "tokenizer", "chat_template_sha256"), None)
    assert _beat(api, node, secret, model_identity=sparse)[0] == 200
    assert api.get(f"/api/nodes/{node.id}")[1]["node"]["model_file"]["quantization"] is None

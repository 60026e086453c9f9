"""Site-wide surfaces: OpenAPI schema and docs, /metrics, /api/health, unknown paths, settings checks."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from nodes.models import Node
from nodes.public_node import PUBLIC_NODE_FIELDS
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def schema(api):
    response = api.client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def test_the_openapi_schema_documents_every_endpoint(api):
    doc = schema(api)
    assert doc["openapi"].startswith("3.")
    expected = {
        "/api/health": {"get"},
        "/api/contributors": {"post"},
        "/api/contributors/me": {"get"},
        "/api/nodes": {"get", "post"},
        "/api/nodes/{node_id}": {"get", "patch", "delete"},
        "/api/nodes/{node_id}/heartbeat": {"post"},
        "/api/nodes/{node_id}/usage": {"post"},
        "/api/nodes/{node_id}/metrics": {"get"},
        "/api/nodes/{node_id}/tunnel": {"post"},
        "/api/relays/{relay_id}/heartbeat": {"post"},
        "/api/relays/{relay_id}/reports": {"post"},
        "/api/fingerprint/verify": {"post"},
        "/api/tokens": {"post"},
        "/api/tracker-keys": {"get"},
        "/api/replay/timing": {"post"},
        "/api/showcase": {"get"},
        "/api/models/wanted": {"get"},
        "/api/contributions": {"get"},
        "/api/circles": {"get", "post"},
        "/api/circles/{circle_id}": {"get", "patch", "delete"},
        "/api/circles/{circle_id}/invites": {"get", "post"},
        "/api/circles/{circle_id}/invites/{invite_id}": {"delete"},
        "/api/circles/invites/{code}": {"get"},
        "/api/circles/invites/{code}/join": {"post"},
        "/api/circles/{circle_id}/members": {"get"},
        "/api/circles/{circle_id}/members/{contributor_id}": {"patch", "delete"},
    }
    for path, methods in expected.items():
        assert path in doc["paths"], path
        assert methods <= set(doc["paths"][path]), path
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (path, method)


def test_the_schema_agrees_with_the_runtime_public_node(api, owner):
    doc = schema(api)
    documented = set(doc["components"]["schemas"]["PublicNodeDoc"]["properties"])
    assert documented == set(PUBLIC_NODE_FIELDS)
    node, _ = factories.make_node(owner)
    _, body = api.get(f"/api/nodes/{node.id}")
    assert set(body["node"]) == documented


def test_interactive_docs_load_their_assets_locally(api):
    response = api.client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    asset = api.client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200 and int(asset.headers["Content-Length"]) > 100_000


def test_the_api_docs_link_back_to_the_site_and_document_the_rigs_own_api(api):
    """The interactive page documents the tracker; tasters call the rig, so the page says how, beside it."""
    html = api.client.get("/api/docs/").content.decode()
    assert 'href="/"' in html and 'href="/contribute/"' in html  # a way back to the site
    for endpoint in ("POST {endpoint_url}/chat/completions", "GET {endpoint_url}/models", "/n/&lt;node_id&gt;/v1"):
        assert endpoint in html
    for code in ("invalid_token", "token_exhausted", "queue_full", "prompt_filtered", "node_offline"):
        assert code in html
    assert "openai.OpenAI(base_url=" in html and "/api/tokens" in html
    assert "<script>" not in html  # the CSP allows no inline script: the init script comes from a URL


def test_health(api):
    status, body = api.get("/api/health")
    assert status == 200
    assert body["ok"] is True and body["service"] == "luckrig-tracker" and body["now"].endswith("Z")
    assert "/" not in body["version"] and "secret" not in str(body).lower()


def test_metrics_count_requests_tokens_and_nodes_by_status(api, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    gone, gone_secret = factories.make_node(owner, gpu="RTX 2080")
    factories.heartbeat(api, gone, gone_secret)
    # Its agent stopped reporting long ago: what the monitor records then.
    Node.objects.filter(pk=gone.pk).update(last_heartbeat_at=timezone.now() - timedelta(days=1), status="unavailable")
    # Only listed nodes are counted (hidden ones: tests/moderation/test_bans.py): not an unlisted one, nor one
    # whose agent never reported in.
    factories.make_node(owner, gpu="RTX 3080")
    unlisted, unlisted_secret = factories.make_node(owner, gpu="RTX 4090", visibility="unlisted")
    factories.heartbeat(api, unlisted, unlisted_secret)
    api.post("/api/tokens", {"node_id": node.id})
    response = api.client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'luckrig_nodes{status="available"} 1.0' in text
    assert 'luckrig_nodes{status="unavailable"} 1.0' in text
    assert 'luckrig_nodes{status="unknown"} 0.0' in text
    assert 'luckrig_tokens_issued_total{crypto_mode="plain",tier="limited"} 1.0' in text
    assert 'luckrig_http_requests_total{method="POST",status="201"}' in text


def test_unknown_api_paths_are_json_404(api):
    status, body = api.get("/api/nowhere")
    assert status == 404 and body == {"schema_version": 1, "error": "Not found.", "code": "not_found"}


@pytest.mark.parametrize("limit", ["²", "0", "1001", "-1", "ten"])
def test_bad_contribution_limits_are_400(api, limit):
    status, body = api.get(f"/api/contributions?limit={limit}")
    assert status == 400 and body["field"] == "limit"


def test_wrong_method_is_405(api):
    status, body = api.call("put", "/api/tokens", {})
    assert status == 405 and body["code"] == "method_not_allowed"


def test_showcase_endpoint_names_one_node_per_category(api, owner):
    for fields in (
        dict(id="pi", gpu="Raspberry Pi 5", vram_gb=0),
        dict(id="mac", gpu="Apple M2 Max", vram_gb=32, context_length=32768),
        dict(id="hidden", gpu="GTX 970", vram_gb=4, visibility="unlisted"),
    ):
        node, secret = factories.make_node(owner, **fields)
        factories.heartbeat(api, node, secret)  # only nodes that reported in compete
    status, body = api.get("/api/showcase")
    assert status == 200
    picks = {c["id"]: c["node_id"] for c in body["categories"]}
    assert picks["cpu_rig"] == "pi" and picks["apple_silicon"] == "mac" and picks["largest_context"] == "mac"
    assert "hidden" not in picks.values()
    _, detail = api.get("/api/nodes/pi")
    assert {b["id"] for b in detail["node"]["showcase"]} >= {"cpu_rig"}


def run_manage(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL", "REDIS_URL")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_with_production_variables(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_extra={
            "DEBUG": "0",
            "SECRET_KEY": "x" * 20 + "production-secret-that-is-long-and-random-4e1b9c",
            "ALLOWED_HOSTS": "luckrig.example",
            "SITE_URL": "https://luckrig.example",
            "DATABASE_URL": "postgres://luckrig@127.0.0.1:5432/luckrig",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_without_a_secret_key(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        env_extra={"DEBUG": "0", "DATA_DIR": str(tmp_path), "SITE_URL": "https://luckrig.example"},
    )
    assert result.returncode != 0 and "luckrig.E001" in result.stderr


def test_seed_demo_cannot_be_hijacked_through_its_handle_or_ids(api, owner):
    from django.core.management import call_command

    from nodes.models import Node

    _, squatter = api.post("/api/contributors", {"handle": "luckrig-demo"})
    mine, _ = factories.make_node(owner, id="raspberry-pi-5-llama3-2-1b-q4-k-m", tuning_note="my own note")
    call_command("seed_demo")
    demo_owners = set(Node.objects.exclude(pk=mine.pk).values_list("owner_id", flat=True))
    assert demo_owners == {"c_luckrig_demo"} and squatter["contributor"]["id"] not in demo_owners
    mine.refresh_from_db()
    assert mine.owner_id == owner.id and mine.tuning_note == "my own note"


def test_seed_demo_is_idempotent(api):
    from django.core.management import call_command

    call_command("seed_demo")
    call_command("seed_demo")
    _, body = api.get("/api/nodes")
    assert body["count"] == 3
    gpus = {n["gpu"] for n in body["nodes"]}
    assert any("5090" in g for g in gpus) and any("M3 Max" in g for g in gpus) and any("Pi 5" in g for g in gpus)
    assert all(n["tuning_note"] and "showcase" in n["tags"] for n in body["nodes"])
    ctx = sorted(n["context_length"] for n in body["nodes"])
    assert ctx == [8192, 32768, 65536]


def test_seed_demo_lists_the_demo_rigs_as_rigs_that_ran_once_and_no_longer_serve(api):
    from django.core.management import call_command

    from tracker.management.commands.seed_demo import DEMO_LAST_HEARTBEAT_AT

    call_command("seed_demo")
    _, body = api.get("/api/nodes")
    assert {n["health"]["status"] for n in body["nodes"]} == {"unavailable"}
    badged = {c["node_id"] for c in api.get("/api/showcase")[1]["categories"]}
    assert badged == {n["id"] for n in body["nodes"]}  # each demo rig still wins a category
    for n in body["nodes"]:
        status, err = api.post("/api/tokens", {"node_id": n["id"]})
        assert (status, err["code"]) == (409, "node_unavailable")
    call_command("seed_demo")  # the same fixed heartbeat on every run
    assert set(
        Node.objects.filter(pk__in=[n["id"] for n in body["nodes"]]).values_list("last_heartbeat_at", flat=True)
    ) == {DEMO_LAST_HEARTBEAT_AT}


def test_env_example_lists_every_setting_read_from_the_environment():
    import re

    settings_src = (ROOT / "luckrig_site" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|float|list)\("([A-Z_]+)"', settings_src))
    read |= set(re.findall(r'environ\.get\("([A-Z_]+)"', settings_src)) | {"DATABASE_URL"}
    listed = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert read == listed


# How docs/api.md writes the circles' path parameters.
CIRCLE_PARAMETERS = {
    "{circle_id}": "<id>",
    "{invite_id}": "<invite_id>",
    "{contributor_id}": "<contributor_id>",
    "{code}": "<code>",
}


def test_docs_api_md_describes_every_served_endpoint(api):
    """docs/api.md is the project's statement of the contract: every path the tracker serves is in it."""
    text = (ROOT / "docs" / "api.md").read_text()
    for path in schema(api)["paths"]:
        documented = path.replace("{node_id}", "<id>").replace("{relay_id}", "<relay_id>")
        for name, shown in CIRCLE_PARAMETERS.items():
            documented = documented.replace(name, shown)
        assert f"`{documented}" in text or f"{documented}`" in text or f" {documented} " in text, path

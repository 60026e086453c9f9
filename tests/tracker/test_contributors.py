import pytest

from nodes.models import Contributor, Node
from tests import factories

pytestmark = pytest.mark.django_db


def test_creating_a_contributor_returns_the_key_once_and_stores_only_its_hash(api):
    status, body = api.post("/api/contributors", {"handle": "ada"})
    assert status == 201
    assert body["schema_version"] == 1
    key = body["contributor_key"]
    assert key.startswith("lrk_") and len(key) == 4 + 43
    assert body["contributor"]["handle"] == "ada"
    assert body["contributor"]["created_at"].endswith("Z")
    row = Contributor.objects.get(pk=body["contributor"]["id"])
    assert key not in row.key_hash and len(row.key_hash) == 64
    # The key is never shown again.
    status, me = api.get("/api/contributors/me", auth=key)
    assert status == 200 and "contributor_key" not in me


def test_handle_is_optional(api):
    status, body = api.post("/api/contributors", {})
    assert status == 201 and body["contributor"]["handle"] is None


def test_a_taken_handle_is_refused(api):
    api.post("/api/contributors", {"handle": "ada"})
    status, body = api.post("/api/contributors", {"handle": "ada"})
    assert status == 409 and body["code"] == "handle_taken" and body["field"] == "handle"


def test_me_shows_score_and_own_nodes(api):
    _, created = api.post("/api/contributors", {"handle": "ada"})
    key = created["contributor_key"]
    status, me = api.get("/api/contributors/me", auth=key)
    assert status == 200
    assert me["score"]["tier"] == "limited" and me["nodes"] == []
    _, created_node = api.post(
        "/api/nodes",
        {
            "endpoint_url": "https://ada.example.com/v1",
            "model_name": "m",
            "quantization": "Q8_0",
            "gpu": "GTX 1080",
            "tuning_note": "fits in 8 GB",
            "visibility": "unlisted",
        },
        auth=key,
    )
    _, me = api.get("/api/contributors/me", auth=key)
    assert [n["gpu"] for n in me["nodes"]] == ["GTX 1080"]
    assert me["score"]["tier"] == "limited"  # registered, but never seen alive
    factories.seen_alive(Node.objects.get(pk=created_node["node"]["id"]))
    _, me = api.get("/api/contributors/me", auth=key)
    assert me["score"]["tier"] == "limited"  # alive, but it has served nobody else yet
    factories.served_others(Node.objects.get(pk=created_node["node"]["id"]))
    _, me = api.get("/api/contributors/me", auth=key)
    assert me["score"]["tier"] == "contributor"
    assert set(me["score"]["components"]) == {"existence", "rarity", "usage", "discovery", "note"}


def test_me_without_a_key_is_401(api):
    status, body = api.get("/api/contributors/me")
    assert status == 401 and body["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer lrk_not-a-real-key", "Bearer lrn_wrong-kind", "Basic abc", "Bearer"])
def test_a_bad_contributor_key_is_401_not_anonymous(api, header):
    response = api.client.get("/api/contributors/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    response = api.client.post("/api/tokens", data={"node_id": "x"}, format="json", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_contributor_creation_is_rate_limited_per_ip(api, settings):
    settings.RATE_CONTRIBUTOR_CREATE = "5/d"
    for _ in range(5):
        assert api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.7")[0] == 201
    status, body = api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.7")
    assert status == 429 and body["code"] == "ip_rate_limited"
    assert 1 <= int(api.last["Retry-After"]) <= 86400
    # Another address is not affected.
    assert api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.8")[0] == 201


def test_forwarded_for_counts_only_behind_a_trusted_proxy(api, settings):
    settings.RATE_CONTRIBUTOR_CREATE = "1/d"
    # Untrusted peer: X-Forwarded-For is ignored, so rotating it does not escape the limit.
    assert api.post("/api/contributors", {}, REMOTE_ADDR="203.0.113.1", HTTP_X_FORWARDED_FOR="192.0.2.1")[0] == 201
    assert api.post("/api/contributors", {}, REMOTE_ADDR="203.0.113.1", HTTP_X_FORWARDED_FOR="192.0.2.2")[0] == 429
    # Behind a trusted proxy each forwarded client has its own budget.
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert api.post("/api/contributors", {}, REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.3")[0] == 201
    assert api.post("/api/contributors", {}, REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.4")[0] == 201
    assert api.post("/api/contributors", {}, REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="192.0.2.4")[0] == 429

import pytest

from nodes.models import Node
from nodes.public_node import PUBLIC_NODE_FIELDS
from tests import factories

pytestmark = pytest.mark.django_db


def register(api, key, **overrides):
    return api.post("/api/nodes", factories.node_fields(**overrides), auth=key)


def test_registering_a_node_returns_every_public_field_and_the_secret_once(api, owner):
    status, body = register(api, owner.key, lora="my-lora", tags=["Showcase", "home"], display_name="Den rig")
    assert status == 201, body
    node = body["node"]
    assert set(node) == set(PUBLIC_NODE_FIELDS)
    assert body["node_secret"].startswith("lrn_")
    assert node["id"] == "nvidia-geforce-rtx-3060-llama-3-1-8b-instruct-q4-k-m"
    assert node["tags"] == ["showcase", "home"]
    assert node["owner"] == {"id": owner.id, "handle": "owner"}
    assert node["health"]["status"] == "unknown"
    assert node["visibility"] == "public"
    stored = Node.objects.get(pk=node["id"])
    assert body["node_secret"] not in stored.secret_hash
    assert stored.health_url == node["endpoint_url"].removesuffix("/v1") + "/health"
    status, detail = api.get(f"/api/nodes/{node['id']}")
    assert status == 200 and "node_secret" not in detail and detail["node"]["id"] == node["id"]


def test_ids_are_slugs_made_unique(api, owner):
    _, first = register(api, owner.key, id="My Rig!")
    _, second = register(api, owner.key, id="my-rig")
    assert first["node"]["id"] == "my-rig" and second["node"]["id"] == "my-rig-2"


def test_registering_needs_a_contributor_key(api):
    status, body = api.post("/api/nodes", factories.node_fields())
    assert status == 401 and body["code"] == "unauthorized"


def test_only_the_owner_may_patch_or_delete(api, owner, taster):
    _, body = register(api, owner.key)
    node_id = body["node"]["id"]
    status, err = api.patch(f"/api/nodes/{node_id}", {"tuning_note": "mine now"}, auth=taster.key)
    assert status == 403 and err["code"] == "not_owner"
    status, err = api.delete(f"/api/nodes/{node_id}", auth=taster.key)
    assert status == 403 and err["code"] == "not_owner"
    status, _ = api.patch(f"/api/nodes/{node_id}", {"tuning_note": "ngl 99"})
    assert status == 401
    status, updated = api.patch(
        f"/api/nodes/{node_id}", {"tuning_note": "ngl 99", "context_length": 16384}, auth=owner.key
    )
    assert status == 200 and updated["node"]["tuning_note"] == "ngl 99"
    assert updated["node"]["context_length"] == 16384
    status, _ = api.delete(f"/api/nodes/{node_id}", auth=owner.key)
    assert status == 204
    status, err = api.get(f"/api/nodes/{node_id}")
    assert status == 404 and err["code"] == "node_not_found"


def test_patch_cannot_change_the_id(api, owner):
    _, body = register(api, owner.key)
    status, err = api.patch(f"/api/nodes/{body['node']['id']}", {"id": "other"}, auth=owner.key)
    assert status == 400 and err["code"] == "unknown_field" and err["field"] == "id"


def test_unknown_node_is_404_everywhere(api, owner):
    for path in ("/api/nodes/nope", "/api/nodes/nope/metrics"):
        status, body = api.get(path)
        assert status == 404 and body["code"] == "node_not_found"
    status, body = api.patch("/api/nodes/nope", {"lora": ""}, auth=owner.key)
    assert status == 404 and body["code"] == "node_not_found"


def test_unlisted_nodes_are_reachable_by_id_but_not_listed(api, owner):
    _, body = register(api, owner.key, visibility="unlisted")
    node_id = body["node"]["id"]
    _, listing = api.get("/api/nodes")
    assert node_id not in [n["id"] for n in listing["nodes"]]
    assert api.get(f"/api/nodes/{node_id}")[0] == 200


def test_taken_down_nodes_disappear(api, owner):
    from django.utils import timezone

    _, body = register(api, owner.key)
    Node.objects.filter(pk=body["node"]["id"]).update(taken_down_at=timezone.now())
    _, listing = api.get("/api/nodes")
    assert listing["count"] == 0
    assert api.get(f"/api/nodes/{body['node']['id']}")[0] == 404


def test_public_key_is_validated_and_fingerprinted(api, owner):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pem = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    status, body = register(api, owner.key, node_public_key=pem)
    assert status == 201
    fp = body["node"]["node_public_key_fingerprint"]
    assert fp.startswith("sha256:") and len(fp) == 7 + 43
    wrong_kind = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for bad in (wrong_kind, "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "hello"):
        status, err = register(api, owner.key, node_public_key=bad)
        assert status == 400 and err["code"] == "invalid_public_key" and err["field"] == "node_public_key"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://localhost/v1",
        "http://[::1]/v1",
        "http://192.168.1.20:11434/v1",
        "http://169.254.169.254/",
        "http://2130706433/v1",
        "http://0x7f.1/v1",
        "http://localhost./v1",
        "http://printer.local/v1",
    ],
)
def test_private_endpoints_are_refused_unless_allowed(api, owner, settings, url):
    settings.ALLOW_PRIVATE_NODE_URLS = False
    status, err = register(api, owner.key, endpoint_url=url)
    assert status == 400 and err["field"] == "endpoint_url" and "private" in err["error"]
    status, err = register(api, owner.key, health_url=url)
    assert status == 400 and err["field"] == "health_url"
    settings.ALLOW_PRIVATE_NODE_URLS = True
    assert register(api, owner.key, endpoint_url=url)[0] == 201

"""POST /api/fingerprint/verify against real local servers, and its SSRF guard."""

import json

import pytest

from tests import factories
from tests.httpserver import Route

pytestmark = pytest.mark.django_db


@pytest.fixture
def keyed_node(owner, server):
    key = factories.x25519_public_pem()
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1", node_public_key=key)
    return node, key


def verify(api, body):
    return api.post("/api/fingerprint/verify", body)


def test_matching_fingerprint_from_the_agents_health_document(api, settings, server, keyed_node):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    node, _ = keyed_node
    server.routes["/health"] = Route(
        200,
        json.dumps({"ok": True, "node_public_key_fingerprint": node.node_public_key_fingerprint}).encode(),
    )
    status, body = verify(api, {"node_id": node.id})
    assert status == 200 and body["ok"] is True
    assert body["expected"] == body["found"] == node.node_public_key_fingerprint


def test_a_published_pem_is_fingerprinted(api, settings, server, keyed_node):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    node, key = keyed_node
    server.routes["/key.pem"] = Route(200, key.encode())
    status, body = verify(api, {"node_id": node.id, "url": server.base + "/key.pem"})
    assert body["ok"] is True


def test_a_swapped_key_is_reported(api, settings, server, keyed_node):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    node, _ = keyed_node
    server.routes["/health"] = Route(200, json.dumps({"node_public_key": factories.x25519_public_pem()}).encode())
    _, body = verify(api, {"node_id": node.id})
    assert body["ok"] is False and body["found"] != body["expected"] and body["found"].startswith("sha256:")


def test_private_targets_are_refused_by_default(api, settings, server, keyed_node):
    settings.ALLOW_PRIVATE_NODE_URLS = False
    node, _ = keyed_node
    server.routes["/health"] = Route(200, b"{}")
    port = server.httpd.server_address[1]
    for url in (None, f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}/key.pem"):
        _, body = verify(api, {"node_id": node.id, **({"url": url} if url else {})})
        assert body["ok"] is False and body["error"].startswith("blocked"), (url, body)
    assert server.hits == []


def test_the_guard_checks_the_addresses_a_name_resolves_to(server):
    """A host name is checked after resolution, on the addresses actually connected to."""
    from core.urlguard import fetch_once

    port = server.httpd.server_address[1]
    for url in (
        f"http://localhost:{port}/",
        f"http://[::1]:{port}/",
        f"http://0.0.0.0:{port}/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/",
    ):
        result = fetch_once(url, allow_private=False, timeout_sec=2, max_bytes=1024)
        assert not result.ok and result.error.startswith("blocked"), (url, result)
    assert server.hits == []


@pytest.mark.parametrize(
    "url", ["http://localhost:9/", "http://169.254.169.254/latest/meta-data", "https://example.org/key.pem"]
)
def test_only_the_nodes_own_host_is_fetched(api, keyed_node, url):
    """Otherwise anyone could make the tracker fetch, or port-scan, any host."""
    node, _ = keyed_node
    status, body = verify(api, {"node_id": node.id, "url": url})
    assert status == 400 and body["field"] == "url"


def test_no_redirects_and_bounded_size(api, settings, server, keyed_node):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    node, _ = keyed_node
    server.routes["/r"] = Route(301, headers={"Location": server.base + "/health"})
    server.routes["/big"] = Route(200, b"x" * (64 * 1024 + 10))
    _, body = verify(api, {"node_id": node.id, "url": server.base + "/r"})
    assert body["ok"] is False and "redirect" in body["error"]
    _, body = verify(api, {"node_id": node.id, "url": server.base + "/big"})
    assert body["ok"] is False and "larger than" in body["error"]
    assert "/health" not in server.hits


def test_a_node_without_a_key_cannot_match(api, settings, server, owner):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    node, _ = factories.make_node(owner, endpoint_url=server.base + "/v1")
    server.routes["/health"] = Route(200, b'{"node_public_key_fingerprint": null}')
    _, body = verify(api, {"node_id": node.id})
    assert body["ok"] is False and body["expected"] is None


@pytest.mark.parametrize(
    "body, code",
    [
        ({"node_id": "ghost"}, "node_not_found"),
        ({"node_id": "x", "url": "file:///etc/passwd"}, "invalid_field"),
        ({"node_id": "x", "url": "http://user:pw@example.com/"}, "invalid_field"),
    ],
)
def test_bad_requests(api, db, body, code):
    status, err = verify(api, body)
    assert err["code"] == code and status in (400, 404)


@pytest.mark.parametrize(
    "page",
    [
        "Node key fingerprint: {fp}\n",
        "{fp}",
        "<p>My rig's key is <code>{fp}</code>.</p>",
        "old key sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, current key {fp} (since December)",
    ],
)
def test_a_bare_fingerprint_in_a_plain_text_page_is_found(api, settings, server, keyed_node, page):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    node, _ = keyed_node
    fp = node.node_public_key_fingerprint
    server.routes["/key.txt"] = Route(200, page.format(fp=fp).encode(), headers={"Content-Type": "text/plain"})
    status, body = verify(api, {"node_id": node.id, "url": server.base + "/key.txt"})
    assert status == 200 and body["ok"] is True and body["found"] == fp, body


def test_a_bare_fingerprint_that_differs_is_reported(api, settings, server, keyed_node):
    settings.ALLOW_PRIVATE_NODE_URLS = True
    node, _ = keyed_node
    other = "sha256:" + "B" * 43
    text = f"fingerprint: {other}x and {other}"  # the first is 44 characters long: not a fingerprint
    server.routes["/key.txt"] = Route(200, text.encode(), headers={"Content-Type": "text/plain"})
    _, body = verify(api, {"node_id": node.id, "url": server.base + "/key.txt"})
    assert body["ok"] is False and body["found"] == other

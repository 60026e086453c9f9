"""GET /api/nodes without DRF's dispatch (nodes.api.NodeListApi.dispatch): a plain anonymous GET is answered
directly, and gives what DRF's path gives for the same request: status, every header, the same bytes. Anything
else (a credential, an Accept with parameters or another type, `?format=`, a bad query) still goes through DRF."""

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.views import APIView

from nodes import api as nodes_api
from tests import factories

pytestmark = pytest.mark.django_db

QUERIES = [
    "",
    "?page_size=2",
    "?page_size=2&page=2",
    "?page_size=2&page=9",
    "?gpu=rtx&min_vram=12&tag=home",
    "?order=recent&model=qw",
    "?status=available&quantization=q4",
    "?page=0",
    "?min_vram=nan",
    "?order=fastest",
    "?gpu=" + "x" * 500,
]
PLAIN = [{}, {"HTTP_ACCEPT": "*/*"}, {"HTTP_ACCEPT": "application/json"}]
OTHER = [
    {"HTTP_ACCEPT": "application/json; indent=2"},
    {"HTTP_ACCEPT": "text/html"},
    {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"},
    {"HTTP_ACCEPT": ""},
    {"HTTP_AUTHORIZATION": "Bearer lrk_nobody"},
    {"HTTP_AUTHORIZATION": "Basic abc"},
]


@pytest.fixture
def rigs(api, owner, taster):
    for i in range(7):
        node, secret = factories.make_node(
            owner if i % 2 else taster,
            gpu=f"RTX {3000 + i}",
            model_name="Qwen2.5-7B" if i % 3 else "Phi-3",
            quantization="Q4_K_M",
            vram_gb=8 + 4 * i,
            tags=["home"] if i % 2 else [],
            display_name=f"Rig \u2028{i} ’",
        )
        factories.heartbeat(api, node, secret)


def _answer(path, headers, *, drf_only, monkeypatch):
    """(status, headers, body, whether DRF's initial() ran, queries)."""
    ran = []
    real_initial = APIView.initial

    def initial(self, request, *args, **kwargs):
        ran.append(True)
        return real_initial(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "initial", initial)
    if drf_only:
        monkeypatch.setattr(nodes_api, "_plain_get", lambda request: False)
    with CaptureQueriesContext(connection) as queries:
        response = Client().get(path, **headers)
    monkeypatch.undo()
    return response.status_code, dict(response.headers), response.content, bool(ran), len(queries)


def _both(path, headers, monkeypatch):
    fast = _answer(path, headers, drf_only=False, monkeypatch=monkeypatch)
    drf = _answer(path, headers, drf_only=True, monkeypatch=monkeypatch)
    assert fast[:3] == drf[:3], (path, headers)
    assert fast[4] == drf[4], (path, headers)  # the same queries
    return fast


@pytest.mark.parametrize("headers", PLAIN)
@pytest.mark.parametrize("query", QUERIES)
def test_a_plain_get_is_answered_as_drf_answers_it(rigs, monkeypatch, query, headers):
    status, response_headers, body, through_drf, _queries = _both("/api/nodes" + query, headers, monkeypatch)
    assert through_drf == (status != 200)  # a 400 is DRF's to answer
    if status == 200:
        assert response_headers["Content-Type"] == "application/json"
        assert response_headers["Allow"] == "GET, POST, HEAD, OPTIONS"
        if json.loads(body)["nodes"]:
            assert b"\\u2028" in body  # a display name's U+2028, escaped as DRF escapes it


@pytest.mark.parametrize("headers", OTHER)
@pytest.mark.parametrize("query", ["", "?page_size=2", "?page=0"])
def test_anything_else_goes_through_drf(rigs, monkeypatch, query, headers):
    status, _headers, _body, through_drf, _queries = _both("/api/nodes" + query, headers, monkeypatch)
    assert through_drf


def test_a_contributor_key_and_format_still_go_through_drf(rigs, owner, monkeypatch):
    for path, headers in (
        ("/api/nodes", {"HTTP_AUTHORIZATION": f"Bearer {owner.key}"}),
        ("/api/nodes?format=json", {}),
        ("/api/nodes?format=xml", {}),
    ):
        status, _headers, _body, through_drf, _queries = _both(path, headers, monkeypatch)
        assert through_drf and status in (200, 404)

"""The node list costs a constant number of SQL queries, whatever the number of nodes."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories

pytestmark = pytest.mark.django_db


def make_rig(api, person, **fields):
    """A node whose agent has reported in (a node that never did is not listed, so it would cost nothing)."""
    node, secret = factories.make_node(person, **fields)
    factories.heartbeat(api, node, secret)
    return node


def queries_for(client, path) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "path",
    [
        "/api/nodes",
        "/api/nodes?gpu=rtx&order=tok_per_sec&page_size=200",
        "/api/showcase",
        "/api/contributions",
    ],
)
def test_list_queries_do_not_grow_with_nodes(api, owner, taster, path):
    for i in range(3):
        make_rig(api, owner if i % 2 else taster, gpu=f"RTX {3000 + i}")
    few = queries_for(api.client, path)
    for i in range(3, 60):
        make_rig(api, owner if i % 2 else taster, gpu=f"RTX {3000 + i}", tags=["a", "b"])
    many = queries_for(api.client, path)
    listed = api.client.get("/api/nodes?page_size=200").json()["count"]
    assert listed == 60
    assert few == many
    assert many <= 2


def test_relayed_nodes_cost_no_extra_query(api, owner, taster):
    """A relayed node's endpoint_url comes from its relay, joined in the same query."""
    from tracker import relays

    relays.add_relay(relay_id="relay-a", public_url="https://relay-a.example.org")
    for i in range(3):
        make_rig(api, owner, gpu=f"RTX {3000 + i}")
    few = queries_for(api.client, "/api/nodes")
    for i in range(3, 40):
        make_rig(api, taster if i % 2 else owner, gpu=f"RTX {3000 + i}", endpoint_url=None)
    response_queries = queries_for(api.client, "/api/nodes")
    assert response_queries == few
    nodes = api.client.get("/api/nodes?page_size=200").json()["nodes"]
    relayed = [n for n in nodes if n["reachability"] == "relayed"]
    assert len(relayed) == 37 and all(n["endpoint_url"].startswith("https://relay-a.example.org/n/") for n in relayed)

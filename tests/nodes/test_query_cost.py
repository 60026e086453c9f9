"""The node list costs a constant number of SQL queries, whatever the number of nodes."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories

pytestmark = pytest.mark.django_db


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
        factories.make_node(owner if i % 2 else taster, gpu=f"RTX {3000 + i}")
    few = queries_for(api.client, path)
    for i in range(3, 60):
        factories.make_node(owner if i % 2 else taster, gpu=f"RTX {3000 + i}", tags=["a", "b"])
    many = queries_for(api.client, path)
    assert few == many
    assert many <= 2

"""The node list's count (nodes.list_count): exact on a small registry; on a big one (more than
NODE_LIST_EXACT_COUNT_UP_TO listed rigs) kept per filter combination for NODE_LIST_COUNT_TTL_SEC in the shared
cache, and then marked `count_is_estimate`. Pages, order and links are unchanged; only the count may lag."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories

pytestmark = pytest.mark.django_db


def rigs(api, person, n, **fields):
    for _ in range(n):
        node, secret = factories.make_node(person, **fields)
        factories.heartbeat(api, node, secret)


def listing(api, path="/api/nodes"):
    response = api.client.get(path)
    assert response.status_code == 200
    return response.json()


def test_small_registry_counts_exactly_every_time(api, owner):
    rigs(api, owner, 3)
    first = listing(api)
    assert (first["count"], first["count_is_estimate"]) == (3, False)
    rigs(api, owner, 1)
    again = listing(api)
    assert (again["count"], again["count_is_estimate"]) == (4, False)


def test_big_registry_reuses_a_recent_count_and_says_so(api, owner, settings):
    settings.NODE_LIST_EXACT_COUNT_UP_TO = 2
    rigs(api, owner, 3, gpu="RTX 3090")
    first = listing(api, "/api/nodes?page_size=2")
    assert (first["count"], first["count_is_estimate"]) == (3, False)
    assert first["next"].endswith("page_size=2&page=2")
    rigs(api, owner, 2, gpu="Apple M2")

    with CaptureQueriesContext(connection) as ctx:
        kept = listing(api, "/api/nodes?page_size=2")
    assert (kept["count"], kept["count_is_estimate"]) == (3, True)
    assert not any("COUNT(" in query["sql"] for query in ctx.captured_queries)  # the page only: no count
    # The page asks first for its rows' versions, and a page with a row this process has not written yet is then
    # read whole (nodes.compiled_list.page_json): two queries; asked again, the versions alone.
    assert len(ctx.captured_queries) == 2
    with CaptureQueriesContext(connection) as ctx:
        assert listing(api, "/api/nodes?page_size=2") == kept
    assert len(ctx.captured_queries) == 1
    # The page itself is read now: the newest rigs are in the list at once, only the count lags (the page size
    # is not a filter: the same count).
    everything = listing(api, "/api/nodes?page_size=200")
    assert len(everything["nodes"]) == 5
    # Still the kept count's estimate, but never below the rigs the page itself shows.
    assert (everything["count"], everything["count_is_estimate"]) == (5, True)

    # Each filter combination has its own count; a new one is counted at once.
    apple = listing(api, "/api/nodes?gpu=apple")
    assert (apple["count"], apple["count_is_estimate"]) == (2, False)
    assert listing(api, "/api/nodes?gpu=apple")["count_is_estimate"] is True

    cache.clear()  # what NODE_LIST_COUNT_TTL_SEC does in production
    fresh = listing(api, "/api/nodes?page_size=2")
    assert (fresh["count"], fresh["count_is_estimate"]) == (5, False)


def test_a_kept_count_cannot_leak_into_another_filter(api, owner, settings):
    settings.NODE_LIST_EXACT_COUNT_UP_TO = 0
    rigs(api, owner, 2, gpu="RTX 3090", tags=["home"])
    rigs(api, owner, 1, gpu="RTX 4090", tags=["moe"])
    assert listing(api, "/api/nodes?tag=home")["count"] == 2
    assert listing(api, "/api/nodes?tag=moe")["count"] == 1
    assert listing(api, "/api/nodes?gpu=rtx&tag=home")["count"] == 2
    assert listing(api, "/api/nodes?gpu=4090")["count"] == 1
    assert listing(api, "/api/nodes?tag=home")["count_is_estimate"] is True


def test_ttl_zero_always_counts(api, owner, settings):
    settings.NODE_LIST_EXACT_COUNT_UP_TO = 0
    settings.NODE_LIST_COUNT_TTL_SEC = 0
    rigs(api, owner, 2)
    assert listing(api)["count_is_estimate"] is False
    rigs(api, owner, 1)
    again = listing(api)
    assert (again["count"], again["count_is_estimate"]) == (3, False)


def test_redis_down_counts_exactly(api, owner, settings):
    from django.test import override_settings

    from tests.processes import free_port

    settings.NODE_LIST_EXACT_COUNT_UP_TO = 0
    rigs(api, owner, 2)
    unreachable = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    with override_settings(CACHES=unreachable):
        for _ in range(2):
            body = listing(api)
            assert (body["count"], body["count_is_estimate"], len(body["nodes"])) == (2, False, 2)


def test_a_reused_count_lower_than_today_s_hides_no_rig_past_it(api, owner, settings):
    settings.NODE_LIST_EXACT_COUNT_UP_TO = 2
    rigs(api, owner, 3)
    assert listing(api, "/api/nodes?page_size=2")["count"] == 3  # counted, and kept
    rigs(api, owner, 2)  # five listed now; the kept count still says three

    second = listing(api, "/api/nodes?page_size=2&page=2")
    assert second["count_is_estimate"] is True and len(second["nodes"]) == 2
    assert second["next"] and second["next"].endswith("page_size=2&page=3")  # a full page links on
    third = listing(api, second["next"].split("testserver", 1)[1])
    assert len(third["nodes"]) == 1 and third["next"] is None
    assert third["count"] >= 5  # never less than the rigs the pages have shown
    seen = [n["id"] for page in (listing(api, "/api/nodes?page_size=2"), second, third) for n in page["nodes"]]
    assert len(set(seen)) == 5

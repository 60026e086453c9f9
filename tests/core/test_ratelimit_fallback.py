"""Limits that survive a Redis outage (issue 11): while the shared cache cannot be reached, each process counts
on its own, stricter rather than open, and says so once in the log and in /metrics. (The same against a real
Redis that is stopped, with two Daphne processes: tests/site/test_production.py.)"""

import logging

import pytest

from core import ratecache
from tests.processes import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_down(settings):
    """The rate-limit cache points at a port where no Redis listens."""
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "core.ratecache.FallbackRedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    settings.RATELIMIT_USE_CACHE = "ratelimit"
    settings.RATE_CONTRIBUTOR_CREATE = "5/d"
    yield
    from django.core.cache import caches

    caches["ratelimit"]._local.clear()
    ratecache.outage.since, ratecache.outage.retry_at = None, 0.0


def metric(api, name: str) -> str:
    _, _ = api.get("/metrics")
    return next(line for line in api.last.content.decode().splitlines() if line.startswith(name + " "))


def test_with_redis_unreachable_the_sixth_contributor_from_one_address_is_refused(api, redis_down, caplog):
    with caplog.at_level(logging.WARNING, logger="luckrig.ratelimit"):
        codes = [api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.7")[0] for _ in range(8)]
    assert codes == [201] * 5 + [429] * 3
    assert api.last["Retry-After"]
    said = [r for r in caplog.records if r.name == "luckrig.ratelimit"]
    assert len(said) == 1 and "unreachable" in said[0].getMessage()  # once, not once per request
    assert metric(api, "luckrig_ratelimit_fallback") == "luckrig_ratelimit_fallback 1.0"


def test_each_process_allows_its_share_when_several_share_the_limit(api, redis_down, settings):
    settings.RATELIMIT_FALLBACK_PROCESSES = 2
    codes = [api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.8")[0] for _ in range(4)]
    assert codes == [201, 201, 429, 429]  # 5/d over two processes: at most 2 each, 4 in all


def test_without_an_outage_the_gauge_is_zero(api):
    assert metric(api, "luckrig_ratelimit_fallback") == "luckrig_ratelimit_fallback 0.0"

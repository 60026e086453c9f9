"""Prometheus metrics at /metrics.

Request counts are per process (scrape each Daphne process, as Prometheus expects of counters); tokens
issued, listed nodes by status and live relays are read from the database at scrape time, so they agree across processes
and survive restarts. Tokens issued is a counter over every node, hidden ones included: a counter must never
go down, and it names no node.

gunicorn's workers cannot be scraped one by one (they share one port), so under gunicorn the per-process metrics
are kept in prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, which deploy/gunicorn.conf.py sets
and empties at start) and /metrics adds up every worker's: one scrape of gunicorn counts all of its requests."""

import os

from django.db.models import Count
from django.http import HttpResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core import ratecache

# Read once, as prometheus_client itself does when this module makes its first metric.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "luckrig_http_requests", "HTTP requests served by this process", ["method", "status"], registry=REGISTRY
)

# 1 while this process counts rate limits on its own because the shared cache (Redis) is unreachable
# (core/ratecache.py); per process, like the request counter.
# Under gunicorn: 1 while any live worker does (a worker's value is written as it answers a request, since a
# function gauge cannot be read across processes).
RATELIMIT_FALLBACK = Gauge(
    "luckrig_ratelimit_fallback",
    "1 while this process counts rate limits alone (stricter) because the shared cache is unreachable",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
if not MULTIPROCESS:
    RATELIMIT_FALLBACK.set_function(lambda: 1.0 if ratecache.fallback_active() else 0.0)

_METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS"}


def count_request(method: str, status: int) -> None:
    # Bounded label values: an attacker's odd method names must not grow the registry.
    HTTP_REQUESTS.labels(method if method in _METHODS else "OTHER", str(status)).inc()
    if MULTIPROCESS:
        RATELIMIT_FALLBACK.set(1.0 if ratecache.fallback_active() else 0.0)


class DatabaseCollector:
    """Reads tokens issued and listed-node counts by status from the database on each scrape."""

    def collect(self):
        from nodes.models import Node, Relay
        from tracker.models import TastingToken

        # Listed nodes only, the ones GET /api/nodes shows: a node that is taken down or banned must leave every
        # public surface, and /metrics is one; an unlisted node is left out too, as from every public count.
        nodes = GaugeMetricFamily(
            "luckrig_nodes",
            "Listed nodes (public, reported in, not hidden) by status",
            labels=["status"],
        )
        counts = {s: 0 for s in Node.Status.values}
        for row in Node.objects.listed().values("status").annotate(n=Count("id")).order_by():
            counts[row["status"]] = row["n"]
        for status, n in sorted(counts.items()):
            nodes.add_metric([status], n)
        yield nodes

        tokens = CounterMetricFamily("luckrig_tokens_issued", "Tasting tokens issued", labels=["tier", "crypto_mode"])
        for row in TastingToken.objects.values("tier", "crypto_mode").annotate(n=Count("jti")).order_by():
            tokens.add_metric([row["tier"], row["crypto_mode"]], row["n"])
        yield tokens

        # A handful of rows, one per relay process: live = a heartbeat in the last minute and not draining.
        relays = GaugeMetricFamily("luckrig_relays_live", "Relays that nodes are assigned to (live, not draining)")
        relays.add_metric([], Relay.objects.live().count())
        yield relays

    def describe(self):
        return []


REGISTRY.register(DatabaseCollector())


def _scraped_registry() -> CollectorRegistry:
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # every worker's counters and gauges, from their files
    registry.register(DatabaseCollector())
    return registry


def metrics_view(request):
    return HttpResponse(generate_latest(_scraped_registry()), content_type="text/plain; version=0.0.4; charset=utf-8")

"""gunicorn settings for the tracker's REST API and pages (deploy/luckrig-web.service; docs/operations.md).

In production gunicorn serves every HTTP path and Daphne only the websockets under /ws/: under ASGI each sync
Django view hops to a thread, and one WSGI worker answered several times more requests than one Daphne process
(docs/benchmarks.md). Everything that must be shared between the processes lives in PostgreSQL or Redis
(REDIS_URL), so gunicorn's workers and Daphne's processes are interchangeable.

Each value can be changed from the environment (tracker.env), so this file never needs editing:
  WEB_CONCURRENCY          workers (gunicorn's own variable); default: cores × 2 + 1
  WEB_BIND                 address to listen on; default 127.0.0.1:8000 (nginx in front)
  WEB_WORKER_CLASS         sync (default) or gthread; WEB_THREADS threads per gthread worker (default 4)
  WEB_GRACEFUL_TIMEOUT     seconds a stopping worker has to finish its requests; default 20
  WEB_TIMEOUT              seconds a worker may stay silent before the arbiter replaces it; default 30
  WEB_MAX_REQUESTS         requests before a worker is replaced (0: never); default 10000, with 10 % jitter
  WEB_ACCESS_LOG           "-" for stdout, or a file; default off (nginx keeps the access log)
"""

import os
import tempfile
from pathlib import Path


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


wsgi_app = "luckrig_site.wsgi:application"
bind = os.environ.get("WEB_BIND", "127.0.0.1:8000").split(",")

# cores × 2 + 1: while one worker waits on PostgreSQL or Redis another uses the core. Measured on 2 cores
# (bench/layout.py, docs/benchmarks.md), more workers than that only added context switches.
workers = _int("WEB_CONCURRENCY", (os.cpu_count() or 1) * 2 + 1)
# Sync workers: one request at a time per process. A slow client never holds a worker: nginx buffers the
# request and the answer (deploy/nginx-luckrig.conf). Measured side by side against gthread (4 threads a worker),
# 5 workers each, PostgreSQL with 1,000 nodes, wrk at concurrency 16 on the same 2-core machine (busy with other
# jobs), 8 alternating runs each (docs/benchmarks.md, "gunicorn: sync or gthread workers"): gthread answered more
# requests a second (median 908 vs 671 on /api/health, 1.35×; 188 vs 106 on /api/nodes, 1.77×), but its p99 on
# /api/health was 5× sync's (562 vs 108 ms) and 15 of its requests took over 2 s (wrk's timeout), against none
# under sync. Sync stays the default for its bounded latency; WEB_WORKER_CLASS=gthread switches without an edit,
# should a quiet machine (bench/layout.py) show gthread's gain without its tail.
worker_class = os.environ.get("WEB_WORKER_CLASS", "sync")
threads = _int("WEB_THREADS", 4) if worker_class == "gthread" else 1

# SIGTERM (systemctl stop/restart) closes the listening socket at once and lets each worker finish the request in
# hand; whatever is still running after graceful_timeout is killed. It must stay below the unit's TimeoutStopSec
# (30 s in luckrig-web.service) so that gunicorn, not systemd's SIGKILL, ends the stop.
graceful_timeout = _int("WEB_GRACEFUL_TIMEOUT", 20)
timeout = _int("WEB_TIMEOUT", 30)
# (A sync worker closes each connection after its answer, so gunicorn's keepalive does not apply: nginx opens a
# connection per request, which on 127.0.0.1 costs little.)

# Replace each worker after a while, so that a slow leak in any library never grows without bound; the jitter
# keeps the workers from restarting all at once. Not too often: each worker that ever ran leaves its request
# counters in a file that /metrics reads until gunicorn restarts (see PROMETHEUS_MULTIPROC_DIR below).
max_requests = _int("WEB_MAX_REQUESTS", 10000)
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0

# nginx logs every request already; a second access log per request costs a worker a write for nothing.
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"

# Only nginx on this host may set X-Forwarded-Proto (https). The client's address is taken from X-Forwarded-For
# by the tracker itself, believed only from TRUSTED_PROXIES (core/clientip.py): gunicorn never rewrites it.
forwarded_allow_ips = "127.0.0.1"

# No runtime control socket (gunicornc): systemctl reload/stop are the controls, and ProtectSystem/ProtectHome
# leave no writable home for one anyway.
control_socket_disable = True
proc_name = "luckrig-web"

# /metrics adds up the workers' request counters from prometheus_client's multiprocess files
# (luckrig_site/metrics.py). Set here, in the arbiter, so that every worker inherits it before it loads Django.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="luckrig-web-metrics-")


def on_starting(server):
    """Start the metrics from zero (files of a previous run would be added in), and say so when the rate limits'
    fallback weight is too small for this many workers."""
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for old in metrics_dir.glob("*.db"):
        old.unlink()
    _warn_about_the_fallback_weight(server)


def child_exit(server, worker):
    """A replaced worker's gauges stop counting (its counters stay in the sums, as counters must)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _warn_about_the_fallback_weight(server):
    """While Redis is unreachable every process counts rate limits alone, each request weighing
    RATELIMIT_FALLBACK_PROCESSES (core/ratecache.py): fewer than this server's workers would multiply the limits."""
    weight = _int("RATELIMIT_FALLBACK_PROCESSES", 1)
    if os.environ.get("REDIS_URL") and weight < server.cfg.workers:
        server.log.warning(
            "RATELIMIT_FALLBACK_PROCESSES is %d but gunicorn runs %d workers: while Redis is down the rate limits "
            "would allow up to %d times as much. Set it to the workers plus the Daphne processes.",
            weight,
            server.cfg.workers,
            -(-server.cfg.workers // weight),
        )

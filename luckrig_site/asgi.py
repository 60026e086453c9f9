"""ASGI entry point (Daphne): HTTP to Django; websockets to the queue view and the agent link."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "luckrig_site.settings")

django_application = get_asgi_application()  # sets Django up before the consumers are imported


def _no_persistent_connections() -> None:
    """DB_CONN_MAX_AGE is for WSGI workers (deploy/gunicorn.conf.py), never for Daphne. Under ASGI each request's
    sync work runs in a thread of its own (asgiref's thread-sensitive context), so a connection kept for reuse
    outlives the thread that could reuse it: measured here, one Daphne process held 41 PostgreSQL connections
    after 120 requests, and under load the server refused more ("too many clients"). Django's docs say the same:
    disable persistent connections under ASGI. The setting dicts are the ones every connection reads."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = 0


_no_persistent_connections()

from luckrig_site.checks import refuse_bad_settings  # noqa: E402

refuse_bad_settings()  # a malformed rate or an all-trusting TRUSTED_PROXIES stops Daphne here

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from nodes.consumers import QueueConsumer  # noqa: E402
from tracker.consumers import AgentConsumer  # noqa: E402

websocket_urls = [
    path("ws/queue/", QueueConsumer.as_asgi()),
    path("ws/queue/<str:node_id>/", QueueConsumer.as_asgi()),
    path("ws/agent/", AgentConsumer.as_asgi()),
]

application = ProtocolTypeRouter({"http": django_application, "websocket": URLRouter(websocket_urls)})


def _tune_gc() -> None:
    """Keep the garbage collector's full passes out of the websocket fan-out (bench/queue_fanout.py).

    Each write to a socket makes a few short-lived objects in Twisted and asyncio (a writer registration,
    selector keys) that live until the next turn of the loop. With the default gen-0 threshold of 700, a
    collection runs every few dozen writes, finds hundreds of them still alive and promotes them; at 1,000
    subscribers that triggered a full collection about every 2 s, stalling the loop for 60-200 ms. Freezing
    what start-up made (modules, classes, functions: about half of all objects) keeps it out of every full
    pass, and a gen-0 threshold of 20,000 lets the short-lived objects die young. Measured (docs/benchmarks.md):
    staleness p99 for 1,000 subscribers at 100 changes/s, ~340 ms before, ~180-250 ms after."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)


_tune_gc()

"""ASGI entry point (Daphne): HTTP to Django; websockets to the queue view and the agent link."""

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

from luckrig_site.gctune import tune_gc  # noqa: E402
from nodes.consumers import QueueConsumer  # noqa: E402
from tracker.consumers import AgentConsumer  # noqa: E402

websocket_urls = [
    path("ws/queue/", QueueConsumer.as_asgi()),
    path("ws/queue/<str:node_id>/", QueueConsumer.as_asgi()),
    path("ws/agent/", AgentConsumer.as_asgi()),
]

application = ProtocolTypeRouter({"http": django_application, "websocket": URLRouter(websocket_urls)})


tune_gc()  # luckrig_site.gctune

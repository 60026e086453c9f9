"""ASGI entry point (Daphne): HTTP to Django; websockets to the queue view and the agent link."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "luckrig_site.settings")

django_application = get_asgi_application()  # sets Django up before the consumers are imported

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

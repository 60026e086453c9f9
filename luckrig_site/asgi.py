"""ASGI entry point (Daphne). HTTP goes to Django; websockets arrive with the live-queue work."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "luckrig_site.settings")

application = get_asgi_application()

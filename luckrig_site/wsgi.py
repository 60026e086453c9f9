"""WSGI entry point: a legitimate way to serve the REST API alone (see docs/operations.md)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "luckrig_site.settings")

application = get_wsgi_application()

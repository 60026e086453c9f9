"""WSGI entry point: production serves every HTTP path from gunicorn with it (deploy/gunicorn.conf.py); Daphne
keeps only the websockets (docs/operations.md)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "luckrig_site.settings")

application = get_wsgi_application()

from luckrig_site.checks import refuse_bad_settings  # noqa: E402

refuse_bad_settings()  # a malformed rate or an all-trusting TRUSTED_PROXIES stops the server here

from luckrig_site.gctune import tune_gc  # noqa: E402

tune_gc()  # in each worker: gunicorn loads this module after the fork (deploy/gunicorn.conf.py has no preload)

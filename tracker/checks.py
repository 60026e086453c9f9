"""System checks that fail loudly on a bad production combination."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def production_settings(app_configs, **kwargs):
    problems = []
    if settings.DEBUG:
        return problems
    if not settings.SECRET_KEY_FROM_ENV:
        problems.append(
            Error(
                "SECRET_KEY is not set: with DEBUG off the tracker needs a real secret "
                "(SECRET_KEY or SECRET_KEY_FILE).",
                id="luckrig.E001",
            )
        )
    if (
        settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
        and settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3"
    ):
        problems.append(
            Warning(
                "REDIS_URL is not set: with several processes the in-memory channel layer and "
                "local-memory cache are per process (rate limits would multiply).",
                id="luckrig.W001",
            )
        )
    if not settings.SITE_URL.startswith("https://"):
        problems.append(Warning("SITE_URL is not https: it is the `iss` of every tasting token.", id="luckrig.W002"))
    return problems

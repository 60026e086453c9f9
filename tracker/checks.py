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


@register(Tags.security)
def rate_settings(app_configs, **kwargs):
    from luckrig_site.ratelimits import period_of

    problems = []
    for name in (
        "RATE_CONTRIBUTOR_CREATE",
        "RATE_TOKEN_CREATE",
        "RATE_NODE_WRITE",
        "RATE_FINGERPRINT_VERIFY",
        "RATE_TIMING_UPLOAD",
        "RATE_ABUSE_REPORT",
    ):
        try:
            period_of(getattr(settings, name))
        except ValueError as exc:
            problems.append(Error(f"{name}: {exc}", id="luckrig.E002"))
    return problems

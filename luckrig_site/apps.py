from django.apps import AppConfig


class SiteConfig(AppConfig):
    """The site's wiring as an app only so that its system checks are registered; it has no models."""

    name = "luckrig_site"
    label = "luckrig_site"

    def ready(self):
        from luckrig_site import checks  # noqa: F401  (registers the system checks)

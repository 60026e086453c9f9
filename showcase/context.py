"""Template context shared by every page: the abuse contact and the site's own URL."""

from django.conf import settings


def site(request) -> dict:
    return {"contact": settings.ABUSE_CONTACT, "site_url": settings.SITE_URL}

"""The public policy page."""

from django.conf import settings
from django.shortcuts import render


def policy(request):
    return render(request, "moderation/policy.html", {"contact": settings.ABUSE_CONTACT})

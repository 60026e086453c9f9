"""Bans, as access control: whether a node, a contributor or an IP hash is banned right now, and the 403 that
says so. Creating and lifting bans is the moderation app's workflow; it calls `refresh_node_ban` so that a
banned node disappears from every public surface (Node.banned_until is what the node queries filter on)."""

from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from luckrig_site.api_errors import ApiError
from luckrig_site.timefmt import iso
from nodes.models import Node
from tracker.models import Ban


def active(kind: str, value: str, now: datetime | None = None) -> Ban | None:
    """The active ban on this subject that ends last (a ban for good first), or None."""
    now = now or timezone.now()
    bans = Ban.objects.filter(kind=kind, value=value, lifted_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    forever = bans.filter(expires_at__isnull=True).order_by("-created_at").first()
    return forever or bans.order_by("-expires_at").first()


def refuse_if_banned(*checks: tuple[str, str | None]) -> None:
    """403 `banned` with the ban's reason and end, for the first (kind, value) pair under an active ban."""
    for kind, value in checks:
        if not value:
            continue
        ban = active(kind, value)
        if ban is not None:
            raise ApiError(
                403,
                "banned",
                f"This {kind} is banned: {ban.reason}",
                extra={"ban": {"kind": ban.kind, "reason": ban.reason, "expires_at": iso(ban.expires_at)}},
            )


def refresh_node_ban(node_id: str) -> None:
    """Store the end of the node's longest active ban on the row (far future for a ban for good)."""
    ban = active(Ban.Kind.NODE, node_id)
    until = None
    if ban is not None:
        until = ban.expires_at or datetime(9999, 12, 31, tzinfo=timezone.get_current_timezone())
    Node.objects.filter(pk=node_id).update(banned_until=until)

"""What a token asked of a rig shared with circles gets (issue 15), decided before tracker.tasting signs it: the
membership it goes through (a circle token, claim `circle`), that member's budget for the rest of the UTC day,
and the circle-only hours that keep public tasters off a shared public rig.

A circle token spends no tier quota: the member's daily limits (tracker.circle_usage) replace it, and its
`max_requests` and output budget are cut to what is left of them today, so that one token cannot outrun them."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.api_errors import ApiError
from core.timefmt import iso
from nodes.models import CircleMember, Contributor, Node
from tracker import bans, circle_usage, tiers


def membership_for(node: Node, contributor: Contributor | None, circle_id: str | None) -> CircleMember | None:
    """The caller's membership a token for `node` goes through, or None for an ordinary token.

    The one named by `circle_id`, else the first active one by join date among the circles the rig is shared
    with, leaving out circles whose owner is banned. A paused member gets 403 `membership_paused` on a circle rig
    (or when naming that circle), and an ordinary public token on a public or unlisted rig; on a circle rig anyone
    but its owner without a membership gets 403 `not_in_circle`. The row is locked, so that two tokens asked for
    at once by one member are counted one after the other against the limits."""
    if contributor is None:
        if circle_id is not None:
            raise _not_in_circle(circle_id)
        return None
    rows = (
        CircleMember.objects.select_for_update(of=("self",))
        .select_related("circle")
        .filter(contributor=contributor, circle__nodes=node)
        .order_by("joined_at", "id")
    )
    if circle_id is not None:
        rows = rows.filter(circle_id=circle_id)
    rows = list(rows)
    # A circle whose owner is banned is gone for everyone (tracker.circle_services): no tokens go through it.
    banned = bans.banned_contributors({m.circle.owner_id for m in rows})
    rows = [m for m in rows if m.circle.owner_id not in banned]
    if circle_id is not None and not rows:
        raise _not_in_circle(circle_id)
    active = [m for m in rows if m.status == CircleMember.Status.ACTIVE]
    if active:
        return active[0]
    if rows and (node.visibility == Node.Visibility.CIRCLE or circle_id is not None):
        raise ApiError(
            403,
            "membership_paused",
            f"Your membership of circle {rows[0].circle.name!r} is paused by its owner: no tokens for its rigs "
            "until they resume it.",
            extra={"circle_id": rows[0].circle_id},
        )
    if node.visibility == Node.Visibility.CIRCLE and contributor.id != node.owner_id:
        # Fails closed: on a circle rig only its owner gets a token that goes through no circle.
        raise ApiError(
            403,
            "not_in_circle",
            f"Rig {node.id!r} is shared with its circles only, and this contributor key is in none of them.",
        )
    return None


def _not_in_circle(circle_id: str) -> ApiError:
    return ApiError(
        403,
        "not_in_circle",
        f"circle_id: this rig is not shared with circle {circle_id!r}, or this contributor key is not in it.",
        extra={"field": "circle_id"},
    )


@dataclass(frozen=True)
class Budget:
    """A circle token's numbers: its claims (`token_limits`, as tiers.Tier.token_limits names them) and the
    member's day with this token counted."""

    token_limits: dict
    limits: circle_usage.Limits
    usage_today: circle_usage.Usage
    resets_at: datetime


def budget(member: CircleMember, tier: tiers.Tier, now: datetime) -> Budget:
    """The tier's per-token limits, cut to what is left of the member's day; 429 `circle_limit_reached` (with when
    it resets, the limits and today's usage) when nothing is left."""
    limits = circle_usage.limits_of(member)
    used = circle_usage.usage_today(member.circle_id, [member.contributor_id], now)[member.contributor_id]
    requests_left = limits.requests_per_day - used.requests
    tokens_left = limits.tokens_per_day - used.tokens
    resets_at = circle_usage.resets_at(now)
    if requests_left <= 0 or tokens_left <= 0:
        retry = max(1, math.ceil((resets_at - now).total_seconds()))
        spent = "requests" if requests_left <= 0 else "tokens"
        raise ApiError(
            429,
            "circle_limit_reached",
            f"Your daily limit of {spent} in circle {member.circle.name!r} is used up; it resets at 00:00 UTC "
            f"({iso(resets_at)}).",
            extra={
                "circle_id": member.circle_id,
                "retry_after_sec": retry,
                "resets_at": iso(resets_at),
                "limits": limits.as_dict(),
                "usage_today": used.as_dict(),
            },
            headers={"Retry-After": str(retry)},
        )
    max_requests = min(tier.max_requests, requests_left)
    # No more than the token can spend (its requests at the per-request cap): the rest of it is reserved below.
    total = min(max_requests * tier.output_tokens_per_request, tokens_left)
    token_limits = {
        "max_requests": max_requests,
        "max_output_tokens": min(tier.output_tokens_per_request, total),
        "max_output_tokens_total": total,
    }
    # A live token reserves all its requests and its output budget (circle_usage): this one is counted so from now on.
    after = circle_usage.Usage(
        used.requests + token_limits["max_requests"], used.tokens + token_limits["max_output_tokens_total"]
    )
    return Budget(token_limits, limits, after, resets_at)


def circle_json(member: CircleMember, spent: Budget) -> dict:
    """The token answer's `circle`: which circle, the member's limits and their day with this token counted."""
    return {
        "id": member.circle_id,
        "name": member.circle.name,
        "limits": spent.limits.as_dict(),
        "usage_today": spent.usage_today.as_dict(),
        "resets_at": iso(spent.resets_at),
    }


def next_open_hour(hours, now: datetime) -> datetime | None:
    """The start of the first UTC hour after now that is not in `hours`; None when every hour is."""
    start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    for step in range(1, 25):
        at = start + timedelta(hours=step)
        if at.hour not in hours:
            return at
    return None


def refuse_in_circle_only_hours(node: Node, now: datetime) -> None:
    """A public or unlisted rig shared with circles may keep some UTC hours for them: a token that goes through no
    circle is refused then, 409 `circle_only_now` with when public tasters are taken again (`available_at`, and
    Retry-After; neither when every hour is kept)."""
    hours = set(node.circle_only_hours or [])
    if node.visibility == Node.Visibility.CIRCLE or now.astimezone(UTC).hour not in hours:
        return
    at = next_open_hour(hours, now)
    if at is None:
        raise ApiError(
            409,
            "circle_only_now",
            f"Rig {node.id!r} serves its circles only, at every hour of the day.",
            extra={"available_at": None},
        )
    retry = max(1, math.ceil((at - now).total_seconds()))
    raise ApiError(
        409,
        "circle_only_now",
        f"Rig {node.id!r} serves its circles only at this hour; it takes other tasters again at "
        f"{at:%H}:00 UTC ({iso(at)}).",
        extra={"available_at": iso(at), "retry_after_sec": retry},
        headers={"Retry-After": str(retry)},
    )

"""What each circle member used today and may still use: the numbers behind the owner's usage bars and the
per-member limits checked when a member asks for a token (issue 15).

A day is a UTC day, as for the tiers' quotas. Requests: what the rig's agent reported served for the member's
circle tokens issued today, except that a token still live counts all its `max_requests` (reserved: a usage
report arrives after the fact, so a member cannot outrun the limit with tokens minted before the reports came).
Tokens: prompt plus completion tokens reported served, except that a token still live counts at least its whole
output budget as completion (reserved, for the same reason: without it every token minted before the first report
would carry the whole day's tokens)."""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from django.db.models import Case, F, IntegerField, Sum, When
from django.db.models.functions import Greatest

from nodes.models import Circle, CircleMember
from tracker.models import TastingToken


@dataclass(frozen=True)
class Usage:
    requests: int
    tokens: int

    def as_dict(self) -> dict:
        return {"requests": self.requests, "tokens": self.tokens}


@dataclass(frozen=True)
class Limits:
    requests_per_day: int
    tokens_per_day: int
    source: str  # "member" when the member has limits of their own, else "circle"

    def as_dict(self) -> dict:
        return {"requests_per_day": self.requests_per_day, "tokens_per_day": self.tokens_per_day}


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)


def resets_at(now: datetime) -> datetime:
    """When today's circle usage resets: the next 00:00 UTC."""
    return day_start(now) + timedelta(days=1)


def limits_of(member: CircleMember, circle: Circle | None = None) -> Limits:
    """The member's daily limits: their own where the owner set them, the circle's defaults otherwise."""
    circle = circle or member.circle
    own = member.requests_per_day is not None or member.tokens_per_day is not None
    return Limits(
        member.requests_per_day if member.requests_per_day is not None else circle.default_requests_per_day,
        member.tokens_per_day if member.tokens_per_day is not None else circle.default_tokens_per_day,
        "member" if own else "circle",
    )


def usage_today(circle_id: str, contributor_ids, now: datetime) -> dict[str, Usage]:
    """contributor id → today's usage in this circle, for the given members (one query for any number)."""
    ids = list(contributor_ids)
    rows = (
        TastingToken.objects.filter(circle_id=circle_id, contributor_id__in=ids, issued_at__gte=day_start(now))
        .values("contributor_id")
        .annotate(
            requests=Sum(
                Case(
                    When(expires_at__gt=now, revoked_at__isnull=True, then=F("max_requests")),
                    default=F("requests_served"),
                    output_field=IntegerField(),
                )
            ),
            tokens=Sum(
                Case(
                    When(
                        expires_at__gt=now,
                        revoked_at__isnull=True,
                        then=F("prompt_tokens") + Greatest(F("completion_tokens"), F("max_output_tokens")),
                    ),
                    default=F("prompt_tokens") + F("completion_tokens"),
                    output_field=IntegerField(),
                )
            ),
        )
    )
    found = {r["contributor_id"]: Usage(r["requests"] or 0, r["tokens"] or 0) for r in rows}
    return {cid: found.get(cid, Usage(0, 0)) for cid in ids}

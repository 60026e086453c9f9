"""The two tiers' limits (from settings) and what a refusal says about them: when it resets and what earns more.

A token holds `max_requests` requests of up to `output_tokens_per_request` output tokens each. The JWT's
`max_output_tokens` is that per-request cap, as the wire contract has always said (an agent clamps each request's
`max_tokens` to it); `max_output_tokens_total`, their product, is the token's whole output budget. An agent that
knows only the first claim clamps each answer to the cap and may spend it `max_requests` times, which is the same
budget; one that knows both holds each request to the cap and the sum to the total. This module is the one place
on the tracker that computes either number (the claims, the token response's `limits`, the pages)."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings

from core.timefmt import iso

LIMITED, CONTRIBUTOR = "limited", "contributor"


@dataclass(frozen=True)
class Tier:
    name: str
    max_requests: int
    output_tokens_per_request: int
    tokens_per_day: int

    @property
    def max_output_tokens_total(self) -> int:
        """The token's whole output budget (the JWT's `max_output_tokens_total`)."""
        return self.max_requests * self.output_tokens_per_request

    def token_limits(self) -> dict:
        """What a token of this tier carries, as JWT claims and as the token response's `limits` (same names)."""
        return {
            "max_requests": self.max_requests,
            "max_output_tokens": self.output_tokens_per_request,
            "max_output_tokens_total": self.max_output_tokens_total,
        }

    def as_dict(self) -> dict:
        return {"tier": self.name, **self.token_limits(), "tokens_per_day": self.tokens_per_day}


def of(name: str) -> Tier:
    if name == CONTRIBUTOR:
        return Tier(
            CONTRIBUTOR,
            settings.CONTRIBUTOR_MAX_REQUESTS,
            settings.CONTRIBUTOR_MAX_OUTPUT_TOKENS,
            settings.CONTRIBUTOR_TOKENS_PER_DAY,
        )
    return Tier(
        LIMITED,
        settings.LIMITED_MAX_REQUESTS,
        settings.LIMITED_MAX_OUTPUT_TOKENS,
        settings.LIMITED_TOKENS_PER_DAY,
    )


def table() -> list[Tier]:
    return [of(LIMITED), of(CONTRIBUTOR)]


def contribute_url() -> str:
    return settings.SITE_URL.rstrip("/") + "/contribute/"


def how_to_earn_more(tier: str) -> str:
    """The sentence every 429 ends with: what would lift the limit the caller just met."""
    contributor = of(CONTRIBUTOR)
    if tier == CONTRIBUTOR:
        return (
            f"This is the contributor tier's limit ({contributor.tokens_per_day} tokens a day); "
            "it is the highest tier, and it resets as stated."
        )
    return (
        f"The contributor tier gives {contributor.tokens_per_day} tokens a day of {contributor.max_requests} "
        f"requests of up to {contributor.output_tokens_per_request} output tokens each: it is earned, not bought, "
        f"by sharing a rig that others taste (luckrig-node join) or timing from your own tastings with a "
        f"contributor key, up to a score of {settings.CONTRIBUTOR_THRESHOLD:g}. How: {contribute_url()}"
    )


def tier_of(contributor) -> str:
    """The tier a caller gets: from the server-side score only (None: anonymous)."""
    return CONTRIBUTOR if getattr(contributor, "score_tier", None) == CONTRIBUTOR else LIMITED


def rate_fields(contributor) -> dict:
    """What a per-address rate refusal of the token endpoint adds: the rate is the same for every tier, so the
    way up is the daily allowance."""
    tier = tier_of(contributor)
    return {
        "tier": tier,
        "earn_more": "This per-address rate is the same for every tier; wait for the time stated. "
        + how_to_earn_more(tier),
    }


def next_utc_midnight(now: datetime) -> datetime:
    return (now.astimezone(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def reset_fields(seconds: int, now: datetime, tier: str) -> dict:
    """The body fields every 429 carries beside Retry-After: when the limit lifts, and what would lift it."""
    return {
        "retry_after_sec": seconds,
        "resets_at": iso(now + timedelta(seconds=seconds)),
        "tier": tier,
        "earn_more": how_to_earn_more(tier),
    }

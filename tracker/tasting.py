"""Tasting tokens and the timing measurements tasters share back.

A token is an Ed25519-signed JWT for one node, verified offline by that node's agent. Its tier comes from the
server-side score only; quotas are per UTC day, counted in the database so that they hold across processes
and restarts. A member of a circle the rig is shared with gets a circle token instead, bounded by their daily
limits in that circle rather than the tier's quota (tracker.circle_tokens)."""

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.api_errors import ApiError
from nodes import liveness
from nodes import services as node_services
from nodes.access import get_visible_node
from nodes.models import Contributor, Node
from nodes.public_node import community_timing
from tracker import bans, circle_tokens, credentials, pubkeys, scores, signing, tiers
from tracker.keys import keyring
from tracker.models import QuotaBucket, TastingToken
from tracker.scoring import refresh_contributors

CAVEAT = (
    "Plain mode is TLS plus the node operator's promise not to log: the operator can read your prompt and the "
    "answer. Public-key mode keeps them out of ordinary logs and proxies, but the node still decrypts them."
)
PUBLIC_KEY_CAVEAT = (
    "Public-key mode: your prompt and the answer travel encrypted to this node's key, so proxies and the "
    "tracker never see them, but the node operator can read them inside the agent. Check the node key "
    "fingerprint out of band; otherwise the tracker could swap keys."
)
RELAYED_CAVEAT = (
    "Plain mode is TLS to the relay that carries this rig, plus the promises of the node operator and the relay "
    "operator not to log: both can read your prompt and the answer. Public-key mode keeps them out of the relay, "
    "ordinary logs and proxies, but the node still decrypts them."
)
RELAYED_PUBLIC_KEY_CAVEAT = (
    "Public-key mode: your prompt and the answer travel encrypted to this node's key, so the relay that carries "
    "this rig, proxies and the tracker never see them (the relay sees their sizes and timing), but the node "
    "operator can read them inside the agent. Check the node key fingerprint out of band; otherwise the tracker "
    "could swap keys."
)


def caveat(*, crypto_mode: str, reachability: str) -> str:
    """What a taster should know about who can read the tasting, said plainly (never "end-to-end")."""
    relayed = reachability == "relayed"
    if crypto_mode == "public-key":
        return RELAYED_PUBLIC_KEY_CAVEAT if relayed else PUBLIC_KEY_CAVEAT
    return RELAYED_CAVEAT if relayed else CAVEAT


@dataclass
class Issued:
    token: str
    jti: str
    expires_at: datetime
    crypto_mode: str
    tier: str
    # The token's claims max_requests, max_output_tokens and max_output_tokens_total (tiers.Tier.token_limits).
    token_limits: dict
    # The tier's daily quota as spent by this token; None for a circle token, which spends none.
    quota_used: int | None
    quota_limit: int | None
    node: Node
    user_public_key_fingerprint: str | None
    # The taster's own credential for timing uploads and publishing (shown once; only its digest is stored).
    upload_key: str = ""
    # A circle token's circle, limits and day (tracker.circle_tokens.circle_json); None for any other.
    circle: dict | None = None


def _seconds_to_utc_midnight(now: datetime) -> int:
    return max(1, math.ceil((tiers.next_utc_midnight(now) - now).total_seconds()))


def claim_quota(key: str, limit: int, now: datetime, tier: str = tiers.LIMITED) -> int:
    """Take one unit of today's quota for `key`; returns the new count or raises 429 `quota_exceeded`, which says
    when the quota resets and what would earn more.

    The conditional UPDATE is atomic in the database, so concurrent requests in any number of processes
    cannot take more than `limit`."""
    day = now.astimezone(UTC).date()
    bucket = QuotaBucket.objects.filter(key=key, day=day).first()
    if bucket is None:
        try:
            with transaction.atomic():
                bucket = QuotaBucket.objects.create(key=key, day=day, used=0)
        except IntegrityError:
            bucket = QuotaBucket.objects.get(key=key, day=day)
    if QuotaBucket.objects.filter(pk=bucket.pk, used__lt=limit).update(used=F("used") + 1) == 0:
        retry = _seconds_to_utc_midnight(now)
        who = "this address's" if tier == tiers.LIMITED else "your"
        raise ApiError(
            429,
            "quota_exceeded",
            f"{who.capitalize()} daily quota of {limit} {tier} tokens is used up; it resets at 00:00 UTC "
            f"(in {_duration(retry)}).",
            extra={"quota": {"used": limit, "limit": limit}, **tiers.reset_fields(retry, now, tier)},
            headers={"Retry-After": str(retry)},
        )
    return QuotaBucket.objects.values_list("used", flat=True).get(pk=bucket.pk)


def _duration(seconds: int) -> str:
    hours, minutes = divmod(max(60, seconds) // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def clamp_ttl(ttl_sec: int | None) -> int:
    ttl = settings.TOKEN_TTL_DEFAULT_SEC if ttl_sec is None else ttl_sec
    return max(settings.TOKEN_TTL_MIN_SEC, min(settings.TOKEN_TTL_MAX_SEC, ttl))


@transaction.atomic
def issue_token(
    *,
    node_id: str,
    crypto_mode: str,
    user_public_key: str | None,
    ttl_sec: int | None,
    contributor: Contributor | None,
    ip_hash: str,
    circle_id: str | None = None,
    now: datetime | None = None,
) -> Issued:
    now = now or timezone.now()
    # A circle rig only for its owner and members (404 anonymous, 403 `not_in_circle` another contributor).
    node = get_visible_node(node_id, contributor)
    status = node_services.current_status(node, now)
    if not liveness.is_alive(status):
        raise ApiError(
            409,
            "node_unavailable",
            f"Node {node.id!r} is {status}: its agent has not reported recently. Try again later.",
            extra={"status": status},
        )

    user_fp = user_pem = None
    if crypto_mode == TastingToken.CryptoMode.PUBLIC_KEY:
        if not node.node_public_key:
            raise ApiError(
                400,
                "public_key_mode_unavailable",
                f'Node {node.id!r} has no registered public key; use crypto_mode "plain".',
            )
        if not user_public_key:
            raise ApiError(
                400,
                "invalid_public_key",
                "user_public_key: required in public-key mode.",
                extra={"field": "user_public_key"},
            )
        try:
            user_pem, user_fp = pubkeys.validate(user_public_key)
        except pubkeys.InvalidPublicKey as exc:
            raise ApiError(
                400, "invalid_public_key", f"user_public_key: {exc}.", extra={"field": "user_public_key"}
            ) from None

    # The address's ban holds whatever key is sent: a fresh contributor key costs nothing.
    bans.refuse_writer(contributor_id=contributor.id if contributor is not None else None, ip_hash=ip_hash)
    tier = (
        TastingToken.Tier.CONTRIBUTOR
        if contributor is not None and contributor.score_tier == "contributor"
        else TastingToken.Tier.LIMITED
    )
    limits = tiers.of(tier)
    member = circle_tokens.membership_for(node, contributor, circle_id)
    circle = None
    if member is not None:
        # The member's day in the circle replaces the tier's quota; the token is cut to what is left of it.
        spent = circle_tokens.budget(member, limits, now)
        token_limits, used, per_day = spent.token_limits, None, None
        circle = circle_tokens.circle_json(member, spent)
    else:
        circle_tokens.refuse_in_circle_only_hours(node, now)
        token_limits, per_day = limits.token_limits(), limits.tokens_per_day
        # Limited tokens are counted per IP even for a signed-in contributor, so that minting fresh identities
        # does not multiply the anonymous quota.
        quota_key = f"c:{contributor.id}" if tier == TastingToken.Tier.CONTRIBUTOR else f"ip:{ip_hash}"
        used = claim_quota(quota_key, per_day, now, tier)

    ttl = clamp_ttl(ttl_sec)
    expires_at = now + timedelta(seconds=ttl)
    jti = secrets.token_urlsafe(18)
    subject = contributor.id if contributor is not None else f"anon:{ip_hash[:16]}"
    claims = {
        "iss": settings.SITE_URL,
        "aud": node.id,
        "sub": subject,
        "jti": jti,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()) - 5,
        "exp": int(expires_at.timestamp()),
        "tier": tier,
        "crypto_mode": crypto_mode,
        # max_output_tokens: the per-request cap; max_output_tokens_total: the whole budget (tracker/tiers.py).
        **token_limits,
    }
    if member is not None:
        # What the rig's agent checks against the circles it serves (a circle rig refuses a token without one).
        claims["circle"] = member.circle_id
    if user_pem:
        claims["user_public_key"] = user_pem
        claims["user_public_key_fingerprint"] = user_fp
    ring = keyring()
    token = signing.sign(ring, claims)
    # Not in the claims: the node sees the token, and must not be able to speak for the taster with it.
    upload_key = credentials.new_secret(credentials.UPLOAD_PREFIX)
    TastingToken.objects.create(
        jti=jti,
        kid=ring.current.kid,
        node=node,
        contributor=contributor,
        subject=subject,
        ip_hash=ip_hash,
        tier=tier,
        crypto_mode=crypto_mode,
        is_owner_token=contributor is not None and contributor.id == node.owner_id,
        issued_at=now,
        expires_at=expires_at,
        max_requests=token_limits["max_requests"],
        # The row keeps the token's whole output budget: what its usage reports and timing uploads are bounded by
        # (at most what the column holds on PostgreSQL; a bigger budget is unbounded in practice).
        max_output_tokens=min(token_limits["max_output_tokens_total"], 2**31 - 1),
        user_public_key_fingerprint=user_fp,
        upload_key_hash=credentials.digest(upload_key),
        circle_id=member.circle_id if member is not None else None,
        via_circle=member is not None,
    )
    return Issued(
        token,
        jti,
        expires_at,
        crypto_mode,
        tier,
        token_limits,
        used,
        per_day,
        node,
        user_fp,
        upload_key,
        circle,
    )


TIMING_FIELDS = (
    "tok_per_sec",
    "ttft_ms",
    "network_ttft_ms",
    "proxy_ttft_ms",
    "generation_sec",
    "queue_wait_sec",
    "output_tokens",
    "tokenizer",
    "limited_output_truncated",
    "mode",
)


@transaction.atomic
def record_timing(*, token: TastingToken, data: dict, now: datetime | None = None) -> tuple[dict, bool]:
    """Store a taster's timing sample; returns the node's community timing and whether the sample counts yet."""
    now = now or timezone.now()
    # The taster's own view: a member uploads timing of a circle rig they tasted.
    node = get_visible_node(token.node_id, token.contributor)
    bans.refuse_if_banned(("contributor", token.contributor_id))
    if data["node_id"] != token.node_id:
        raise ApiError(403, "wrong_node", "This token was issued for another node.", extra={"field": "node_id"})
    field = scores.implausible_field(data, token.max_output_tokens)
    if field is not None:
        raise ApiError(400, "implausible", f"{field} is outside what any rig can do.", extra={"field": field})
    # Counted at once when the node already reported using the token (or a relay saw it served); otherwise it
    # waits for that proof (tracker.scoring.tokens_used), so that timing for tokens that never reached a rig
    # counts for nothing.
    used = token.requests_served > 0 or token.relay_requests > 0
    added = node_services.add_taster_sample(
        node=node,
        jti=token.jti,
        contributor_id=token.contributor_id,
        now=now,
        counted=used,
        **{k: data[k] for k in TIMING_FIELDS if k in data},
    )
    if not added:
        raise ApiError(409, "already_uploaded", "Timing for this token was already uploaded.")
    node_services.refresh_timing(node, uploaded_at=now)
    if token.contributor_id:
        node_services.count_timing_shared(token.contributor_id)
        refresh_contributors({token.contributor_id})
    return community_timing_of(node), used


def community_timing_of(node: Node) -> dict:
    """The `community_timing` object of PublicNode, from a node whose timing fields are current."""
    return community_timing({f: getattr(node, f) for f in node_services.TIMING_FIELDS})

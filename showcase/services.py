"""Publishing a replay, and the moderators' takedown and restore of one. Each is `@transaction.atomic` with
keyword-only arguments; the moderation decisions append their audit row through moderation.services.record."""

import logging
import re
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from luckrig_site.api_errors import ApiError
from moderation import services as moderation
from moderation.models import FilterRule, ModerationAction
from nodes.models import Node
from showcase.models import Replay
from tracker import bans
from tracker.models import TastingToken

log = logging.getLogger("luckrig.showcase")

# The replay's own clock may run a little ahead of the tracker's, and a replay cannot predate its token.
CLOCK_SKEW = timedelta(minutes=10)
# ModerationAction.subject_kind for replays (AbuseReport calls the same subject `content_id`).
SUBJECT_KIND = "replay"


def filter_hit(texts: dict[str, str]) -> tuple[str, FilterRule] | None:
    """The first (field, rule) among the enabled filter rules that matches one of the texts, or None. A rule
    that no longer compiles (saved around the admin's validation) is skipped, as agents skip it."""
    compiled = []
    for rule in FilterRule.objects.filter(enabled=True):
        try:
            compiled.append((rule, rule.regex()))
        except (re.error, OverflowError, RecursionError):
            log.warning("filter rule %s does not compile; skipped", rule.id)
    for field, text in texts.items():
        for rule, regex in compiled:
            if text and regex.search(text):
                return field, rule
    return None


@transaction.atomic
def publish_replay(*, token: TastingToken, data: dict, ip_hash: str, now: datetime | None = None) -> Replay:
    """Publish the replay of the tasting that `token` paid for: its node must still be reachable, the holder
    and the address not banned, the text clear of every enabled filter rule; one replay per token."""
    now = now or timezone.now()
    node = Node.objects.visible().filter(pk=token.node_id).first()
    if node is None:
        raise ApiError(404, "node_not_found", f"No node {token.node_id!r}.")
    bans.refuse_if_banned(("contributor", token.contributor_id), ("ip", ip_hash), ("ip", token.ip_hash))
    if data["node_id"] != token.node_id:
        raise ApiError(403, "wrong_node", "This token was issued for another node.", extra={"field": "node_id"})
    created_at = data["created_at"]
    if not token.issued_at - CLOCK_SKEW <= created_at <= now + CLOCK_SKEW:
        raise ApiError(
            400,
            "invalid_field",
            "created_at: must lie between the token's issue time and now",
            extra={"field": "created_at"},
        )
    if Replay.objects.filter(jti=token.jti).exists():
        raise ApiError(409, "already_published", "A replay of this tasting was already published.")
    texts = {"prompt": data["prompt"], "system": data.get("system") or "", "response": data["response"]}
    hit = filter_hit(texts)
    if hit is not None:
        field, rule = hit
        raise ApiError(
            422,
            "content_filtered",
            f"The {field} matches filter rule {rule.id!r}; this replay cannot be published.",
            extra={"field": field, "rule_id": rule.id},
        )
    try:
        with transaction.atomic():
            return Replay.objects.create(
                node=node,
                jti=token.jti,
                contributor_id=token.contributor_id,
                ip_hash=ip_hash,
                created_at=created_at,
                published_at=now,
                prompt=data["prompt"],
                system=texts["system"],
                response=data["response"],
                chunk_timestamps=data["chunk_timestamps"],
                chunks=data.get("chunks") or [],
                timing=data["timing"],
            )
    except IntegrityError:  # the same token, published twice at once
        raise ApiError(409, "already_published", "A replay of this tasting was already published.") from None


def get_visible_replay(replay_id: str) -> Replay:
    """A replay anyone may read (not taken down, its node reachable), else 404 `replay_not_found`."""
    replay_id = str(replay_id)[:20]
    replay = None if "\x00" in replay_id else Replay.objects.visible().filter(pk=replay_id).first()
    if replay is None:
        raise ApiError(404, "replay_not_found", f"No replay {replay_id!r}.")
    return replay


@transaction.atomic
def take_down_replay(*, replay: Replay, moderator: moderation.Moderator, reason: str) -> ModerationAction:
    """Notice and takedown: the replay disappears from the API and the website; the row stays for the record."""
    if not Replay.objects.filter(pk=replay.pk, taken_down_at__isnull=True).update(taken_down_at=timezone.now()):
        raise ValueError("this replay is already taken down")
    return moderation.record(moderator, ModerationAction.Action.TAKE_DOWN, SUBJECT_KIND, replay.pk, reason)


@transaction.atomic
def restore_replay(*, replay: Replay, moderator: moderation.Moderator, reason: str) -> ModerationAction:
    if not Replay.objects.filter(pk=replay.pk, taken_down_at__isnull=False).update(taken_down_at=None):
        raise ValueError("this replay is not taken down")
    return moderation.record(moderator, ModerationAction.Action.RESTORE, SUBJECT_KIND, replay.pk, reason)

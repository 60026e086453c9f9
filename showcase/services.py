"""Publishing a replay, and the moderators' takedown and restore of one. Each is `@transaction.atomic` with
keyword-only arguments; the moderation decisions append their audit row through moderation.services.record."""

import logging
import re
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.api_errors import ApiError
from moderation import services as moderation
from moderation.models import FilterRule, ModerationAction
from nodes.access import get_visible_node
from nodes.models import Node
from showcase.models import Replay, ReplaySet
from tracker import bans, credentials
from tracker.auth import TIMING_UPLOAD_GRACE_SEC
from tracker.models import TastingToken

log = logging.getLogger("luckrig.showcase")

# The replay's own clock may run a little ahead of the tracker's, and a replay cannot predate its token.
CLOCK_SKEW = timedelta(minutes=10)
# ModerationAction.subject_kind for replays (AbuseReport calls the same subject `content_id`).
SUBJECT_KIND = "replay"
SET_SUBJECT_KIND = "replay_set"


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
    and the address not banned, the text clear of every enabled filter rule; one replay per token. A circle
    rig's tastings are never published (403 `circle_rig_not_public`): a replay is public, the rig is not."""
    now = now or timezone.now()
    node = get_visible_node(token.node_id, token.contributor)
    if node.visibility == Node.Visibility.CIRCLE:
        raise ApiError(
            403,
            "circle_rig_not_public",
            f"Rig {node.id!r} is shared with its circles only: replays of its tastings are not published.",
        )
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
    messages = data.get("messages") or []
    texts.update({f"messages[{i}].content": m["content"] for i, m in enumerate(messages)})
    _refuse_filtered(texts)
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
                messages=messages,
            )
    except IntegrityError:  # the same token, published twice at once
        raise ApiError(409, "already_published", "A replay of this tasting was already published.") from None


def _refuse_filtered(texts: dict[str, str], where: str = "") -> None:
    """422 `content_filtered` naming the text (`members[1].response` for a set's member) and the rule."""
    hit = filter_hit(texts)
    if hit is not None:
        field, rule = hit
        raise ApiError(
            422,
            "content_filtered",
            f"The {where}{field} matches filter rule {rule.id!r}; this replay cannot be published.",
            extra={"field": where + field, "rule_id": rule.id},
        )


def _token_of_upload_key(value: str, where: str) -> TastingToken:
    """The tasting behind an upload key sent in a body (a set names several, one per member): checked as
    tracker.auth.UploadKeyAuthentication checks the Bearer one, with the same refusals."""
    token = None
    if isinstance(value, str) and value.startswith(credentials.UPLOAD_PREFIX) and len(value) <= 100:
        token = TastingToken.objects.filter(upload_key_hash=credentials.digest(value)).first()
    if token is None or not credentials.matches(value, token.upload_key_hash):
        raise ApiError(
            401, "invalid_credential", f"{where}: not the upload key of a tasting (lru_...).", extra={"field": where}
        )
    bans.refuse_if_banned(("contributor", token.contributor_id), ("ip", token.ip_hash))
    if token.revoked_at is not None:
        raise ApiError(401, "unauthorized", f"{where}: this tasting token was revoked.", extra={"field": where})
    if timezone.now() > token.expires_at + timedelta(seconds=TIMING_UPLOAD_GRACE_SEC):
        raise ApiError(
            401, "unauthorized", f"{where}: this upload key expired a day after its token.", extra={"field": where}
        )
    return token


@transaction.atomic
def group_replays(*, members: list[dict], ip_hash: str, now: datetime | None = None) -> ReplaySet:
    """Rig against rig: keep already-published replays of one prompt together as one set. Each member is named
    by its id and proved by the upload key of the tasting it records (the key it was published with), so that
    nobody can put someone else's tasting in a set. The texts pass today's filter rules again; a replay joins
    at most one set; all members were asked the same prompt (and system prompt)."""
    bans.refuse_if_banned(("ip", ip_hash))
    replays: list[Replay] = []
    for index, member in enumerate(members):
        where = f"members[{index}]"
        token = _token_of_upload_key(member["upload_key"], where + ".upload_key")
        # Locked: two requests grouping the same replay at once cannot both succeed.
        replay = Replay.objects.visible().select_for_update(of=("self",)).filter(pk=member["replay_id"]).first()
        if replay is None:
            raise ApiError(
                404, "replay_not_found", f"{where}: no replay {member['replay_id']!r}.", extra={"field": where}
            )
        if replay.jti != token.jti:
            raise ApiError(
                403,
                "not_publisher",
                f"{where}: this upload key is not the one of the tasting that replay records.",
                extra={"field": where},
            )
        if replay.replay_set_id is not None:
            raise ApiError(
                409,
                "already_in_set",
                f"{where}: replay {replay.id} is already in set {replay.replay_set_id}.",
                extra={"field": where},
            )
        first = replays[0] if replays else replay
        # The conversation before the prompt is part of what was asked: the same last question after different
        # earlier turns is a different prompt.
        if (replay.prompt, replay.system, replay.messages) != (first.prompt, first.system, first.messages):
            raise ApiError(
                400,
                "prompts_differ",
                f"{where}: a set holds answers to one prompt; this replay's prompt, system prompt or earlier turns "
                "differ.",
                extra={"field": where},
            )
        texts = {"prompt": replay.prompt, "system": replay.system, "response": replay.response}
        # The earlier turns too, as publish_replay checks them: the set's page shows them.
        texts.update({f"messages[{i}].content": m.get("content", "") for i, m in enumerate(replay.messages)})
        _refuse_filtered(texts, where + ".")
        replays.append(replay)
    replay_set = ReplaySet.objects.create(published_at=now or timezone.now(), ip_hash=ip_hash)
    for position, replay in enumerate(replays):
        replay.replay_set, replay.set_position = replay_set, position
        replay.save(update_fields=["replay_set", "set_position"])
    return replay_set


def get_visible_replay_set(set_id: str) -> tuple[ReplaySet, list[Replay]]:
    """A set anyone may read and its visible members in order, else 404 `replay_set_not_found` (also when
    every member is gone: a set with nothing to play is no page)."""
    set_id = str(set_id)[:20]
    replay_set = None if "\x00" in set_id else ReplaySet.objects.visible().filter(pk=set_id).first()
    members = list(replay_set.replays.visible().order_by("set_position")) if replay_set else []
    if not members:
        raise ApiError(404, "replay_set_not_found", f"No replay set {set_id!r}.")
    return replay_set, members


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


@transaction.atomic
def take_down_replay_set(*, replay_set: ReplaySet, moderator: moderation.Moderator, reason: str) -> ModerationAction:
    """The set's page and list entry disappear, and so does each of its replays (an audit row for each): what
    was reported is what they show together."""
    if not ReplaySet.objects.filter(pk=replay_set.pk, taken_down_at__isnull=True).update(taken_down_at=timezone.now()):
        raise ValueError("this replay set is already taken down")
    for replay in replay_set.replays.filter(taken_down_at__isnull=True):
        take_down_replay(replay=replay, moderator=moderator, reason=reason)
    return moderation.record(moderator, ModerationAction.Action.TAKE_DOWN, SET_SUBJECT_KIND, replay_set.pk, reason)


@transaction.atomic
def restore_replay_set(*, replay_set: ReplaySet, moderator: moderation.Moderator, reason: str) -> ModerationAction:
    """Brings the set back with the replays it took down (a replay taken down on its own stays down only if it
    was taken down before the set: moderators restore that one by itself)."""
    since = ReplaySet.objects.filter(pk=replay_set.pk).values_list("taken_down_at", flat=True).first()
    if since is None or not ReplaySet.objects.filter(pk=replay_set.pk, taken_down_at=since).update(taken_down_at=None):
        raise ValueError("this replay set is not taken down")
    for replay in replay_set.replays.filter(taken_down_at__gte=since):
        restore_replay(replay=replay, moderator=moderator, reason=reason)
    return moderation.record(moderator, ModerationAction.Action.RESTORE, SET_SUBJECT_KIND, replay_set.pk, reason)

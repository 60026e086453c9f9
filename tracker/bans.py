"""Bans, as access control: whether a node, a contributor or an IP hash is banned right now, the 403 that says
so, and what a ban does to the rows it touches. Creating and lifting bans is the moderation app's workflow.

A node leaves every public surface (list, detail, showcase, contributions, websockets, tokens) through one
column, `Node.banned_until`, which every node query filters on: the end of the longest active ban on the node
itself or on its owner (far future for a ban for good). A ban that expires stops applying by itself, since
the comparison is with the current time. `refresh_node_ban` keeps the column for one node (moderation calls it
for node bans); a contributor ban is applied to all of that contributor's nodes by `apply_contributor_ban`, which
the moderation workflow calls when it records one (moderation.services.ban); `reconcile`, which the workflow
calls when it lifts one and every monitor cycle runs, brings every row in line with the active bans."""

from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.api_errors import ApiError
from core.timefmt import iso
from nodes import queue_feed
from nodes import services as node_services
from nodes.models import Node
from tracker import agent_link, scoring
from tracker.models import Ban, TastingToken

FOREVER = datetime(9999, 12, 31, tzinfo=UTC)


def _active(now: datetime):
    return Ban.objects.filter(lifted_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


def active(kind: str, value: str, now: datetime | None = None) -> Ban | None:
    """The active ban on this subject that ends last (a ban for good first), or None."""
    bans = _active(now or timezone.now()).filter(kind=kind, value=value)
    forever = bans.filter(expires_at__isnull=True).order_by("-created_at").first()
    return forever or bans.order_by("-expires_at").first()


def banned_contributors(contributor_ids, now: datetime | None = None) -> set[str]:
    """Which of these contributors are banned right now (one query for any number)."""
    active_bans = _active(now or timezone.now()).filter(kind=Ban.Kind.CONTRIBUTOR, value__in=list(contributor_ids))
    return set(active_bans.values_list("value", flat=True))


def _forbidden(ban: Ban) -> ApiError:
    return ApiError(
        403,
        "banned",
        f"This {ban.kind} is banned: {ban.reason}",
        extra={"ban": {"kind": ban.kind, "reason": ban.reason, "expires_at": iso(ban.expires_at)}},
    )


def refuse_if_banned(*checks: tuple[str, str | None]) -> None:
    """403 `banned` with the ban's reason and end, for the first (kind, value) pair under an active ban."""
    for kind, value in checks:
        if not value:
            continue
        ban = active(kind, value)
        if ban is not None:
            raise _forbidden(ban)


def refuse_writer(*, contributor_id: str | None = None, ip_hash: str | None = None) -> None:
    """The check for every write a person makes (nodes, tokens, timing, replays): the contributor's ban, and the
    address's whatever key is sent, since a fresh contributor key costs nothing."""
    refuse_if_banned(("contributor", contributor_id), ("ip", ip_hash))


def refuse_hidden_node(node: Node) -> None:
    """For the agent's own paths (heartbeats, usage, flags, tunnel tickets, rules, the link): a taken-down node
    gets 403 `taken_down`, a banned one 403 `banned` with its ban (the node's own, or its owner's). Reads only
    the node row: `banned_until` says whether a ban needs looking up. The refusal carries the node's revoked
    jtis, as a heartbeat answer would, so that an agent can still stop serving the tokens it held."""
    now = timezone.now()
    if node.taken_down_at is not None:
        raise ApiError(
            403,
            "taken_down",
            "This node was taken down by a moderator; its agent is refused until it is restored "
            "(see GET /api/abuse-contact).",
            extra={"revoked_jtis": _revoked(node, now)},
        )
    if node.banned_until is not None and node.banned_until > now:
        ban = active(Ban.Kind.NODE, node.pk, now) or active(Ban.Kind.CONTRIBUTOR, node.owner_id, now)
        if ban is not None:
            refusal = _forbidden(ban)
            refusal.extra["revoked_jtis"] = _revoked(node, now)
            raise refusal


def _revoked(node: Node, now: datetime) -> list[str]:
    tokens = TastingToken.objects.filter(node_id=node.pk, revoked_at__isnull=False, expires_at__gt=now)
    return list(tokens.values_list("jti", flat=True)[:1000])


def _ends(kind: str, values, now: datetime) -> dict[str, datetime]:
    """subject → the end of its longest active ban (FOREVER for a ban for good)."""
    ends: dict[str, datetime] = {}
    for value, expires_at in _active(now).filter(kind=kind, value__in=list(values)).values_list("value", "expires_at"):
        end = expires_at or FOREVER
        ends[value] = max(end, ends.get(value, end))
    return ends


def _refresh(nodes: list[Node], now: datetime) -> list[Node]:
    """Store on each node the end of the longest active ban on it or its owner; returns the nodes whose
    visibility changed (a past end counts as none)."""
    node_ends = _ends(Ban.Kind.NODE, {n.pk for n in nodes}, now)
    owner_ends = _ends(Ban.Kind.CONTRIBUTOR, {n.owner_id for n in nodes}, now)
    changed, flipped = [], []
    for node in nodes:
        ends = [e for e in (node_ends.get(node.pk), owner_ends.get(node.owner_id)) if e is not None]
        until = max(ends) if ends else None
        if until != node.banned_until:
            was_hidden = node.banned_until is not None and node.banned_until > now
            node.banned_until = until
            changed.append(node)
            if (until is not None) != was_hidden:
                flipped.append(node)
    node_services.set_banned_until(changed)
    return flipped


def refresh_node_ban(node_id: str) -> None:
    """Store the end of the longest active ban on the node or its owner on the row."""
    _refresh(list(Node.objects.filter(pk=node_id).only("id", "owner_id", "banned_until")), timezone.now())


def revoke_outstanding(tokens, now: datetime) -> int:
    """Revoke outstanding tokens and, once committed, push the jtis down each node's agent link (the agents
    also find them in their next heartbeat answer), as moderation does for a node ban. Also what removing or
    pausing a circle member does to their circle tokens (tracker.circle_services)."""
    outstanding = tokens.filter(revoked_at__isnull=True, expires_at__gt=now)
    per_node: dict[str, list[str]] = {}
    for jti, node_id in outstanding.values_list("jti", "node_id")[:5000]:
        per_node.setdefault(node_id, []).append(jti)
    revoked = outstanding.update(revoked_at=now)
    for node_id, jtis in per_node.items():
        transaction.on_commit(
            lambda node_id=node_id, jtis=jtis: agent_link.push(node_id, {"type": "revoke", "jtis": jtis})
        )
    return revoked


def _relist(nodes: list[Node]) -> None:
    """Nodes left or rejoined the public surfaces: rarity of their combinations, scores, showcase; the queue
    subscribers of the ones that left are closed once this is committed."""
    if not nodes:
        return
    scoring.refresh_listing({n.combo_key for n in nodes})
    scoring.refresh_contributors({n.owner_id for n in nodes})
    for node in nodes:
        if node.banned_until is not None:
            transaction.on_commit(lambda node_id=node.pk: queue_feed.announce_removal(node_id))


_FIELDS = ("id", "owner_id", "banned_until", "combo_key")


@transaction.atomic
def apply_contributor_ban(contributor_id: str) -> int:
    """A contributor was banned: their nodes leave every surface at once, and the tokens they hold or that were
    issued for their nodes stop working (as for a node ban). Returns the number of tokens revoked."""
    now = timezone.now()
    _relist(_refresh(list(Node.objects.filter(owner_id=contributor_id).only(*_FIELDS)), now))
    if active(Ban.Kind.CONTRIBUTOR, contributor_id, now) is None:
        return 0
    return revoke_outstanding(
        TastingToken.objects.filter(Q(contributor_id=contributor_id) | Q(node__owner_id=contributor_id)), now
    )


@transaction.atomic
def reconcile(now: datetime | None = None) -> int:
    """Bring every node's `banned_until` in line with the active bans: a lifted or changed ban (a contributor
    unban in particular) shows here. Reads the active bans and the few rows they touch; returns how many nodes
    joined or left the public surfaces."""
    now = now or timezone.now()
    bans = _active(now).filter(kind__in=[Ban.Kind.NODE, Ban.Kind.CONTRIBUTOR]).values_list("kind", "value")
    node_ids = {v for k, v in bans if k == Ban.Kind.NODE}
    owner_ids = {v for k, v in bans if k == Ban.Kind.CONTRIBUTOR}
    touched = Node.objects.filter(
        Q(banned_until__gt=now) | Q(pk__in=list(node_ids)) | Q(owner_id__in=list(owner_ids))
    ).only(*_FIELDS)
    flipped = _refresh(list(touched), now)
    _relist(flipped)
    return len(flipped)

"""Workflows over contributors and nodes: create a contributor; register, update and delete a node for its
owner (bans and credentials here, the row itself through nodes.registry); take heartbeats and usage reports from
agents (the handlers that validate and answer them are tracker.agent_messages). Scores live in tracker.scoring.
It may import nodes; it must not import moderation or showcase."""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.api_errors import ApiError
from nodes import queue_feed, registry
from nodes import services as node_services
from nodes.access import get_visible_node
from nodes.models import CircleMember, Contributor, Node
from tracker import bans, credentials, pubkeys, scores
from tracker.circle_push import circle_policy, push_circle_policy
from tracker.models import Counter, TastingToken, UsageReport
from tracker.scoring import refresh_contributors, refresh_listing, refresh_scores, refresh_taster_credit, tokens_used

# --- contributors ---------------------------------------------------------------------------------------


def create_contributor(*, handle: str | None, ip_hash: str | None = None) -> tuple[Contributor, str]:
    """A new identity: no e-mail, no password. Returns the row and the key, which is shown only once."""
    bans.refuse_if_banned(("ip", ip_hash))
    key = credentials.new_secret(credentials.CONTRIBUTOR_PREFIX)
    try:
        with transaction.atomic():
            contributor = node_services.add_contributor(
                contributor_id=credentials.new_id("c_"),
                handle=handle or None,
                key_hash=credentials.digest(key),
                score_components=dict.fromkeys(scores.COMPONENTS, 0.0),
            )
    except IntegrityError:
        raise ApiError(
            409, "handle_taken", f"The handle {handle!r} is taken; choose another.", extra={"field": "handle"}
        ) from None
    return contributor, key


# --- node registry --------------------------------------------------------------------------------------


def _checked_public_key(data: dict) -> dict:
    """`node_public_key` validated, with its fingerprint beside it (both None to remove the key)."""
    if "node_public_key" not in data:
        return data
    data = dict(data)
    if data["node_public_key"]:
        try:
            data["node_public_key"], data["node_public_key_fingerprint"] = pubkeys.validate(data["node_public_key"])
        except pubkeys.InvalidPublicKey as exc:
            raise ApiError(
                400,
                "invalid_public_key",
                f"node_public_key: {exc}.",
                extra={"field": "node_public_key"},
            ) from None
    else:
        data["node_public_key"] = data["node_public_key_fingerprint"] = None
    return data


def _checked_circles(owner_id: str, data: dict) -> dict:
    """`circles` without repeats, each a circle the node's owner is an active member of (owner or not), else 403
    `not_in_circle` naming the field. An unknown id reads the same: whether a circle exists is not told."""
    if "circles" not in data:
        return data
    wanted = list(dict.fromkeys(data["circles"]))
    mine = set(
        CircleMember.objects.filter(
            contributor_id=owner_id, status=CircleMember.Status.ACTIVE, circle_id__in=wanted
        ).values_list("circle_id", flat=True)
    )
    for circle_id in wanted:
        if circle_id not in mine:
            raise ApiError(
                403,
                "not_in_circle",
                f"circles: the node's owner is not an active member of circle {circle_id!r}.",
                extra={"field": "circles"},
            )
    return {**data, "circles": wanted}


@transaction.atomic
def register_node(*, owner: Contributor, data: dict) -> tuple[Node, str]:
    """A new node owned by `owner`; returns it and its node secret (shown once). Without an endpoint_url the
    node is relayed."""
    bans.refuse_if_banned(("contributor", owner.id))
    data = _checked_circles(owner.id, _checked_public_key(data))
    secret = credentials.new_secret(credentials.NODE_PREFIX)
    node = registry.create_node(owner_id=owner.id, secret_hash=credentials.digest(secret), data=data)
    refresh_listing({node.combo_key})
    refresh_scores([node.id])
    node.refresh_from_db()
    return node, secret


CIRCLE_FIELDS = {"visibility", "circles", "circle_only_hours"}


@transaction.atomic
def update_node(*, node: Node, data: dict) -> Node:
    """Change what the owner may change (nodes.registry.change_node says what `endpoint_url` and `health_url`
    do), then recount what the change moves: rarity of the old and new combinations, scores, showcase. A circle
    rig is not made public or unlisted here: that is publish_node's, an act of its own (409 `publish_required`),
    so that no edit of other fields can widen who reaches it by mistake."""
    if node.visibility == Node.Visibility.CIRCLE and data.get("visibility", node.visibility) != node.visibility:
        raise ApiError(
            409,
            "publish_required",
            f"Rig {node.id!r} is shared with its circles only; making it {data['visibility']} is its own act: "
            f"use POST /api/nodes/{node.id}/publish.",
            extra={"field": "visibility"},
        )
    return _change(node, _checked_circles(node.owner_id, _checked_public_key(data)))


@transaction.atomic
def publish_node(*, node: Node, visibility: str) -> Node:
    """Make a rig public or unlisted (from `circle`, or between the two). The circles it is shared with stay:
    their members keep going first in its queue (friends first; public tasters fill idle time)."""
    return _change(node, {"visibility": visibility})


def _change(node: Node, data: dict) -> Node:
    """The row changed and what follows from it: recounts, and when who may reach the rig changed, its agent is
    told at once, a rig that became a circle rig leaves the public queue views, and the tokens issued through a
    circle it is no longer shared with are revoked."""
    touches_circles = bool(CIRCLE_FIELDS & set(data))
    before = circle_policy(node.pk) if touches_circles else None
    node, old_combo = registry.change_node(node=node, data=data)
    refresh_listing({old_combo, node.combo_key})
    refresh_scores([node.id])
    node.refresh_from_db()
    after = circle_policy(node.pk) if touches_circles else None
    if touches_circles and after != before:
        push_circle_policy(node)
        # Tokens issued through a circle the rig is no longer shared with stop working, as a removed member's do:
        # an agent whose operator pinned that circle would otherwise go on taking them.
        dropped = set(before["circles"]) - set(after["circles"])
        if dropped:
            bans.revoke_outstanding(TastingToken.objects.filter(node=node, circle_id__in=dropped), timezone.now())
        if before["visibility"] != Node.Visibility.CIRCLE and node.visibility == Node.Visibility.CIRCLE:
            transaction.on_commit(lambda: queue_feed.announce_removal(node.pk))
    return node


@transaction.atomic
def delete_node(*, node: Node) -> None:
    combo, owner_id = node.combo_key, node.owner_id
    registry.delete_node(node)
    refresh_listing({combo})
    refresh_contributors({owner_id})


def get_node_for_owner(contributor: Contributor, node_id: str) -> Node:
    """The one access helper for owner-only node operations: 403 `banned` for a banned contributor (whose nodes
    are hidden: they would otherwise read as unknown), 404 when unknown, 403 `not_owner` otherwise."""
    bans.refuse_if_banned(("contributor", contributor.id))
    node = get_visible_node(node_id, contributor)  # the owner's circle rigs included
    if node.owner_id != contributor.id:
        raise ApiError(403, "not_owner", "Only the node's owner may change or delete it.")
    return node


# --- agents: heartbeats and usage -----------------------------------------------------------------------


def revoked_jtis(node: Node, now: datetime) -> list[str]:
    return list(
        TastingToken.objects.filter(node=node, revoked_at__isnull=False, expires_at__gt=now).values_list(
            "jti", flat=True
        )[:1000]
    )


def filter_rules_version() -> int:
    """The version of the published filter rules: bumped by the moderation app on every rule edit."""
    return Counter.objects.filter(name="filter_rules").values_list("value", flat=True).first() or 0


@transaction.atomic
def record_heartbeat(
    *,
    node: Node,
    queue: dict,
    models: list[str],
    agent_version: str,
    telemetry: dict,
    model_identity: dict | None = None,
    now: datetime | None = None,
) -> dict:
    """Store an agent's heartbeat (nodes.services) and answer with what the agent must know: its status, the
    filter rules version, the tokens revoked for it, and its circle policy (visibility, circles, circle-only
    hours: tracker.circle_push)."""
    now = now or timezone.now()
    first = node_services.record_heartbeat(
        node=node,
        queue=queue,
        models=models,
        agent_version=agent_version,
        telemetry=telemetry,
        model_identity=model_identity,
        now=now,
    )
    if first:
        # Its first report: the node joins the public surfaces now (a node that never reported in is not listed),
        # so its combination's rarity and the showcase are counted again with it.
        refresh_listing({node.combo_key})
    return {
        "status": node.status,
        "filter_rules_version": filter_rules_version(),
        "revoked_jtis": revoked_jtis(node, now),
        **(circle_policy(node.pk) or {}),
    }


def record_usage(*, node: Node, report_id: str, entries: list[dict]) -> dict:
    """Credit requests served for tokens this tracker issued for this node. Idempotent on report_id.

    Entries are increments since the agent's previous report. A token can never be credited more requests
    than its max_requests, nor more completion tokens than its budget, whatever an agent claims."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                report = UsageReport.objects.create(node=node, report_id=report_id)
        except IntegrityError:
            return {"accepted": 0, "ignored": 0, "duplicate": True}
        by_jti: dict[str, dict] = {}
        for entry in entries:
            slot = by_jti.setdefault(
                entry["jti"],
                {
                    "requests": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "first_at": entry.get("first_at"),
                    "last_at": entry.get("last_at"),
                },
            )
            for key in ("requests", "prompt_tokens", "completion_tokens"):
                slot[key] += entry.get(key, 0)
        tokens = list(TastingToken.objects.select_for_update().filter(node=node, jti__in=list(by_jti)))
        for token in tokens:
            add = by_jti[token.jti]
            token.requests_served = min(token.max_requests, token.requests_served + add["requests"])
            token.completion_tokens = min(token.max_output_tokens, token.completion_tokens + add["completion_tokens"])
            token.prompt_tokens = min(2**31 - 1, token.prompt_tokens + add["prompt_tokens"])
            token.first_used_at = token.first_used_at or add["first_at"]
            token.last_used_at = add["last_at"] or token.last_used_at
        TastingToken.objects.bulk_update(
            tokens, ["requests_served", "completion_tokens", "prompt_tokens", "first_used_at", "last_used_at"]
        )
        report.entries_counted = len(tokens)
        report.save(update_fields=["entries_counted"])
        refresh_taster_credit(node)
        tokens_used(node, [t.jti for t in tokens if t.requests_served > 0])
        refresh_scores([node.id])
    return {"accepted": len(tokens), "ignored": len(by_jti) - len(tokens), "duplicate": False}

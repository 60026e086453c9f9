"""Workflows over contributors and nodes: create a contributor, register / update / delete a node, take
heartbeats and usage reports from agents, and keep the stored contribution scores current."""

import re
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from core.api_errors import ApiError
from core.timefmt import iso
from nodes import queue_feed, rarity
from nodes import relays as node_relays
from nodes import services as node_services
from nodes.access import get_visible_node
from nodes.models import VRAM_UNKNOWN_SORT_KEY, Contributor, Node, TimingSample
from tracker import bans, credentials, pubkeys, scores
from tracker.models import Counter, TastingToken, UsageReport

# --- contributors ---------------------------------------------------------------------------------------


def create_contributor(*, handle: str | None, ip_hash: str | None = None) -> tuple[Contributor, str]:
    """A new identity: no e-mail, no password. Returns the row and the key, which is shown only once."""
    bans.refuse_if_banned(("ip", ip_hash))
    key = credentials.new_secret(credentials.CONTRIBUTOR_PREFIX)
    try:
        with transaction.atomic():
            contributor = Contributor.objects.create(
                id=credentials.new_id("c_"),
                handle=handle or None,
                key_hash=credentials.digest(key),
                score_components=dict.fromkeys(scores.COMPONENTS, 0.0),
            )
    except IntegrityError:
        raise ApiError(
            409, "handle_taken", f"The handle {handle!r} is taken; choose another.", extra={"field": "handle"}
        ) from None
    return contributor, key


# --- scores ---------------------------------------------------------------------------------------------


def refresh_scores(node_ids: list[str]) -> None:
    """Recompute the contribution of these nodes from their evidence, then their owners' totals."""
    if not node_ids:
        return
    threshold = settings.CONTRIBUTOR_THRESHOLD
    nodes = list(
        Node.objects.filter(pk__in=node_ids).only(
            "id",
            "owner_id",
            "alive_days",
            "rarity_score",
            "model_name",
            "quantization",
            "usage_requests",
            "distinct_tasters",
            "usage_credit",
            "discovery_credit",
            "tuning_note",
            "contribution_total",
            "contribution_tier",
            "contribution_components",
        )
    )
    changed = []
    for node in nodes:
        components = scores.node_components(evidence_of(node))
        total = scores.total(components)
        if (total, components) != (node.contribution_total, node.contribution_components):
            node.contribution_components = components
            node.contribution_total = total
            node.contribution_tier = scores.tier(total, threshold)
            changed.append(node)
    Node.objects.bulk_update(
        changed, ["contribution_components", "contribution_total", "contribution_tier"], batch_size=500
    )
    refresh_contributors({n.owner_id for n in nodes})


def evidence_of(node: Node) -> scores.NodeEvidence:
    known = scores.is_known(node.quantization) and scores.is_known(node.model_name)
    return scores.NodeEvidence(
        alive_days=node.alive_days,
        rarity=node.rarity_score if known else 0.0,
        requests_served=node.usage_requests,
        distinct_tasters=node.distinct_tasters,
        usage_credit=node.usage_credit,
        discovery_credit=node.discovery_credit,
        tuning_note_chars=len(node.tuning_note or ""),
    )


def refresh_taster_credit(node: Node) -> None:
    """Usage and discovery from the tokens this node really served (reported by its agent, or witnessed by a relay),
    the owner's own excluded: their contributor id, and any token issued to one of the owner's networks."""
    owner_networks = set(node.owner_networks or [])
    uses = []
    rows = (
        TastingToken.objects.filter(node=node, is_owner_token=False)
        .filter(Q(requests_served__gt=0) | Q(relay_requests__gt=0))
        .values_list(
            "subject", "ip_hash", "issued_at", "requests_served", "relay_requests", "max_requests",
            "contributor__created_at",
        )
    )  # fmt: skip
    for subject, ip, issued_at, served, witnessed, max_requests, identity_created in rows:
        if ip in owner_networks:
            continue
        uses.append(
            scores.TokenUse(
                subject=subject,
                standing=scores.standing(identity_created, issued_at),
                day=issued_at.date(),
                requests=min(max_requests, max(served, witnessed)),
            )
        )
    credit = scores.taster_credit(uses)
    Node.objects.filter(pk=node.pk).update(
        usage_requests=credit.requests,
        distinct_tasters=credit.tasters,
        usage_credit=credit.usage_credit,
        discovery_credit=credit.discovery_credit,
    )


def tokens_used(node: Node, jtis: list[str]) -> None:
    """These tokens were just shown used at the node (usage report or relay record): their tasters' pending timing
    uploads now count, in community timing and in their uploaders' credit."""
    pending = TimingSample.objects.filter(node=node, jti__in=jtis, counted=False)
    uploaders = set(pending.exclude(contributor=None).values_list("contributor_id", flat=True))
    if pending.update(counted=True):
        node_services.refresh_timing(node, uploaded_at=timezone.now())
        refresh_contributors(uploaders)


def timing_credit_of(contributor: Contributor) -> float:
    """Samples this contributor uploaded that count: tokens really used, at nodes that are not their own (nor on
    their own networks), each weighted by the uploader's standing when they uploaded."""
    weighted = 0.0
    rows = (
        TimingSample.objects.filter(contributor=contributor, source=TimingSample.Source.TASTER, counted=True)
        .exclude(node__owner_id=contributor.id)
        .values_list("jti", "created_at")
    )
    samples = dict(rows)
    if not samples:
        return 0.0
    for jti, ip, owner_networks in TastingToken.objects.filter(jti__in=list(samples), is_owner_token=False).values_list(
        "jti", "ip_hash", "node__owner_networks"
    ):
        if ip in (owner_networks or []):
            continue  # a tasting from the node owner's own network: the uploader is the owner, or with them
        weighted += scores.standing(contributor.created_at, samples[jti])
    return weighted


def refresh_contributors(contributor_ids) -> None:
    """A contributor's score: their visible nodes' (one per combination), plus the timing samples they shared."""
    threshold = settings.CONTRIBUTOR_THRESHOLD
    per_owner: dict[str, list[tuple[str, dict]]] = {cid: [] for cid in contributor_ids}
    for owner_id, combo, components in (
        Node.objects.visible()
        .filter(owner_id__in=per_owner)
        .values_list("owner_id", "combo_key", "contribution_components")
    ):
        per_owner[owner_id].append((combo, components))
    contributors = list(Contributor.objects.filter(pk__in=per_owner))
    for contributor in contributors:
        components = scores.owner_components(
            per_owner[contributor.id], scores.timing_share_points(timing_credit_of(contributor))
        )
        contributor.score_components = components
        contributor.score_total = scores.total(components)
        contributor.score_tier = scores.tier(contributor.score_total, threshold)
    Contributor.objects.bulk_update(contributors, ["score_components", "score_total", "score_tier"])


def refresh_listing(combo_keys: set[str]) -> None:
    """After a node joins, leaves or changes what it is: rarity of its combinations, scores, showcase."""
    changed = node_services.refresh_rarity(combo_keys)
    refresh_scores(changed)
    node_services.refresh_showcase()


# --- node registry --------------------------------------------------------------------------------------


def default_health_url(endpoint_url: str) -> str:
    base = endpoint_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + "/health"


def _unique_node_id(wanted: str) -> str:
    # Dots, underscores and slashes separate words in model names ("Llama-3.1", "Q4_K_M"): keep them apart.
    base = slugify(re.sub(r"[._/\s]+", "-", wanted))[:56].strip("-") or "node"
    taken = set(Node.objects.filter(pk__startswith=base).values_list("pk", flat=True))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _apply_fields(node: Node, data: dict) -> None:
    for field, value in data.items():
        if field == "node_public_key":
            if value:
                try:
                    node.node_public_key, node.node_public_key_fingerprint = pubkeys.validate(value)
                except pubkeys.InvalidPublicKey as exc:
                    raise ApiError(
                        400,
                        "invalid_public_key",
                        f"node_public_key: {exc}.",
                        extra={"field": "node_public_key"},
                    ) from None
            else:
                node.node_public_key = node.node_public_key_fingerprint = None
        elif field == "tags":
            node.tags = value
            node.tags_index = node_services.tags_index(value)
        elif field != "id":
            setattr(node, field, value)
    node.combo_key = rarity.combo_key(node.gpu, node.model_name, node.quantization)
    node.vram_sort_key = node.vram_gb if node.vram_gb is not None else VRAM_UNKNOWN_SORT_KEY


def _make_relayed(node: Node, now: datetime) -> None:
    """No public URL of its own: the agent dials out to a relay, which the monitor does not probe. A relay is
    assigned at once (rendezvous over the live relays, else over every registered one), so that the node's
    public endpoint_url is known before its agent first asks for a tunnel."""
    node.reachability = Node.Reachability.RELAYED
    node.endpoint_url = node.health_url = ""
    node.consecutive_failures, node.last_error = 0, ""
    node.relay = node_relays.pick_relay(node.id, now, any_if_none_live=True)
    node.tunnel_seen_at = None


def _make_direct(node: Node, health_url: str | None) -> None:
    node.reachability = Node.Reachability.DIRECT
    node.health_url = health_url or default_health_url(node.endpoint_url)
    node.relay = node.tunnel_seen_at = None


@transaction.atomic
def register_node(*, owner: Contributor, data: dict) -> tuple[Node, str]:
    """A new node owned by `owner`; returns it and its node secret (shown once). Without an endpoint_url the
    node is relayed."""
    bans.refuse_if_banned(("contributor", owner.id))
    secret = credentials.new_secret(credentials.NODE_PREFIX)
    node = Node(owner=owner, secret_hash=credentials.digest(secret))
    data = {k: v for k, v in data.items() if not (k == "endpoint_url" and v is None)}
    _apply_fields(node, data)
    wanted = data.get("id") or f"{node.gpu}-{node.model_name}-{node.quantization}"
    for _attempt in range(5):
        node.id = _unique_node_id(wanted)
        if node.endpoint_url:
            _make_direct(node, data.get("health_url"))
        else:
            _make_relayed(node, timezone.now())  # rendezvous needs the id
        try:
            with transaction.atomic():
                node.save(force_insert=True)
            break
        except IntegrityError:  # another registration took the id between our check and insert
            continue
    else:
        raise ApiError(409, "id_taken", "Could not find a free node id; choose another `id`.", extra={"field": "id"})
    refresh_listing({node.combo_key})
    refresh_scores([node.id])
    node.refresh_from_db()
    return node, secret


_REACHABILITY_FIELDS = {
    "reachability",
    "endpoint_url",
    "health_url",
    "relay",
    "tunnel_seen_at",
    "consecutive_failures",
    "last_error",
    "status",
}


@transaction.atomic
def update_node(*, node: Node, data: dict) -> Node:
    """Change what the owner may change. `endpoint_url` decides reachability: a URL makes the node direct
    (health_url derived unless given), null makes it relayed. A relayed node keeps no URL of its own, so a
    `health_url` alone is refused for it: there is nothing to probe."""
    # Re-read under a row lock: heartbeats, the monitor and timing uploads write other columns of this row
    # concurrently, and only the fields this update owns may be written back.
    node = Node.objects.select_for_update().get(pk=node.pk)
    old_combo = node.combo_key
    stays_relayed = node.is_relayed and "endpoint_url" not in data
    if (stays_relayed or data.get("endpoint_url", "") is None) and data.get("health_url"):
        raise ApiError(
            400,
            "invalid_field",
            "health_url: only a direct node (with endpoint_url) has one",
            extra={"field": "health_url"},
        )
    _apply_fields(node, {k: v for k, v in data.items() if k not in ("endpoint_url", "health_url")})
    fields = set(data) - {"endpoint_url", "health_url"} | {"combo_key", "vram_sort_key", "updated_at"}
    if "tags" in data:
        fields.add("tags_index")
    if "node_public_key" in data:
        fields.add("node_public_key_fingerprint")
    now = timezone.now()
    if data.get("endpoint_url"):
        node.endpoint_url = data["endpoint_url"]
        _make_direct(node, data.get("health_url"))
        fields |= _REACHABILITY_FIELDS
    elif "endpoint_url" in data:
        if not node.is_relayed:
            _make_relayed(node, now)
        fields |= _REACHABILITY_FIELDS
    elif data.get("health_url"):
        node.health_url = data["health_url"]
        fields.add("health_url")
    if fields & _REACHABILITY_FIELDS:
        node.status = node_services.current_status(node, now)
    node.save(update_fields=sorted(fields))
    refresh_listing({old_combo, node.combo_key})
    refresh_scores([node.id])
    node.refresh_from_db()
    return node


@transaction.atomic
def delete_node(*, node: Node) -> None:
    combo, owner_id = node.combo_key, node.owner_id
    node.delete()
    refresh_listing({combo})
    refresh_contributors({owner_id})


def get_node_for_owner(contributor: Contributor, node_id: str) -> Node:
    """The one access helper for owner-only node operations: 403 `banned` for a banned contributor (whose nodes
    are hidden: they would otherwise read as unknown), 404 when unknown, 403 `not_owner` otherwise."""
    bans.refuse_if_banned(("contributor", contributor.id))
    node = get_visible_node(node_id)
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


_QUEUE_FIELDS = [
    "queue_updated_at",
    "queue_active",
    "queue_waiting",
    "queue_max_active",
    "queue_entries",
    "queue_eta_sec",
    "status",
]


def _apply_queue(node: Node, queue: dict, now: datetime) -> None:
    node.queue_updated_at = now
    node.queue_active = queue.get("active", 0)
    node.queue_waiting = queue.get("waiting", 0)
    node.queue_max_active = queue.get("max_active", 0)
    node.queue_entries = [
        {"ticket": e["ticket"], "position": e["position"], "state": e["state"], "since": iso(e["since"])}
        for e in queue.get("entries", [])
    ]
    node.queue_eta_sec = queue.get("eta_sec")
    node.status = node_services.current_status(node, now)


@transaction.atomic
def record_heartbeat(
    *,
    node: Node,
    queue: dict,
    models: list[str],
    agent_version: str,
    telemetry: dict,
    now: datetime | None = None,
) -> dict:
    now = now or timezone.now()
    first = node.last_heartbeat_at is None
    node.last_heartbeat_at = node.last_seen_at = now
    node.served_models, node.agent_version, node.telemetry = models, agent_version, telemetry
    _apply_queue(node, queue, now)
    node.save(
        update_fields=[
            "last_heartbeat_at",
            "last_seen_at",
            "served_models",
            "agent_version",
            "telemetry",
            *_QUEUE_FIELDS,
        ]
    )
    transaction.on_commit(lambda: queue_feed.broadcast(node))
    if first:
        # Its first report: the node joins the public surfaces now (a node that never reported in is not listed),
        # so its combination's rarity and the showcase are counted again with it.
        refresh_listing({node.combo_key})
    return {
        "status": node.status,
        "filter_rules_version": filter_rules_version(),
        "revoked_jtis": revoked_jtis(node, now),
    }


@transaction.atomic
def record_queue(*, node: Node, queue: dict, now: datetime | None = None) -> None:
    """A queue change pushed over the agent link (between heartbeats): store it and tell the subscribers."""
    now = now or timezone.now()
    _apply_queue(node, queue, now)
    node.save(update_fields=_QUEUE_FIELDS)
    transaction.on_commit(lambda: queue_feed.broadcast(node))


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


def listed_contributions(limit: int) -> list[dict]:
    # Only nodes whose agent has reported in: a registration alone contributes nothing (API.md v1.1).
    rows = (
        Node.objects.listed()
        .order_by("-contribution_total", "created_at", "id")
        .only(
            "id",
            "contribution_total",
            "contribution_tier",
            "contribution_components",
            "alive_days",
            "rarity_score",
            "usage_requests",
            "distinct_tasters",
            "usage_credit",
            "discovery_credit",
            "model_name",
            "quantization",
            "tuning_note",
        )[:limit]
    )
    return [
        {
            "node_id": n.id,
            "total": n.contribution_total,
            "tier": n.contribution_tier,
            "components": n.contribution_components,
            "evidence": scores.evidence_dict(evidence_of(n)),
        }
        for n in rows
    ]


def contributor_overview(contributor: Contributor) -> dict:
    return {
        "total": contributor.score_total,
        "tier": contributor.score_tier,
        "components": contributor.score_components,
        "timing_samples_shared": contributor.timing_shared,
    }

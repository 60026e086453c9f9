"""Contribution scores, kept current on the rows: each node's (from its stored evidence: alive days, rarity,
usage and discovery credit from the tokens it served, its tuning note) and each contributor's (their nodes', plus
the timing samples they shared that count). The maths is tracker.scores; the node columns are written through
nodes.services. It may import nodes; it must not import moderation or showcase."""

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from nodes import services as node_services
from nodes.models import Contributor, Node, TimingSample
from tracker import scores
from tracker.models import TastingToken


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
    node_services.set_contributions(changed)
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
    the owner's own excluded: their contributor id, and any token issued to one of the owner's networks. Circle
    tokens count at tracker.scores.CIRCLE_USAGE_WEIGHT, for usage only."""
    owner_networks = set(node.owner_networks or [])
    uses = []
    rows = (
        TastingToken.objects.filter(node=node, is_owner_token=False)
        .filter(Q(requests_served__gt=0) | Q(relay_requests__gt=0))
        .values_list(
            "subject", "ip_hash", "issued_at", "requests_served", "relay_requests", "max_requests",
            "contributor__created_at", "via_circle",
        )
    )  # fmt: skip
    for subject, ip, issued_at, served, witnessed, max_requests, identity_created, via_circle in rows:
        if ip in owner_networks:
            continue
        uses.append(
            scores.TokenUse(
                subject=subject,
                standing=scores.standing(identity_created, issued_at),
                day=issued_at.date(),
                requests=min(max_requests, max(served, witnessed)),
                # Through a circle: a quarter of the usage weight and no discovery (tracker.scores).
                circle=via_circle,
            )
        )
    credit = scores.taster_credit(uses)
    node_services.set_taster_credit(
        node,
        requests=credit.requests,
        tasters=credit.tasters,
        usage_credit=credit.usage_credit,
        discovery_credit=credit.discovery_credit,
    )


def tokens_used(node: Node, jtis: list[str]) -> None:
    """These tokens were just shown used at the node (usage report or relay record): their tasters' pending timing
    uploads now count, in community timing and in their uploaders' credit."""
    uploaders = node_services.count_pending_samples(node, jtis, timezone.now())
    if uploaders is not None:
        refresh_contributors(uploaders)


def timing_credit_of(contributor: Contributor) -> float:
    """Samples this contributor uploaded that count: tokens really used, at nodes that are not their own (nor on
    their own networks), each weighted by the uploader's standing when they uploaded. A circle tasting's sample
    weighs CIRCLE_USAGE_WEIGHT, and nothing at a circle rig, whose timing only its circles see: friends tasting
    each other's rigs must not reach the public tier by their timing either (docs/scoring.md)."""
    weighted = 0.0
    rows = (
        TimingSample.objects.filter(contributor=contributor, source=TimingSample.Source.TASTER, counted=True)
        .exclude(node__owner_id=contributor.id)
        .values_list("jti", "created_at")
    )
    samples = dict(rows)
    if not samples:
        return 0.0
    rows = TastingToken.objects.filter(jti__in=list(samples), is_owner_token=False).values_list(
        "jti", "ip_hash", "node__owner_networks", "via_circle", "node__visibility"
    )
    for jti, ip, owner_networks, via_circle, visibility in rows:
        if ip in (owner_networks or []):
            continue  # a tasting from the node owner's own network: the uploader is the owner, or with them
        if visibility == Node.Visibility.CIRCLE:
            continue
        weight = scores.CIRCLE_USAGE_WEIGHT if via_circle else 1.0
        weighted += weight * scores.standing(contributor.created_at, samples[jti])
    return weighted


def refresh_contributors(contributor_ids) -> None:
    """A contributor's score: their nodes in service, circle rigs included (one per combination), plus the timing
    samples they shared."""
    threshold = settings.CONTRIBUTOR_THRESHOLD
    per_owner: dict[str, list[tuple[str, dict]]] = {cid: [] for cid in contributor_ids}
    for owner_id, combo, components in (
        Node.objects.in_service()
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
    node_services.set_contributor_scores(contributors)


def refresh_listing(combo_keys: set[str]) -> None:
    """After a node joins, leaves or changes what it is: rarity of its combinations, scores, showcase."""
    changed = node_services.refresh_rarity(combo_keys)
    refresh_scores(changed)
    node_services.refresh_showcase()


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

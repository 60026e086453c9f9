"""The writes onto node rows and their samples, whoever asks: refreshers for the derived values stored on node
rows (rarity, showcase badges, liveness, uptime, community timing) and the health-sample history, what an
agent reports (heartbeat, queue, its link dropping), and the columns other apps decide but nodes store (bans,
takedowns, contribution scores and taster credit, taster timing samples; contributors' rows and scores). Each
does a bounded number of queries and writes only rows that changed. Must not import tracker, moderation or
showcase: they call down into this."""

import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from core.timefmt import iso
from nodes import liveness, queue_feed, rarity
from nodes.badges import Row, pick_categories
from nodes.models import Contributor, HealthSample, Node, TimingSample


def tags_index(tags: list[str]) -> str:
    return "," + ",".join(tags) + "," if tags else ""


def refresh_rarity(combo_keys: Iterable[str] | None = None) -> list[str]:
    """Recompute rarity for nodes in service in the given combinations (all when None); returns changed ids.

    Counts run over listed nodes only; an unlisted or circle rig is counted as one more member of its combination
    (its own score), and never in anyone else's: a rig shared with friends says nothing about the public swarm."""
    listed = Node.objects.listed()
    visible = Node.objects.in_service()
    if combo_keys is not None:
        combo_keys = list(set(combo_keys))
        listed = listed.filter(combo_key__in=combo_keys)
        visible = visible.filter(combo_key__in=combo_keys)
    counts = dict(listed.values_list("combo_key").annotate(n=Count("id")).order_by())
    changed = []
    # Everything is_listed reads is loaded here, so that it costs no query per node.
    fields = (
        "id",
        "combo_key",
        "tags",
        "vram_gb",
        "visibility",
        "taken_down_at",
        "banned_until",
        "last_heartbeat_at",
        "rarity_score",
    )
    for node in visible.only(*fields, "model_name", "quantization"):
        sharing = counts.get(node.combo_key, 0) + (0 if node.is_listed else 1)
        known = rarity.is_known(node.model_name) and rarity.is_known(node.quantization)
        score = rarity.rarity_score(sharing, node.tags, node.vram_gb, known=known)
        if score != node.rarity_score:
            node.rarity_score = score
            changed.append(node)
    Node.objects.bulk_update(changed, ["rarity_score"], batch_size=500)
    return [n.id for n in changed]


def refresh_showcase() -> None:
    """Pick each showcase category's winner among listed nodes and store the badges on the winners."""
    fields = (
        "id",
        "gpu",
        "model_name",
        "quantization",
        "vram_gb",
        "context_length",
        "rarity_score",
        "created_at",
        "owner_id",
    )
    rows = [Row(*values) for values in Node.objects.listed().values_list(*fields)]
    badges: dict[str, list[dict]] = {}
    for category in pick_categories(rows):
        badges.setdefault(category["node_id"], []).append(
            {"id": category["id"], "label": category["label"], "reason": category["reason"]}
        )
    holders = Node.objects.filter(Q(pk__in=list(badges)) | ~Q(showcase_ids="")).only("id", "showcase", "showcase_ids")
    changed = []
    for node in holders:
        mine = badges.get(node.id, [])
        ids = ("," + ",".join(b["id"] for b in mine) + ",") if mine else ""
        if node.showcase != mine or node.showcase_ids != ids:
            node.showcase, node.showcase_ids = mine, ids
            changed.append(node)
    Node.objects.bulk_update(changed, ["showcase", "showcase_ids"], batch_size=500)


def observed(node: Node) -> liveness.Observed:
    return liveness.Observed(
        last_heartbeat_at=node.last_heartbeat_at,
        last_probe_at=node.last_probe_at,
        consecutive_failures=node.consecutive_failures,
        queue_active=node.queue_active,
        queue_max_active=node.queue_max_active,
        reachability=node.reachability,
        tunnel_seen_at=node.tunnel_seen_at,
    )


def current_status(node: Node, now: datetime) -> str:
    return liveness.derive_status(
        observed(node),
        now=now,
        interval_sec=settings.HEARTBEAT_INTERVAL_SEC,
        failures_before_down=settings.MONITOR_FAILURES_BEFORE_DOWN,
    )


def mark_alive_day(node: Node, now: datetime) -> bool:
    """Count today (UTC) once as a day the node was seen alive; True when that added a day."""
    today = now.date()
    if node.last_alive_on == today:
        return False
    node.last_alive_on = today
    node.alive_days += 1
    return True


def add_uptime_sample(node: Node, alive: bool, now: datetime) -> None:
    """Count one sample into the node's hourly uptime counters and re-derive its 24 h and 7 d ratios."""
    hour = int(now.timestamp()) // 3600
    hours = {int(k): v for k, v in (node.uptime_hours or {}).items() if int(k) > hour - 168}
    up, total = hours.get(hour, [0, 0])
    hours[hour] = [up + int(alive), total + 1]
    node.uptime_hours = {str(k): v for k, v in sorted(hours.items())}
    day = [v for k, v in hours.items() if k > hour - 24]
    node.uptime_ratio_24h = round(sum(v[0] for v in day) / sum(v[1] for v in day), 4)
    node.uptime_ratio_7d = round(sum(v[0] for v in hours.values()) / sum(v[1] for v in hours.values()), 4)


def prune_samples(now: datetime) -> int:
    cutoff = now - timedelta(days=settings.HEALTH_RETENTION_DAYS)
    deleted, _ = HealthSample.objects.filter(at__lt=cutoff).delete()
    return deleted


# Community timing: medians over the most recent samples (rigs get retuned), whichever their source.
P50_WINDOW = 500
# The medians describe streaming (plain mode): a public-key tasting gets its answer in one piece, so its
# "TTFT" is the whole answer's time. Those samples are kept and counted, but not mixed into the p50s.
P50_EXCLUDED_MODE = "public-key"
TIMING_FIELDS = [
    "timing_samples_count",
    "timing_samples_taster",
    "timing_samples_relay",
    "tok_per_sec_p50",
    "ttft_ms_p50",
    "timing_last_uploaded_at",
]


def refresh_timing(node: Node, *, uploaded_at: datetime) -> None:
    """Recount a node's timing samples by source and recompute its p50s after new samples arrived.

    Tasters' uploads and relays' measurements weigh the same: the medians run over the latest P50_WINDOW
    streaming samples of either source, each sample once."""
    samples = TimingSample.objects.filter(node=node, counted=True)  # pending uploads wait for proof of use
    recent = list(
        samples.exclude(mode=P50_EXCLUDED_MODE)
        .order_by("-created_at", "-id")
        .values_list("tok_per_sec", "ttft_ms")[:P50_WINDOW]
    )
    tps = [r[0] for r in recent if r[0] is not None]
    ttft = [r[1] for r in recent if r[1] is not None]
    counts = dict(samples.values_list("source").annotate(n=Count("id")).order_by())
    node.timing_samples_taster = counts.get(TimingSample.Source.TASTER, 0)
    node.timing_samples_relay = counts.get(TimingSample.Source.RELAY, 0)
    node.timing_samples_count = node.timing_samples_taster + node.timing_samples_relay
    node.tok_per_sec_p50 = round(statistics.median(tps), 3) if tps else None
    node.ttft_ms_p50 = round(statistics.median(ttft), 3) if ttft else None
    node.timing_last_uploaded_at = uploaded_at
    Node.objects.filter(pk=node.pk).update(**{f: getattr(node, f) for f in TIMING_FIELDS})


OWNER_NETWORKS_KEPT = 16


def note_owner_network(node: Node, ip_hash: str | None) -> None:
    """Remember a network (keyed hash of an address, IPv6 by /64) that the owner or the node's agent used: tokens
    issued to it are the owner's own whatever identity asks (docs/scoring.md). One write, only for a new one."""
    if not ip_hash or ip_hash in (node.owner_networks or []):
        return
    node.owner_networks = [*(node.owner_networks or []), ip_hash][-OWNER_NETWORKS_KEPT:]
    Node.objects.filter(pk=node.pk).update(owner_networks=node.owner_networks)


# --- what an agent reports ------------------------------------------------------------------------------

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
    node.status = current_status(node, now)


@transaction.atomic
def record_heartbeat(
    *,
    node: Node,
    queue: dict,
    models: list[str],
    agent_version: str,
    telemetry: dict,
    now: datetime,
    model_identity: dict | None = None,
) -> bool:
    """Store an agent's heartbeat on its node and tell the queue subscribers; True when it is the node's first
    (the node joins the public surfaces now: the caller recounts what a listed node changes)."""
    first = node.last_heartbeat_at is None
    node.last_heartbeat_at = node.last_seen_at = now
    node.served_models, node.agent_version, node.telemetry = models, agent_version, telemetry
    node.model_identity = model_identity
    _apply_queue(node, queue, now)
    node.save(
        update_fields=[
            "last_heartbeat_at",
            "last_seen_at",
            "served_models",
            "agent_version",
            "telemetry",
            "model_identity",
            *_QUEUE_FIELDS,
        ]
    )
    transaction.on_commit(lambda: queue_feed.broadcast(node))
    return first


@transaction.atomic
def record_queue(*, node: Node, queue: dict, now: datetime | None = None) -> None:
    """A queue change pushed over the agent link (between heartbeats): store it and tell the subscribers."""
    now = now or timezone.now()
    _apply_queue(node, queue, now)
    node.save(update_fields=_QUEUE_FIELDS)
    transaction.on_commit(lambda: queue_feed.broadcast(node))


def link_dropped(node_id: str) -> None:
    """The agent's link went away: unless it comes back (and heartbeats) within one interval, the node turns
    unavailable. Back-dating the last heartbeat to two intervals ago leaves exactly that grace."""
    grace = timedelta(seconds=2 * settings.HEARTBEAT_INTERVAL_SEC)
    Node.objects.filter(pk=node_id, last_heartbeat_at__gt=timezone.now() - grace).update(
        last_heartbeat_at=timezone.now() - grace
    )


def set_last_heartbeat(node: Node, at: datetime, now: datetime) -> None:
    """A heartbeat at `at` (the demo rigs' past one), with the status it implies now."""
    node.last_heartbeat_at = node.last_seen_at = at
    node.status = current_status(node, now)
    node.save(update_fields=["last_heartbeat_at", "last_seen_at", "status"])


# --- contributors: tracker makes their keys and computes their scores --------------------------------------


def add_contributor(*, contributor_id: str, handle: str | None, key_hash: str, score_components: dict | None = None):
    """Insert an identity row; IntegrityError when the handle (or id) is taken: the caller says so."""
    return Contributor.objects.create(
        id=contributor_id, handle=handle, key_hash=key_hash, score_components=score_components or {}
    )


def set_contributor_scores(contributors: list[Contributor]) -> None:
    """Store each contributor's score as the caller (tracker.scoring) computed it."""
    Contributor.objects.bulk_update(contributors, ["score_components", "score_total", "score_tier"])


def count_timing_shared(contributor_id: str) -> None:
    """One more timing sample shared by this contributor."""
    Contributor.objects.filter(pk=contributor_id).update(timing_shared=F("timing_shared") + 1)


# --- columns other apps decide ----------------------------------------------------------------------------


def set_taken_down(node: Node, at: datetime | None) -> None:
    """A moderator's takedown (`at`) or restore (None)."""
    Node.objects.filter(pk=node.pk).update(taken_down_at=at)


def set_banned_until(nodes: list[Node]) -> None:
    """Store each node's `banned_until` as the caller (tracker.bans) computed it."""
    Node.objects.bulk_update(nodes, ["banned_until"], batch_size=500)


def set_contributions(nodes: list[Node]) -> None:
    """Store each node's contribution score as the caller (tracker.scoring) computed it."""
    Node.objects.bulk_update(
        nodes, ["contribution_components", "contribution_total", "contribution_tier"], batch_size=500
    )


def set_taster_credit(node: Node, *, requests: int, tasters: float, usage_credit: float, discovery_credit: float):
    """Store the usage and discovery evidence the caller (tracker.scoring) counted from the node's tokens."""
    Node.objects.filter(pk=node.pk).update(
        usage_requests=requests, distinct_tasters=tasters, usage_credit=usage_credit, discovery_credit=discovery_credit
    )


def add_taster_sample(*, node: Node, jti: str, contributor_id: str | None, now: datetime, counted: bool, **fields):
    """A taster's timing sample (one per jti); False when that jti has one already. The caller refreshes the
    node's timing (refresh_timing) once its own writes are done."""
    try:
        with transaction.atomic():
            TimingSample.objects.create(
                node=node, jti=jti, contributor_id=contributor_id, created_at=now, counted=counted, **fields
            )
    except IntegrityError:
        return False
    return True


def count_pending_samples(node: Node, jtis: list[str], now: datetime) -> set[str] | None:
    """These tokens were shown used at the node: their pending taster uploads now count, and the node's timing
    is refreshed. Returns the uploaders whose samples began to count, or None when none did."""
    pending = TimingSample.objects.filter(node=node, jti__in=jtis, counted=False)
    uploaders = set(pending.exclude(contributor=None).values_list("contributor_id", flat=True))
    if not pending.update(counted=True):
        return None
    refresh_timing(node, uploaded_at=now)
    return uploaders

"""The node registry's own writes: a node row created, changed or deleted, its id and its reachability (direct
or relayed). The caller (tracker.services) has already checked the owner, bans and credentials, validated the
node public key and made the node secret; what follows from the change (rarity, scores, showcase) is the
caller's too. Must not import tracker, moderation or showcase."""

import re
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from core.api_errors import ApiError
from nodes import rarity
from nodes import relays as node_relays
from nodes import services as node_services
from nodes.models import VRAM_UNKNOWN_SORT_KEY, Node


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
    """Owner-given fields onto the row; `node_public_key` and `node_public_key_fingerprint` come validated.
    `circles` is not a column: _share writes it once the row exists."""
    for field, value in data.items():
        if field == "circles":
            continue
        if field == "tags":
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


def _share(node: Node, data: dict) -> None:
    """The circles the rig is shared with, when given: the caller has checked that its owner is in each."""
    if "circles" in data:
        node.circles.set(data["circles"])


@transaction.atomic
def create_node(*, owner_id: str, secret_hash: str, data: dict) -> Node:
    """Insert a new node row under a free id made from `id` or `gpu-model-quant`. Without an endpoint_url the
    node is relayed."""
    node = Node(owner_id=owner_id, secret_hash=secret_hash)
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
    _share(node, data)
    return node


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
def change_node(*, node: Node, data: dict) -> tuple[Node, str]:
    """Change what the owner may change; returns the row and its combination before the change.
    `endpoint_url` decides reachability: a URL makes the node direct (health_url derived unless given), null
    makes it relayed. A relayed node keeps no URL of its own, so a `health_url` alone is refused for it: there
    is nothing to probe."""
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
    fields = set(data) - {"endpoint_url", "health_url", "circles"} | {"combo_key", "vram_sort_key", "updated_at"}
    if "tags" in data:
        fields.add("tags_index")
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
    _share(node, data)
    return node, old_combo


def delete_node(node: Node) -> None:
    node.delete()

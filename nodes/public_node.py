"""PublicNode: the one public shape of a node (docs/api.md). Built from stored columns only, with no queries,
because the list endpoint renders up to 200 of these per request: lists read plain `.values()` rows (model
instances cost more than the rest of the request), single nodes go through `public_node_of`."""

from collections.abc import Mapping

from core.timefmt import iso
from nodes.model_files import model_file
from nodes.models import Node, relayed_endpoint_url

PUBLIC_NODE_FIELDS = (
    "id",
    "display_name",
    "endpoint_url",
    "model_name",
    "quantization",
    "lora",
    "gpu",
    "vram_gb",
    "context_length",
    "tuning_note",
    "availability_note",
    "tags",
    "visibility",
    "node_public_key",
    "node_public_key_fingerprint",
    "created_at",
    "updated_at",
    "rarity_score",
    "showcase",
    "contribution",
    "health",
    "queue",
    "community_timing",
    "owner",
    "reachability",
    "circles",
    "circle_only_hours",
    "model_file",
)

# The node columns public_node reads, plus the owner's id and handle.
_NODE_COLUMNS = (
    "id",
    "display_name",
    "endpoint_url",
    "model_name",
    "quantization",
    "lora",
    "gpu",
    "vram_gb",
    "context_length",
    "tuning_note",
    "availability_note",
    "tags",
    "visibility",
    "node_public_key",
    "node_public_key_fingerprint",
    "created_at",
    "updated_at",
    "rarity_score",
    "showcase",
    "contribution_total",
    "contribution_tier",
    "contribution_components",
    "status",
    "last_seen_at",
    "latency_ms",
    "uptime_ratio_24h",
    "queue_active",
    "queue_waiting",
    "queue_max_active",
    "queue_updated_at",
    "timing_samples_count",
    "timing_samples_taster",
    "timing_samples_relay",
    "tok_per_sec_p50",
    "ttft_ms_p50",
    "timing_last_uploaded_at",
    "reachability",
    "circle_only_hours",
    "model_identity",
)
PUBLIC_COLUMNS = (*_NODE_COLUMNS, "owner__id", "owner__handle", "relay__public_url")


def public_rows(queryset):
    """The rows public_node needs, as dicts (one query, owner and relay joined)."""
    return queryset.values(*PUBLIC_COLUMNS)


def public_node_of(node: Node, circles=()) -> dict:
    """PublicNode of a model instance (its owner and relay should be select_related). `circles`: the node's
    circles the caller may see (nodes.access.circles_seen_by); none unless given."""
    row = {column: getattr(node, column) for column in _NODE_COLUMNS}
    row["circles"] = list(circles)
    row["owner__id"], row["owner__handle"] = node.owner.id, node.owner.handle
    row["relay__public_url"] = node.relay.public_url if node.relay_id is not None else None
    return public_node(row)


def endpoint_of(r: Mapping) -> str | None:
    """A direct node's own URL; a relayed node's base on its relay (None while it has no relay)."""
    if r["reachability"] != Node.Reachability.RELAYED:
        return r["endpoint_url"]
    return relayed_endpoint_url(r["relay__public_url"], r["id"]) if r["relay__public_url"] else None


def community_timing(r: Mapping, time=iso) -> dict:
    return {
        "samples_count": r["timing_samples_count"],
        "by_source": {"relay": r["timing_samples_relay"], "taster": r["timing_samples_taster"]},
        "tok_per_sec_p50": r["tok_per_sec_p50"],
        "ttft_ms_p50": r["ttft_ms_p50"],
        "last_uploaded_at": time(r["timing_last_uploaded_at"]),
    }


def contribution_of(r: Mapping) -> dict:
    return {
        "total": r["contribution_total"],
        "tier": r["contribution_tier"],
        "components": r["contribution_components"],
    }


def public_node(r: Mapping, time=iso) -> dict:
    """PublicNode of a row (`time` formats its timestamps: nodes.public_list passes them formatted already)."""
    return {
        "id": r["id"],
        "display_name": r["display_name"],
        "endpoint_url": endpoint_of(r),
        "model_name": r["model_name"],
        "quantization": r["quantization"],
        "lora": r["lora"],
        "gpu": r["gpu"],
        "vram_gb": r["vram_gb"],
        "context_length": r["context_length"],
        "tuning_note": r["tuning_note"],
        "availability_note": r["availability_note"],
        "tags": r["tags"],
        "visibility": r["visibility"],
        "node_public_key": r["node_public_key"],
        "node_public_key_fingerprint": r["node_public_key_fingerprint"],
        "created_at": time(r["created_at"]),
        "updated_at": time(r["updated_at"]),
        "rarity_score": r["rarity_score"],
        "showcase": r["showcase"],
        "contribution": contribution_of(r),
        "health": {
            "status": r["status"],
            "last_seen_at": time(r["last_seen_at"]),
            "latency_ms": r["latency_ms"],
            "uptime_ratio_24h": r["uptime_ratio_24h"],
        },
        "queue": {
            "active": r["queue_active"],
            "waiting": r["queue_waiting"],
            "max_active": r["queue_max_active"],
            "updated_at": time(r["queue_updated_at"]),
        },
        "community_timing": community_timing(r, time),
        "owner": {"id": r["owner__id"], "handle": r["owner__handle"]},
        "reachability": r["reachability"],
        # The caller's circles this rig is shared with ({id, name}); a row from a list carries none: a public
        # list never says whom a rig is shared with.
        "circles": list(r.get("circles", ())),
        # UTC hours in which a shared public or unlisted rig serves its circles only: when tasters can expect a
        # 409 `circle_only_now` (it says that the rig is shared, never with whom).
        "circle_only_hours": sorted(r["circle_only_hours"] or ()),
        # The served file as the rig reports it (its heartbeats): a claim the tracker displays, never checks.
        "model_file": model_file(r["model_identity"]),
    }

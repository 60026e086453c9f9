"""PublicNode: the one public shape of a node (docs/api.md). Built from stored columns only, no queries
(the owner must be select_related), because the list endpoint renders hundreds of these per request."""

from luckrig_site.timefmt import iso
from nodes.models import Node

PUBLIC_NODE_FIELDS = (
    "id", "display_name", "endpoint_url", "model_name", "quantization", "lora", "gpu", "vram_gb",
    "context_length", "tuning_note", "availability_note", "tags", "visibility", "node_public_key",
    "node_public_key_fingerprint", "created_at", "updated_at", "rarity_score", "showcase", "contribution",
    "health", "queue", "community_timing", "owner",
)


def contribution_of(node: Node) -> dict:
    return {"total": node.contribution_total, "tier": node.contribution_tier,
            "components": node.contribution_components}


def public_node(node: Node) -> dict:
    owner = node.owner
    return {
        "id": node.id,
        "display_name": node.display_name,
        "endpoint_url": node.endpoint_url,
        "model_name": node.model_name,
        "quantization": node.quantization,
        "lora": node.lora,
        "gpu": node.gpu,
        "vram_gb": node.vram_gb,
        "context_length": node.context_length,
        "tuning_note": node.tuning_note,
        "availability_note": node.availability_note,
        "tags": node.tags,
        "visibility": node.visibility,
        "node_public_key": node.node_public_key,
        "node_public_key_fingerprint": node.node_public_key_fingerprint,
        "created_at": iso(node.created_at),
        "updated_at": iso(node.updated_at),
        "rarity_score": node.rarity_score,
        "showcase": node.showcase,
        "contribution": contribution_of(node),
        "health": {
            "status": node.status,
            "last_seen_at": iso(node.last_seen_at),
            "latency_ms": node.latency_ms,
            "uptime_ratio_24h": node.uptime_ratio_24h,
        },
        "queue": {
            "active": node.queue_active,
            "waiting": node.queue_waiting,
            "max_active": node.queue_max_active,
            "updated_at": iso(node.queue_updated_at),
        },
        "community_timing": {
            "samples_count": node.timing_samples_count,
            "tok_per_sec_p50": node.tok_per_sec_p50,
            "ttft_ms_p50": node.ttft_ms_p50,
            "last_uploaded_at": iso(node.timing_last_uploaded_at),
        },
        "owner": {"id": owner.id, "handle": owner.handle},
    }

"""The gateway's catalog: every rig a relay could send a taster to right now, with what routing reads (model key,
live queue, measured speed, rarity), and where clients find the gateway. Read by tracker.gateway_api; the relays
poll it (docs/api.md "Gateway"). One query whatever the number of rigs: every value is a stored column, and a
rig's status is derived from its row by the same rule token issuance uses (nodes.services.current_status).
Must not import tracker, moderation or showcase."""

from datetime import datetime, timedelta
from types import SimpleNamespace

from django.conf import settings

from nodes import liveness, model_names
from nodes import services as node_services
from nodes.models import Node, Relay
from nodes.public_node import endpoint_of

# What a catalog entry and its status need: one row each, the relay's URL joined.
_COLUMNS = (
    "id",
    "model_name",
    "quantization",
    "gpu",
    "reachability",
    "endpoint_url",
    "relay_id",
    "relay__public_url",
    "queue_active",
    "queue_waiting",
    "queue_max_active",
    "queue_eta_sec",
    "tok_per_sec_p50",
    "ttft_ms_p50",
    "rarity_score",
    "last_heartbeat_at",
    "last_probe_at",
    "consecutive_failures",
    "tunnel_seen_at",
)


def rig_entry(row: dict, status: str) -> dict:
    return {
        "node_id": row["id"],
        "model": row["model_name"],
        "model_key": model_names.model_key(row["model_name"]),
        "quantization": row["quantization"],
        "gpu": row["gpu"],
        "status": status,
        "endpoint_url": endpoint_of(row),
        "relay_id": row["relay_id"],
        "queue": {
            "active": row["queue_active"],
            "waiting": row["queue_waiting"],
            "max_active": row["queue_max_active"],
            "eta_sec": row["queue_eta_sec"],
        },
        "tok_per_sec_p50": row["tok_per_sec_p50"],
        "ttft_ms_p50": row["ttft_ms_p50"],
        "rarity_score": row["rarity_score"],
    }


def routable_rigs(now: datetime) -> list[dict]:
    """Listed rigs (public, not taken down, not banned, reported in) that are available or busy now and have a
    URL, rarest first. A heartbeat older than three intervals cannot be alive (nodes.liveness), so the database
    leaves those rows out before the status is derived here."""
    fresh_since = now - timedelta(seconds=3 * settings.HEARTBEAT_INTERVAL_SEC)
    rows = Node.objects.listed().filter(last_heartbeat_at__gte=fresh_since).in_default_order().values(*_COLUMNS)
    rigs = []
    for row in rows:
        # current_status reads attributes: the row stands in for the node, so that "alive" here is what it is
        # when a token is issued (tracker.tasting.issue_token).
        status = node_services.current_status(SimpleNamespace(**row), now)
        if liveness.is_alive(status) and endpoint_of(row):
            rigs.append(rig_entry(row, status))
    return rigs


def gateway_relays(now: datetime) -> list[dict]:
    """The live relays in a stable order, each with its gateway's base URL (every relay serves the gateway)."""
    return [
        {"relay_id": r.id, "base_url": r.public_url.rstrip("/") + "/v1"}
        for r in Relay.objects.live(now).order_by("id").only("id", "public_url")
    ]


def gateway_base_url(relays: list[dict]) -> str | None:
    """The one base URL a client is given (`GET /api/gateway`, the website's "Use from code" box): the first live
    relay's; None while no relay is live."""
    return relays[0]["base_url"] if relays else None

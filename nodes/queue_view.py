"""The public view of a node's queue: the message the queue websockets send, built from the snapshot stored on
the node row (so that the REST `queue` field and the websockets always agree), and its broadcast."""

import json
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from luckrig_site.timefmt import iso
from nodes.models import Node

log = logging.getLogger("luckrig.queue")

ALL_GROUP = "queue.all"


def node_group(node_id: str) -> str:
    return f"queue.{node_id}"


def message(node: Node) -> dict:
    """Opaque tickets, positions, states and times only: never a jti, a contributor or an address."""
    return {
        "type": "queue",
        "node_id": node.id,
        "active": node.queue_active,
        "waiting": node.queue_waiting,
        "max_active": node.queue_max_active,
        "entries": node.queue_entries or [],
        "eta_sec": node.queue_eta_sec,
        "at": iso(node.queue_updated_at),
    }


def broadcast(node: Node) -> None:
    """Send the node's snapshot to its subscribers (and to the all-nodes stream when it is listed). A channel
    layer that is down (Redis restarting) must not fail the agent's request: the view catches up with the
    next change."""
    # Serialised once here, not once per subscriber: a change fans out to every open websocket.
    payload = {"type": "queue.update", "text": json.dumps(message(node), separators=(",", ":"))}
    try:
        layer = get_channel_layer()
        async_to_sync(layer.group_send)(node_group(node.id), payload)
        if node.is_listed:
            async_to_sync(layer.group_send)(ALL_GROUP, payload)
    except Exception as exc:  # noqa: BLE001 - any layer failure: log and carry on serving
        log.warning("queue broadcast for %s failed: %s", node.id, type(exc).__name__)


def announce_removal(node_id: str) -> None:
    """A node was taken down or banned: its subscribers are closed, the all-nodes stream drops it."""
    try:
        layer = get_channel_layer()
        async_to_sync(layer.group_send)(node_group(node_id), {"type": "queue.gone"})
        async_to_sync(layer.group_send)(
            ALL_GROUP, {"type": "queue.update", "text": json.dumps({"type": "removed", "node_id": node_id})}
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("queue removal for %s not announced: %s", node_id, type(exc).__name__)

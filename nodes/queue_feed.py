"""The public view of a node's queue: the message the queue websockets send, built from the snapshot stored on
the node row (so that the REST `queue` field and the websockets always agree), and its broadcast."""

import json
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core.timefmt import iso
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
        # The node's liveness too: a relayed rig whose tunnel drops turns unavailable without a queue change.
        "status": node.status,
        "active": node.queue_active,
        "waiting": node.queue_waiting,
        "max_active": node.queue_max_active,
        "entries": node.queue_entries or [],
        "eta_sec": node.queue_eta_sec,
        "at": iso(node.queue_updated_at),
    }


def text(node: Node) -> str:
    """The message as sent on the wire: serialised once per change, whatever the number of subscribers."""
    return json.dumps(message(node), separators=(",", ":"))


# Enough to build a node's message, and no more: the all-nodes snapshot may read thousands of rows.
MESSAGE_FIELDS = (
    "id",
    "status",
    "visibility",
    "last_heartbeat_at",
    "taken_down_at",
    "banned_until",
    "queue_active",
    "queue_waiting",
    "queue_max_active",
    "queue_entries",
    "queue_eta_sec",
    "queue_updated_at",
)


def snapshots(group: str) -> list[tuple[str, str]]:
    """The current state of a group, from the database: (node id, message text) for the one node of a node
    group, or for every listed node taking tasters for the all-nodes stream. visible() leaves circle rigs out."""
    if group == ALL_GROUP:
        nodes = Node.objects.listed().filter(status__in=[Node.Status.AVAILABLE, Node.Status.BUSY])
    else:
        nodes = Node.objects.visible().filter(pk=group.removeprefix("queue."))
    return [(node.id, text(node)) for node in nodes.only(*MESSAGE_FIELDS)[:5000]]


def broadcast(node: Node) -> None:
    """Send the node's snapshot to its subscribers (and to the all-nodes stream when it is listed). A channel
    layer that is down (Redis restarting) must not fail the agent's request: the view catches up with the
    next change. A circle rig has no public queue view: nothing is sent for it (its members read its queue in
    its PublicNode, GET /api/nodes/<id> with their key)."""
    if node.visibility == Node.Visibility.CIRCLE:
        return
    # Each process keeps only the newest snapshot per node (nodes/fanout.py): node_id says which one this is.
    payload = {"type": "queue.update", "node_id": node.id, "text": text(node)}
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
        removed = json.dumps({"type": "removed", "node_id": node_id})
        async_to_sync(layer.group_send)(
            ALL_GROUP, {"type": "queue.update", "node_id": node_id, "removed": True, "text": removed}
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("queue removal for %s not announced: %s", node_id, type(exc).__name__)

"""What a rig's agent is told about its circles: its visibility, the circles it serves and its circle-only hours,
pushed down its agent link when any of them changes (a node PATCH, publish, a circle deleted), as the heartbeat
answer also carries them. The agent applies the push like the answer; values its operator pinned still win."""

from django.db import transaction

from nodes.models import Node
from tracker import agent_link


def circle_policy(node_id: str) -> dict | None:
    """The three fields as they stand in the database, and the rig's owner (whose own tokens a circle rig takes
    whatever circle they name: an owner may taste a circle rig shared with no circle yet), or None when the node is
    gone."""
    node = Node.objects.filter(pk=node_id).only("visibility", "circle_only_hours", "owner_id").first()
    if node is None:
        return None
    return {
        "visibility": node.visibility,
        "owner_id": node.owner_id,
        "circles": sorted(node.circles.values_list("id", flat=True)),
        "circle_only_hours": sorted(node.circle_only_hours),
    }


def push_circle_policy(node: Node | str) -> None:
    """Once the current transaction commits, push `{"type": "circles", ...}` to the node's connected agent. Read
    then, not now, so that the agent hears the committed state even when several changes share one transaction."""
    node_id = node if isinstance(node, str) else node.pk

    def send():
        policy = circle_policy(node_id)
        if policy is not None:
            agent_link.push(node_id, {"type": "circles", **policy})

    transaction.on_commit(send)

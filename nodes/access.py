"""The one access helper for a node that an API caller names by id: visible to that caller (public or unlisted,
not taken down, not banned; a circle rig only to its owner and its circles' members) or the API's refusal.
Owner-only operations add their own check on top of it.

It fails closed (issue 15): without a viewer a circle rig is an unknown id, 404 `node_not_found`, so that a
caller that forgets the circle rule shows nothing of it. Only the places that serve members pass a viewer."""

from core.api_errors import ApiError
from nodes.models import NODE_ID_MAX_LENGTH, Circle, Contributor, Node, node_id_key


def get_visible_node(node_id, viewer: Contributor | None = None) -> Node:
    """The node with this id, owner and relay joined, if `viewer` may see it. Otherwise 404 `node_not_found`,
    except for a circle rig named by a contributor who is not in one of its circles: 403 `not_in_circle` (a
    contributor key was sent, so the refusal can say why; an anonymous caller learns nothing)."""
    node = Node.objects.visible_by_id(node_id, viewer)
    if node is not None:
        return node
    key = node_id_key(node_id)
    hidden = Node.objects.in_service().filter(pk=key, visibility=Node.Visibility.CIRCLE)
    if viewer is not None and key is not None and hidden.exists():
        raise ApiError(
            403,
            "not_in_circle",
            f"Rig {key!r} is shared with its circles only, and this contributor key is in none of them.",
        )
    # Quoted as sent, cut to an id's length: an error message must not echo a megabyte back.
    raise ApiError(404, "node_not_found", f"No node {str(node_id)[:NODE_ID_MAX_LENGTH]!r}.")


def circles_seen_by(node: Node, viewer: Contributor | None) -> list[dict]:
    """PublicNode's `circles` for one node: the node's owner sees all of its circles, a member the ones they are in
    (active or paused), anyone else none. One query, none without a viewer."""
    if viewer is None:
        return []
    circles = Circle.objects.filter(nodes=node)
    if viewer.id != node.owner_id:
        circles = circles.filter(members__contributor=viewer)
    return [{"id": c, "name": n} for c, n in circles.order_by("name", "id").values_list("id", "name")]


def circles_by_node(node_ids) -> dict[str, list[dict]]:
    """node id → all of its circles, for an owner's own list of rigs (one query for any number of rigs)."""
    rows = Node.circles.through.objects.filter(node_id__in=list(node_ids)).order_by("circle__name", "circle_id")
    found: dict[str, list[dict]] = {}
    for node_id, circle_id, name in rows.values_list("node_id", "circle_id", "circle__name"):
        found.setdefault(node_id, []).append({"id": circle_id, "name": name})
    return found

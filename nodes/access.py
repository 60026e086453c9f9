"""The one access helper for a node that an API caller names by id: visible (public or unlisted, not taken down,
not banned) or the API's 404 `node_not_found`. Owner-only operations add their own check on top of it."""

from core.api_errors import ApiError
from nodes.models import NODE_ID_MAX_LENGTH, Node


def get_visible_node(node_id) -> Node:
    """The visible node with this id, owner and relay joined, else 404 `node_not_found`."""
    node = Node.objects.visible_by_id(node_id)
    if node is None:
        # Quoted as sent, cut to an id's length: an error message must not echo a megabyte back.
        raise ApiError(404, "node_not_found", f"No node {str(node_id)[:NODE_ID_MAX_LENGTH]!r}.")
    return node

"""The tracker's side of the agent link (`/ws/agent/`): which message types an agent may send and what to do
with each, plus pushes from the tracker to one agent (revoked jtis, new filter rules, new keys).

Handlers are plain synchronous functions `(node, body) -> dict | None` (the reply, if any); apps above tracker
register theirs at start-up (moderation registers `flag`) so that tracker never imports them."""

import logging
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger("luckrig.agent_link")

HANDLERS: dict[str, Callable] = {}


def register(message_type: str, handler: Callable) -> None:
    HANDLERS[message_type] = handler


def agent_group(node_id: str) -> str:
    return f"agent.{node_id}"


def push(node_id: str, message: dict) -> None:
    """Send a message to the node's connected agent, if any (the HTTP answers carry the same facts)."""
    try:
        async_to_sync(get_channel_layer().group_send)(agent_group(node_id), {"type": "agent.push", "message": message})
    except Exception as exc:  # noqa: BLE001 - the agent also learns it from its next heartbeat answer
        log.warning("push to agent %s failed: %s", node_id, type(exc).__name__)


def push_to_all(message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)("agents", {"type": "agent.push", "message": message})
    except Exception as exc:  # noqa: BLE001
        log.warning("push to agents failed: %s", type(exc).__name__)

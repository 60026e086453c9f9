"""What an agent may send the tracker, one handler per message whichever transport carries it, plus pushes
from the tracker to one agent (revoked jtis, new filter rules, new keys).

An agent sends `heartbeat`, `usage` and `flag` over HTTP (`POST /api/nodes/<id>/heartbeat`, ...) or over its
websocket (`/ws/agent/`, plus `queue` there only). Each is one AgentMessage: validate the body, apply it (one
service call), and the answer's fields; the HTTP view wraps them as `{"schema_version": 1, ...}` with the
message's status, the agent link as `{"type": <ack>, ...}`. Who may send (node secret, hidden nodes, the
per-node budget) and how an error is told stay with each transport (tracker.auth and the exception handler;
tracker.consumers), as docs/api.md describes them. Apps above tracker register theirs at start-up (moderation
registers `flag`) so that tracker never imports them. Must not import moderation or showcase."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from rest_framework.response import Response

log = logging.getLogger("luckrig.agent_link")


class AgentMessage:
    """One message an agent sends: `type` on the link, `serializer` validates its body, `apply` records it."""

    type: str
    serializer = None
    http_status = 200
    ack: str | None = None  # the answer's `type` on the link; None: the link sends no answer

    def validate(self, body) -> dict:
        data = self.serializer(data=body)
        data.is_valid(raise_exception=True)
        return data.validated_data

    def apply(self, node, data: dict) -> dict:
        """Record the message; returns the answer's fields (both transports)."""
        raise NotImplementedError

    def http_fields(self, data: dict) -> dict:
        """Fields only the HTTP answer carries."""
        return {}

    def link_fields(self, data: dict) -> dict:
        """Fields only the link's answer carries."""
        return {}

    def over_http(self, node, body) -> Response:
        data = self.validate(body)
        answer = self.apply(node, data)
        return Response({"schema_version": 1, **self.http_fields(data), **answer}, status=self.http_status)

    def over_link(self, node, body) -> dict | None:
        data = self.validate(body)
        answer = self.apply(node, data)
        return None if self.ack is None else {"type": self.ack, **self.link_fields(data), **(answer or {})}


HANDLERS: dict[str, AgentMessage] = {}


def register(message: AgentMessage) -> None:
    HANDLERS[message.type] = message


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

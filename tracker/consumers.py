"""`/ws/agent/`: one websocket per node agent (node secret on the handshake). Up: `heartbeat`, `queue`,
`usage`, `flag`; down: `filter_rules`, `revoke`, `tracker_keys`, and replies. A refused agent's connection is
accepted, then closed with 4401, so that "refused" differs from "down". A malformed message gets an `error`
reply and changes nothing; an oversized one closes the link (1009). Nothing one agent sends affects another."""

import json
import logging
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from luckrig_site.api_errors import ApiError, _first_error
from nodes.models import Node
from tracker import agent_link, credentials, services
from tracker.keys import published_keys
from tracker.serializers import HeartbeatIn, QueueIn, UsageIn

log = logging.getLogger("luckrig.agent_link")

CLOSE_REFUSED = 4401
MAX_MESSAGE_BYTES = 256 * 1024


def _node_for(secret: str):
    if not secret.startswith(credentials.NODE_PREFIX) or len(secret) > 100:
        return None
    node = Node.objects.filter(secret_hash=credentials.digest(secret)).first()
    return node if node is not None and credentials.matches(secret, node.secret_hash) else None


def _heartbeat(node, body):
    data = HeartbeatIn(data=body)
    data.is_valid(raise_exception=True)
    v = data.validated_data
    answer = services.record_heartbeat(
        node=node,
        queue=v["queue"],
        models=v.get("models", []),
        agent_version=v.get("agent_version", ""),
        telemetry=v.get("telemetry", {}),
    )
    return {"type": "heartbeat_ack", **answer}


def _queue(node, body):
    if not isinstance(body.get("queue"), dict):
        raise ValidationError({"queue": ["must be an object"]})
    data = QueueIn(data=body["queue"])
    data.is_valid(raise_exception=True)
    services.record_queue(node=node, queue=data.validated_data)
    return None


def _usage(node, body):
    data = UsageIn(data=body)
    data.is_valid(raise_exception=True)
    result = services.record_usage(
        node=node, report_id=data.validated_data["report_id"], entries=data.validated_data["entries"]
    )
    return {"type": "usage_ack", "report_id": data.validated_data["report_id"], **result}


agent_link.register("heartbeat", _heartbeat)
agent_link.register("queue", _queue)
agent_link.register("usage", _usage)


def _link_dropped(node_id: str) -> None:
    """The agent's link went away: unless it comes back (and heartbeats) within one interval, the node turns
    unavailable. Back-dating the last heartbeat to two intervals ago leaves exactly that grace."""
    grace = timedelta(seconds=2 * settings.HEARTBEAT_INTERVAL_SEC)
    Node.objects.filter(pk=node_id, last_heartbeat_at__gt=timezone.now() - grace).update(
        last_heartbeat_at=timezone.now() - grace
    )


class AgentConsumer(AsyncWebsocketConsumer):
    node = None

    async def connect(self):
        headers = dict(self.scope.get("headers") or [])
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        self.node = await database_sync_to_async(_node_for)(secret.strip()) if scheme.lower() == "bearer" else None
        await self.accept()
        if self.node is None:
            await self.close(code=CLOSE_REFUSED)
            return
        await self.channel_layer.group_add(agent_link.agent_group(self.node.id), self.channel_name)
        await self.channel_layer.group_add("agents", self.channel_name)
        keys = await database_sync_to_async(published_keys)(timezone.now())
        version = await database_sync_to_async(services.filter_rules_version)()
        await self.send(json.dumps({"type": "tracker_keys", "keys": keys}))
        await self.send(json.dumps({"type": "filter_rules", "version": version}))

    async def disconnect(self, code):
        if self.node is not None:
            await self.channel_layer.group_discard(agent_link.agent_group(self.node.id), self.channel_name)
            await self.channel_layer.group_discard("agents", self.channel_name)
            await database_sync_to_async(_link_dropped)(self.node.id)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw) > MAX_MESSAGE_BYTES:
            await self.close(code=1009)
            return
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            await self._error("invalid_json", "The message is not JSON.")
            return
        if not isinstance(body, dict) or body.get("type") not in agent_link.HANDLERS:
            await self._error("unknown_type", f"Message types: {', '.join(sorted(agent_link.HANDLERS))}.")
            return
        try:
            reply = await database_sync_to_async(self._handle)(body)
        except ValidationError as exc:
            field, message, _ = _first_error(exc.detail)
            await self._error("invalid_field", f"{field}: {message}" if field else message, field=field)
            return
        except ApiError as exc:
            await self._error(exc.code, exc.message)
            return
        if reply is not None:
            await self.send(json.dumps(reply))

    def _handle(self, body: dict):
        node = Node.objects.get(pk=self.node.pk)  # fresh: heartbeats and moderators change the row
        return agent_link.HANDLERS[body["type"]](node, {k: v for k, v in body.items() if k != "type"})

    async def _error(self, code: str, message: str, **extra):
        await self.send(json.dumps({"type": "error", "code": code, "error": message, **extra}))

    async def agent_push(self, event):
        await self.send(json.dumps(event["message"]))

"""`/ws/agent/`: one websocket per node agent (node secret on the handshake). Up: `heartbeat`, `queue`,
`usage`, `flag`; down: `filter_rules`, `revoke`, `tracker_keys`, and replies. A refused agent's connection is
accepted, then closed with 4401, so that "refused" differs from "down". A malformed message gets an `error`
reply and changes nothing; an oversized one closes the link (1009). Nothing one agent sends affects another.

Messages are handled in order, one at a time, by a worker of the link's own, so that reading the socket never
waits for the database. A `queue` message is a complete snapshot, so the worker records them at the pace the
fan-out sends them on (ten a second on average, two in a row at most): when the next message waiting is
another `queue`, the first is only validated (an invalid one still gets its error) and not recorded, since
the next replaces it. An agent coalesces its queue changes to ~10 a second anyway; one that does not (or a
burst after a stall) costs the tracker ten writes a second, and the newest state is recorded within 100 ms."""

import asyncio
import collections
import contextlib
import json
import logging
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from luckrig_site.api_errors import ApiError, _first_error
from nodes.fanout import INTERVAL_SEC, Pace
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


def _queue_data(body) -> dict:
    if not isinstance(body.get("queue"), dict):
        raise ValidationError({"queue": ["must be an object"]})
    data = QueueIn(data=body["queue"])
    data.is_valid(raise_exception=True)
    return data.validated_data


def _queue(node, body):
    services.record_queue(node=node, queue=_queue_data(body))
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
    worker = None

    async def connect(self):
        headers = dict(self.scope.get("headers") or [])
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        self.node = await database_sync_to_async(_node_for)(secret.strip()) if scheme.lower() == "bearer" else None
        await self.accept()
        if self.node is None:
            await self.close(code=CLOSE_REFUSED)
            return
        self.inbox = collections.deque()
        self.wake = asyncio.Event()
        # Queue snapshots are recorded no faster than the fan-out sends them on: more writes would only store
        # states that nobody is sent.
        self.queue_pace = Pace(INTERVAL_SEC)
        self.worker = asyncio.create_task(self._work())
        await self.channel_layer.group_add(agent_link.agent_group(self.node.id), self.channel_name)
        await self.channel_layer.group_add("agents", self.channel_name)
        keys = await database_sync_to_async(published_keys)(timezone.now())
        version = await database_sync_to_async(services.filter_rules_version)()
        await self.send(json.dumps({"type": "tracker_keys", "keys": keys}))
        await self.send(json.dumps({"type": "filter_rules", "version": version}))

    async def disconnect(self, code):
        if self.worker is not None:
            # What the agent sent before it went is still recorded (bounded: the link is gone).
            self.inbox.append(None)
            self.wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.worker), timeout=10)
            self.worker.cancel()
        if self.node is not None:
            await self.channel_layer.group_discard(agent_link.agent_group(self.node.id), self.channel_name)
            await self.channel_layer.group_discard("agents", self.channel_name)
            await database_sync_to_async(_link_dropped)(self.node.id)

    async def dispatch(self, message):
        # Channels closes stale database connections before every handler, on the one thread that all the
        # consumers' synchronous code shares: each frame would wait there behind the database write in
        # progress, and the inbox could never see two snapshots to coalesce. receive() does not touch the
        # database (the worker's database_sync_to_async calls clean up around themselves), so frames skip it.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw) > MAX_MESSAGE_BYTES:
            await self.close(code=1009)
            return
        if self.worker is None:
            return  # refused: closing already
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = ("invalid_json", "The message is not JSON.")
        else:
            if not isinstance(body, dict) or body.get("type") not in agent_link.HANDLERS:
                body = ("unknown_type", f"Message types: {', '.join(sorted(agent_link.HANDLERS))}.")
        self.inbox.append(body)  # a dict to handle, or (code, message) to answer with an error, in order
        self.wake.set()

    async def _work(self):
        """Handle the inbox in order. A failure that is not the agent's closes the link (1011), as an
        exception in a consumer would, so that the agent reconnects rather than talk to a dead worker."""
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.inbox:
                    body = self.inbox.popleft()
                    if body is None:
                        return
                    if isinstance(body, tuple):
                        await self._error(*body)
                    else:
                        await self._process(body)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent link for %s failed", self.node.id)
            await self.close(code=1011)

    async def _process(self, body: dict):
        try:
            if body["type"] == "queue":
                loop = asyncio.get_running_loop()
                wait = self.queue_pace.delay(loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)  # a newer snapshot arriving meanwhile replaces this one
                following = self.inbox[0] if self.inbox else None
                if isinstance(following, dict) and following["type"] == "queue":
                    _queue_data(body)  # superseded: checked (an error is still answered), not recorded
                    return
                self.queue_pace.take(loop.time())
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

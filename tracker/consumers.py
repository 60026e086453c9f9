"""`/ws/agent/`: one websocket per node agent (node secret on the handshake). Up: `heartbeat`, `queue`,
`usage`, `flag`; down: `filter_rules`, `revoke`, `tracker_keys`, and replies. A refused agent's connection is
accepted, then closed with 4401 (unknown secret) or 4403 (the node is banned or taken down, also when that
happens while the link is open: at its next message), so that "refused" differs from "down". A malformed
message gets an `error` reply and changes nothing; an oversized one closes the link (1009). Nothing one agent
sends affects another. Each message type is handled by the same AgentMessage as its HTTP path
(tracker.agent_messages; `flag` is moderation's): this consumer only admits, orders and answers.

Floods are bounded: frames beyond a per-link budget (RATE_SEC a second, BURST in a row) are dropped before they
are parsed, the inbox holds at most INBOX_MAX messages (a `queue` snapshot replaces the one still waiting
behind it), and heartbeats, usage and flags also spend their node's budget (tracker.throttle: one database
write per message at most that often). Dropped messages are answered with one `rate_limited` error a second,
counting them, not one reply each.

Pushes reach the link through the channel layer, which this consumer joins itself rather than through Channels:
while the layer is down (Redis restarting) the link stays up without pushes (the agent learns revocations and
rule changes from its heartbeat answers), says so once in the log, and joins again with backoff.

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

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from core.api_errors import ApiError, _first_error
from core.clientip import scope_ip_hash
from nodes import services as node_services
from nodes.fanout import INTERVAL_SEC, Pace
from nodes.models import Node
from tracker import agent_link, bans, credentials, services, throttle
from tracker.agent_messages import QUEUE
from tracker.keys import published_keys

log = logging.getLogger("luckrig.agent_link")

CLOSE_REFUSED = 4401
CLOSE_HIDDEN = 4403  # the node is banned or taken down: the agent should stop retrying soon
MAX_MESSAGE_BYTES = 256 * 1024
RATE_SEC = 20  # frames a second on average per link (an agent sends ~10 queue snapshots a second at most)
BURST = 100
INBOX_MAX = 32
JOIN_BACKOFF_MAX_SEC = 60


def _node_for(secret: str):
    """(node, refusal): the node this secret belongs to, or None; and the ApiError that refuses its agent
    (banned, taken down), or None."""
    if not secret.startswith(credentials.NODE_PREFIX) or len(secret) > 100:
        return None, None
    node = Node.objects.filter(secret_hash=credentials.digest(secret)).first()
    if node is None or not credentials.matches(secret, node.secret_hash):
        return None, None
    try:
        bans.refuse_hidden_node(node)
    except ApiError as exc:
        return node, exc
    return node, None


def _field_error(exc: ValidationError) -> tuple[str, str]:
    """(message, field) of a validation error, as the `error` reply says it."""
    field, message, _ = _first_error(exc.detail)
    return (f"{field}: {message}" if field else message), field


def _is_queue(body) -> bool:
    return isinstance(body, dict) and body["type"] == "queue"


class Hidden(Exception):
    """The node was banned or taken down while its link was open."""


class AgentConsumer(AsyncWebsocketConsumer):
    # No channel through Channels: a consumer that listens on the layer itself is torn down, with a traceback,
    # the moment Redis goes away, and its agent reconnects every few seconds. _pushes() joins the layer instead.
    channel_layer_alias = "luckrig-agent-links-join-the-layer-themselves"
    node = None
    worker = None
    pushes = None
    layer_channel = None

    async def connect(self):
        headers = dict(self.scope.get("headers") or [])
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        refusal = None
        if scheme.lower() == "bearer":
            self.node, refusal = await database_sync_to_async(_node_for)(secret.strip())
        await self.accept()
        if self.node is None or refusal is not None:
            await self.close(code=CLOSE_REFUSED if self.node is None else CLOSE_HIDDEN)
            self.node = None
            return
        # The agent's network is the owner's, whichever transport it uses (docs/scoring.md): as on its HTTP paths.
        await database_sync_to_async(node_services.note_owner_network)(self.node, scope_ip_hash(self.scope))
        self.inbox = collections.deque()
        self.wake = asyncio.Event()
        # Queue snapshots are recorded no faster than the fan-out sends them on: more writes would only store
        # states that nobody is sent.
        self.queue_pace = Pace(INTERVAL_SEC)
        self.frames = Pace(1 / RATE_SEC, burst=BURST)
        self.dropped, self.dropped_told_at, self.tally = 0, float("-inf"), None
        self.worker = asyncio.create_task(self._work())
        self.pushes = asyncio.create_task(self._pushes())
        keys = await database_sync_to_async(published_keys)(timezone.now())
        version = await database_sync_to_async(services.filter_rules_version)()
        await self.send(json.dumps({"type": "tracker_keys", "keys": keys}))
        await self.send(json.dumps({"type": "filter_rules", "version": version}))

    async def disconnect(self, code):
        self.gone = True
        if self.worker is not None:
            # What the agent sent before it went is still recorded (bounded: the link is gone).
            self.inbox.append(None)
            self.wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.worker), timeout=10)
            self.worker.cancel()
        if getattr(self, "tally", None) is not None:
            self.tally.cancel()
        if self.pushes is not None:
            self.pushes.cancel()
            with contextlib.suppress(BaseException):
                await self.pushes
            if self.layer_channel is not None:
                with contextlib.suppress(Exception):
                    layer = get_channel_layer()
                    await layer.group_discard(agent_link.agent_group(self.node.id), self.layer_channel)
                    await layer.group_discard("agents", self.layer_channel)
        if self.node is not None:
            await database_sync_to_async(node_services.link_dropped)(self.node.id)

    async def _pushes(self):
        """Join this node's group and the all-agents group on the channel layer and forward what they carry.
        While the layer is down: one warning (no traceback), retries with backoff, and the link stays up."""
        layer = get_channel_layer()
        if layer is None:
            return
        backoff, down = 1.0, False
        while True:
            try:
                if self.layer_channel is None:
                    channel = await layer.new_channel()
                    await layer.group_add(agent_link.agent_group(self.node.id), channel)
                    await layer.group_add("agents", channel)
                    self.layer_channel = channel
                    if down:
                        log.info("agent link for %s: channel layer back, pushes resume", self.node.id)
                    backoff, down = 1.0, False
                message = await layer.receive(self.layer_channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the layer is down (Redis restarting)
                if not down:
                    log.warning(
                        "agent link for %s: channel layer unavailable (%s); no pushes until it is back",
                        self.node.id,
                        type(exc).__name__,
                    )
                    down = True
                self.layer_channel = None  # a restarted Redis has forgotten the groups: join again
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, JOIN_BACKOFF_MAX_SEC)
                continue
            if message.get("type") == "agent.push":
                with contextlib.suppress(Exception):
                    await self.send(json.dumps(message["message"]))

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
        now = asyncio.get_running_loop().time()
        if self.frames.delay(now) > 0 or len(self.inbox) >= INBOX_MAX:
            await self._drop(now)  # before parsing: a flood costs no more than counting it
            return
        self.frames.take(now)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = ("invalid_json", "The message is not JSON.")
        else:
            if not isinstance(body, dict) or body.get("type") not in agent_link.HANDLERS:
                body = ("unknown_type", f"Message types: {', '.join(sorted(agent_link.HANDLERS))}.")
        waiting = self.inbox[-1] if self.inbox else None
        if _is_queue(body) and _is_queue(waiting):
            # A newer snapshot replaces the one still waiting (an invalid one is still answered), so that a burst
            # of snapshots holds one inbox slot, not one each.
            self.inbox.pop()
            try:
                QUEUE.validate(waiting)
            except ValidationError as exc:
                self.inbox.append(("invalid_field", *_field_error(exc)))
        self.inbox.append(body)  # a dict to handle, or (code, message[, field]) to answer with an error, in order
        self.wake.set()

    async def _drop(self, now: float):
        """Count a dropped frame; tell the agent at most once a second how many were dropped (the tally of a
        second that ends quietly is sent when it ends)."""
        self.dropped += 1
        wait = self.dropped_told_at + 1.0 - now
        if wait <= 0:
            await self._tell_dropped(now)
        elif self.tally is None:
            self.tally = asyncio.create_task(self._tell_dropped_later(wait))

    async def _tell_dropped_later(self, wait: float):
        await asyncio.sleep(wait)
        self.tally = None
        if self.dropped:
            await self._tell_dropped(asyncio.get_running_loop().time())

    async def _tell_dropped(self, now: float):
        self.dropped_told_at = now
        dropped, self.dropped = self.dropped, 0
        with contextlib.suppress(Exception):  # the link may be closing
            await self._error(
                "rate_limited",
                f"Too many messages on this link: {dropped} dropped; send at most {RATE_SEC} a second.",
                dropped=dropped,
                retry_after_sec=1,
            )

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
                        code, message, *field = body
                        await self._error(code, message, **({"field": field[0]} if field else {}))
                    else:
                        await self._process(body)
        except asyncio.CancelledError:
            raise
        except Hidden:
            await self.close(code=CLOSE_HIDDEN)
        except Node.DoesNotExist:
            await self.close(code=CLOSE_REFUSED)  # deleted by its owner: the secret is gone with it
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
                    QUEUE.validate(body)  # superseded: checked (an error is still answered), not recorded
                    return
                self.queue_pace.take(loop.time())
            reply = await database_sync_to_async(self._handle)(body)
        except ValidationError as exc:
            message, field = _field_error(exc)
            await self._error("invalid_field", message, field=field)
            return
        except ApiError as exc:
            await self._error(exc.code, exc.message, **exc.extra)
            if exc.code in ("banned", "taken_down"):
                raise Hidden from exc
            return
        if reply is not None:
            await self._reply(reply)

    def _handle(self, body: dict):
        # The node's budget first: a flood is refused before it costs a read.
        throttle.refuse_if_over(self.node.pk, body["type"])
        node = Node.objects.get(pk=self.node.pk)  # fresh: heartbeats and moderators change the row
        bans.refuse_hidden_node(node)
        message = agent_link.HANDLERS[body["type"]]
        return message.over_link(node, {k: v for k, v in body.items() if k != "type"})

    async def _error(self, code: str, message: str, **extra):
        await self._reply({"type": "error", "code": code, "error": message, **extra})

    async def _reply(self, message: dict):
        """Answer the agent, unless it has gone: the worker still records what it sent before it went (usage must
        not be lost), and the answers to those messages have nowhere to go."""
        if getattr(self, "gone", False):
            return
        try:
            await self.send(json.dumps(message))
        except Exception:  # noqa: BLE001 - the socket closed under us (Daphne raises its own Disconnected)
            self.gone = True

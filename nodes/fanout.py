"""Process-local fan-out for the queue websockets: one channel-layer member per process, latest state wins.

A queue change goes to every subscriber of a node. Through the channel layer directly, each subscriber is its
own channel: one change becomes N layer messages (N Redis round trips in production), and the layer drops
messages when a busy consumer's channel is full. Instead each process joins a node's group once, with one
channel of its own, and hands every message to its local subscribers itself. The layer then carries one
message per process, whatever the number of subscribers.

A queue message is a complete snapshot of a node's queue, never a delta, so a subscriber only needs the newest
one. Each group therefore sends at a bounded pace (`Pace`: ten batches a second, two in a row at most): a
change goes out at once while the pace allows, otherwise it waits for the next slot, and a snapshot
superseded while it waits (a newer one for the same node) is dropped, not sent late. Whatever rate an agent
sends at, a subscriber gets at most ~10 messages a second per node, and holds the newest state within
INTERVAL_SEC (plus the time to write it) of this process receiving it. Reading the layer only records the
newest text, so the layer's channel never backs up. Snapshots reach a subscriber in the order the process
received them, never an older one after a newer one; statuses (stale/live) and closes are never coalesced.

Under Daphne, each message is framed once (autobahn's prepared messages) and written to every local
subscriber's socket with no await per subscriber (see _write). A subscriber that stops reading is dropped, not
buffered for: once more than MAX_BACKLOG_BYTES written to its socket wait unread in this process, its connection
is aborted (a close handshake could not reach it either) and it leaves the group. A slow reader that catches up
loses nothing it needs, since every message is a whole snapshot."""

import asyncio
import contextlib
import functools
import json
import logging
from dataclasses import dataclass, field

log = logging.getLogger("luckrig.queue")
REFRESH_SEC = 3600  # re-join before channels_redis' group expiry (a day by default) could drop us
INTERVAL_SEC = 0.1  # one send per node group (or all-nodes stream) and process every 100 ms on average
# Told to subscribers when live updates stop (the channel layer is down) and when they resume.
STALE = '{"type":"status","stale":true,"reason":"live updates are interrupted; the last state shown may be old"}'
LIVE = '{"type":"status","stale":false}'
# Unread bytes a subscriber may leave waiting in this process before it is dropped: about a minute of the
# busiest node's snapshots at the fan-out's pace, and bounded memory per subscriber whatever it does.
MAX_BACKLOG_BYTES = 256 * 1024


class Pace:
    """At most one event per `interval` on average and `burst` in a row (a token bucket, kept as the time the
    next event is due, GCRA). The burst matters: with a strict minimum gap, changes that come at about the
    pace itself (an agent coalescing to ten a second) would each wait for the previous one's jitter, and the
    waits add up until changes are skipped; with a burst of two they go out at once."""

    def __init__(self, interval: float, burst: int = 2):
        self.interval = interval
        self.slack = (burst - 1) * interval
        self.due = float("-inf")

    def delay(self, now: float) -> float:
        """How long to wait before the next event may happen."""
        return max(0.0, self.due - self.slack - now)

    def take(self, now: float) -> None:
        self.due = max(self.due, now) + self.interval


@dataclass(eq=False)
class _Group:
    channel: str
    # consumer -> its autobahn protocol when it runs under Daphne (see _protocol_of), else None
    members: dict = field(default_factory=dict)
    joining: int = 0  # subscribers loading their first snapshot: the group must not be torn down meanwhile
    # node id -> the newest snapshot text this process has received (None: the node was removed). It is what
    # a new subscriber starts from, so that it never gets a state older than one the others were sent.
    latest: dict = field(default_factory=dict)
    # What is still to send, in order: node id -> ("text", snapshot), or a unique key -> ("text", status) or
    # ("close", code). A newer snapshot for a node replaces the waiting one and moves to the end.
    outbox: dict = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)
    pace: Pace = field(default_factory=lambda: Pace(INTERVAL_SEC))
    tasks: list = field(default_factory=list)

    def post(self, key, item: tuple) -> None:
        self.outbox.pop(key, None)
        self.outbox[key] = item
        self.wake.set()

    def post_snapshot(self, node_id: str, text: str, removed: bool = False) -> None:
        self.latest[node_id] = None if removed else text
        self.post(node_id, ("text", text))


def _protocol_of(consumer):
    """Under Daphne a consumer's `base_send` is `functools.partial(server.handle_reply, protocol)`; the
    autobahn protocol can write a frame prepared once for all subscribers. Anything else (the tests'
    communicators, another ASGI server) gets `consumer.send`."""
    send = getattr(consumer, "base_send", None)
    if isinstance(send, functools.partial) and send.args and hasattr(send.args[0], "sendPreparedMessage"):
        return send.args[0]
    return None


def _plain(protocol) -> bool:
    """True when a prepared frame can go straight to the transport: no per-message compression negotiated
    and nothing queued inside autobahn. autobahn's sendData would do the same write, after formatting a debug
    log line (colours included) on every call: about a third of the write call. Attributes autobahn might
    rename default to "no", which keeps its own sendPreparedMessage."""
    return getattr(protocol, "_perMessageCompress", True) is None and not getattr(protocol, "send_queue", True)


def _backlog(protocol) -> int:
    """Bytes written to a subscriber's socket that it has not read yet and that wait in this process (Twisted's
    write buffer of the TCP transport). 0 when there is nothing to go by (another transport, renamed
    attributes): such a subscriber is never dropped for its backlog."""
    transport = getattr(protocol, "transport", None)
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # noqa: SLF001
    except (AttributeError, TypeError):
        return 0


def _drop(protocol) -> None:
    with contextlib.suppress(Exception):
        protocol.transport.abortConnection()


async def _write(members: list, text: str) -> list:
    """Write `text` to every member; returns the consumers dropped for not reading."""
    prepared, dropped = None, []
    for consumer, protocol in members:
        try:
            if protocol is not None and protocol.state == protocol.STATE_OPEN:
                if _backlog(protocol) > MAX_BACKLOG_BYTES:
                    _drop(protocol)
                    dropped.append(consumer)
                    continue
                if prepared is None:
                    prepared = protocol.factory.prepareMessage(text.encode())
                if _plain(protocol):
                    protocol.transport.write(prepared.payloadHybi)
                else:
                    protocol.sendPreparedMessage(prepared)
            else:  # not under Daphne, or a socket not (or no longer) open: the ordinary path decides
                await consumer.send(text_data=text)
        except Exception:  # noqa: BLE001, S112 - one broken socket must not stop the others
            continue
    if dropped:
        log.info("queue fan-out dropped %d subscriber(s) that stopped reading", len(dropped))
    return dropped


class LocalFanout:
    def __init__(self):
        self._groups: dict[tuple[int, str], _Group] = {}
        self._lock: asyncio.Lock | None = None

    def _key(self, group: str) -> tuple[int, str]:
        return id(asyncio.get_running_loop()), group

    async def join(self, layer, group: str, consumer) -> None:
        """Add an accepted subscriber and send it the group's current state.

        The first snapshots are read from the database once this process is in the layer group, so that no
        change can fall between the two. Where the process has already received a state through the layer, it
        sends that one instead: every later snapshot will be at least as new, so the order holds."""
        key = self._key(group)
        if self._lock is None or self._lock._loop is not asyncio.get_running_loop():  # noqa: SLF001
            self._lock = asyncio.Lock()
        async with self._lock:
            entry = self._groups.get(key)
            if entry is None:
                channel = await layer.new_channel()
                await layer.group_add(group, channel)
                entry = self._groups[key] = _Group(channel=channel)
                entry.tasks = [
                    asyncio.create_task(self._pump(layer, group, entry)),
                    asyncio.create_task(self._flush(entry)),
                ]
            entry.joining += 1
        try:
            from nodes.queue_feed import ALL_GROUP

            if group != ALL_GROUP and entry.latest:
                first = list(entry.latest.items())  # a node group: the process already knows its state
            else:
                first = await self.snapshots(group)
            async with entry.sending:  # no batch goes out between choosing these and joining the members
                # A state still waiting in the outbox reaches the newcomer with the next batch, and only then.
                texts = [entry.latest.get(node_id, text) for node_id, text in first if node_id not in entry.outbox]
                protocol = _protocol_of(consumer)
                dropped = []
                for text in texts:
                    if text is not None and not dropped:
                        dropped = await _write([(consumer, protocol)], text)
                if not dropped:
                    entry.members[consumer] = protocol
        finally:
            entry.joining -= 1
            await self._drop_if_unused(layer, group, entry)

    async def leave(self, layer, group: str, consumer) -> None:
        entry = self._groups.get(self._key(group))
        if entry is not None:
            entry.members.pop(consumer, None)
            await self._drop_if_unused(layer, group, entry)

    async def _drop_if_unused(self, layer, group: str, entry: _Group) -> None:
        if entry.members or entry.joining or self._groups.get(self._key(group)) is not entry:
            return
        del self._groups[self._key(group)]
        for task in entry.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await layer.group_discard(group, entry.channel)

    async def _pump(self, layer, group: str, entry: _Group) -> None:
        """Read the group's layer channel and record each message: never waits for subscribers."""
        stale = False
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(entry.channel), timeout=REFRESH_SEC)
            except TimeoutError:
                await layer.group_add(group, entry.channel)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the layer is down (Redis restarting)
                if not stale:
                    log.warning("queue fan-out for %s interrupted: %s", group, type(exc).__name__)
                    stale = True
                    entry.post(object(), ("text", STALE))
                await asyncio.sleep(1)
                # A restarted Redis has forgotten every group: join again, and say so once it works.
                with contextlib.suppress(Exception):
                    await layer.group_add(group, entry.channel)
                    stale = False
                    entry.post(object(), ("text", LIVE))
                    for node_id, text in await self.snapshots(group):  # what changed meanwhile
                        entry.post_snapshot(node_id, text)
                continue
            if message.get("type") == "queue.update":
                text = message["text"]
                node_id = message.get("node_id") or json.loads(text).get("node_id")
                entry.post_snapshot(node_id, text, removed=bool(message.get("removed")))
            elif message.get("type") == "queue.gone":
                entry.post(object(), ("close", 4404))

    async def _flush(self, entry: _Group) -> None:
        """Send what the outbox holds, at the group's pace."""
        loop = asyncio.get_running_loop()
        while True:
            await entry.wake.wait()
            wait = entry.pace.delay(loop.time())
            if wait > 0:
                await asyncio.sleep(wait)  # meanwhile newer snapshots replace the waiting ones
            entry.wake.clear()
            async with entry.sending:  # taken under the lock, so that a newcomer's first state is consistent
                items = list(entry.outbox.values())
                entry.outbox.clear()
                entry.pace.take(loop.time())
                members = list(entry.members.items())
                try:
                    for kind, value in items:
                        if kind == "text":
                            for consumer in await _write(members, value):
                                entry.members.pop(consumer, None)
                            members = list(entry.members.items())
                        else:
                            for consumer, _ in members:
                                with contextlib.suppress(Exception):
                                    await consumer.close(code=value)
                except Exception:  # a bug here must not silence the group for good: say it, go on
                    log.exception("queue fan-out send failed")

    @staticmethod
    async def snapshots(group: str) -> list[tuple[str, str]]:
        from channels.db import database_sync_to_async

        from nodes import queue_feed

        return await database_sync_to_async(queue_feed.snapshots)(group)


FANOUT = LocalFanout()

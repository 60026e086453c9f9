"""Process-local fan-out for the queue websockets.

A queue change goes to every subscriber of a node. Through the channel layer directly, each subscriber is its
own channel: one change becomes N layer messages (N Redis round trips in production), and the layer drops
messages when a busy consumer's channel is full. Instead each process joins a node's group once, with one
channel of its own, and hands every message to its local subscribers itself. The layer then carries one
message per process, whatever the number of subscribers."""

import asyncio
import contextlib
import json
import logging

log = logging.getLogger("luckrig.queue")
REFRESH_SEC = 3600  # re-join before channels_redis' group expiry (a day by default) could drop us
# Told to subscribers when live updates stop (the channel layer is down) and when they resume.
STALE = '{"type":"status","stale":true,"reason":"live updates are interrupted; the last state shown may be old"}'
LIVE = '{"type":"status","stale":false}'


class LocalFanout:
    def __init__(self):
        self._groups: dict[tuple[int, str], dict] = {}
        self._lock: asyncio.Lock | None = None

    def _key(self, group: str) -> tuple[int, str]:
        return id(asyncio.get_running_loop()), group

    async def join(self, layer, group: str, consumer) -> None:
        if self._lock is None or self._lock._loop is not asyncio.get_running_loop():  # noqa: SLF001
            self._lock = asyncio.Lock()
        async with self._lock:
            entry = self._groups.get(self._key(group))
            if entry is None:
                channel = await layer.new_channel()
                await layer.group_add(group, channel)
                entry = {"members": set(), "channel": channel}
                entry["task"] = asyncio.create_task(self._pump(layer, group, channel))
                self._groups[self._key(group)] = entry
            entry["members"].add(consumer)

    async def leave(self, layer, group: str, consumer) -> None:
        entry = self._groups.get(self._key(group))
        if entry is None:
            return
        entry["members"].discard(consumer)
        if not entry["members"]:
            self._groups.pop(self._key(group), None)
            entry["task"].cancel()
            with contextlib.suppress(Exception):
                await layer.group_discard(group, entry["channel"])

    async def _pump(self, layer, group: str, channel: str) -> None:
        key = self._key(group)
        stale = False
        while key in self._groups:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=REFRESH_SEC)
            except TimeoutError:
                await layer.group_add(group, channel)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the layer is down (Redis restarting)
                if not stale:
                    log.warning("queue fan-out for %s interrupted: %s", group, type(exc).__name__)
                    stale = True
                    await self._tell(key, STALE)
                await asyncio.sleep(1)
                # A restarted Redis has forgotten every group: join again, and say so once it works.
                with contextlib.suppress(Exception):
                    await layer.group_add(group, channel)
                    stale = False
                    await self._tell(key, LIVE)
                    for snapshot in await self.snapshots(group):  # what changed meanwhile
                        await self._tell(key, snapshot)
                continue
            if message.get("type") == "queue.update":
                await self._tell(key, message["text"])
            elif message.get("type") == "queue.gone":
                await self._close_all(key)

    @staticmethod
    async def snapshots(group: str) -> list[str]:
        from channels.db import database_sync_to_async

        from nodes import queue_view
        from nodes.models import Node

        def load():
            if group == queue_view.ALL_GROUP:
                nodes = Node.objects.listed().filter(status__in=[Node.Status.AVAILABLE, Node.Status.BUSY])[:5000]
            else:
                nodes = Node.objects.visible().filter(pk=group.removeprefix("queue."))
            return [json.dumps(queue_view.message(n), separators=(",", ":")) for n in nodes]

        return await database_sync_to_async(load)()

    async def _tell(self, key, text: str) -> None:
        entry = self._groups.get(key)
        for consumer in list(entry["members"]) if entry else ():
            with contextlib.suppress(Exception):  # one broken socket must not stop the others
                await consumer.send(text_data=text)

    async def _close_all(self, key) -> None:
        entry = self._groups.get(key)
        for consumer in list(entry["members"]) if entry else ():
            with contextlib.suppress(Exception):
                await consumer.close(code=4404)


FANOUT = LocalFanout()

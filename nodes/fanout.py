"""Process-local fan-out for the queue websockets.

A queue change goes to every subscriber of a node. Through the channel layer directly, each subscriber is its
own channel: one change becomes N layer messages (N Redis round trips in production), and the layer drops
messages when a busy consumer's channel is full. Instead each process joins a node's group once, with one
channel of its own, and hands every message to its local subscribers itself. The layer then carries one
message per process, whatever the number of subscribers."""

import asyncio
import contextlib
import logging

log = logging.getLogger("luckrig.queue")
REFRESH_SEC = 3600  # re-join before channels_redis' group expiry (a day by default) could drop us


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
        while key in self._groups:
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=REFRESH_SEC)
            except TimeoutError:
                await layer.group_add(group, channel)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the layer hiccuped (Redis restarting): retry shortly
                log.warning("queue fan-out for %s: %s", group, type(exc).__name__)
                await asyncio.sleep(1)
                continue
            entry = self._groups.get(key)
            if entry is None:
                return
            for consumer in list(entry["members"]):
                with contextlib.suppress(Exception):  # one broken socket must not stop the others
                    if message.get("type") == "queue.update":
                        await consumer.send(text_data=message["text"])
                    elif message.get("type") == "queue.gone":
                        await consumer.close(code=4404)


FANOUT = LocalFanout()

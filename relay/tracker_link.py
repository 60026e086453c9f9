"""What the relay says to the tracker and hears back: the tracker's public keys (cached on disk, refreshed, kept
through an outage), heartbeats (which tunnels are open: a node whose tunnel is gone turns unavailable), and the
witness reports (retried with the same report_id until acknowledged; bounded in memory, since the relay keeps no
database). Nothing here ever stops the relay serving."""

import asyncio
import collections
import contextlib
import logging
import random
import secrets
import time
from pathlib import Path

import aiohttp

from node_agent.tracker_keys import TrackerKeyCache
from relay import __version__

log = logging.getLogger("luckrig.relay.tracker")

MAX_PENDING_ENTRIES = 20_000  # witness entries kept while the tracker is down; the oldest go first
REPORT_BATCH = 500


class TrackerLink:
    def __init__(self, *, session: aiohttp.ClientSession, config, keys, registry):
        self.session, self.config, self.keys, self.registry = session, config, keys, registry
        self.tracker = config.tracker.rstrip("/")
        self.key_cache = TrackerKeyCache(
            tracker=self.tracker, path=Path(config.state_dir) / "tracker_keys.json", log=log
        )
        self.pending: collections.deque = collections.deque(maxlen=MAX_PENDING_ENTRIES)
        self.dropped = 0
        self.relays: dict[str, str] = {}  # live relay id → public URL, from the last heartbeat answer
        self.draining = False
        self.last_heartbeat_ok: float | None = None
        self.down_since: float | None = None  # the first failed heartbeat of the current outage
        self.back_since = 0.0  # the first good heartbeat after the last outage (0: there was none)
        self._last_refresh = 0.0
        self._report_wakeup = asyncio.Event()
        self._tunnels_changed = asyncio.Event()

    @property
    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.config.relay_secret}"}

    # --- keys -------------------------------------------------------------------------------------------

    def load_cached_keys(self) -> None:
        keys = self.key_cache.cached()
        if keys:
            self.keys.set(keys)

    async def refresh_keys(self) -> bool:
        self._last_refresh = time.monotonic()
        keys = await self.key_cache.fetch(self.session)
        if keys:
            self.keys.set(keys)
        return bool(keys)

    def unknown_kid_seen(self) -> None:
        """A token or ticket named a key we do not have: the tracker may have published a new one. Refresh, at
        most every 30 s (a flood of garbage tokens must not become a flood of requests to the tracker)."""
        if time.monotonic() - self._last_refresh > 30:
            self._last_refresh = time.monotonic()
            task = asyncio.ensure_future(self.refresh_keys())
            task.add_done_callback(lambda t: t.exception())

    async def _keys_loop(self) -> None:
        while True:
            have = bool(self.keys.keys)
            await asyncio.sleep((600 if have else 5) + random.uniform(0, 60 if have else 2))
            await self.refresh_keys()

    # --- heartbeats -------------------------------------------------------------------------------------

    async def heartbeat_once(self) -> bool:
        body = {
            "schema_version": 1,
            "version": __version__,
            "tunnels": sorted(t.node_id for t in self.registry.tunnels.values() if t.usable),
            "open_streams": self.registry.open_streams,
        }
        if self.draining:
            body["draining"] = True
        try:
            async with self.session.post(
                f"{self.tracker}/api/relays/{self.config.relay_id}/heartbeat",
                json=body,
                headers=self._auth,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    log.warning("heartbeat refused: HTTP %s", resp.status)
                    return self._failed()
                answer = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("heartbeat failed (%s)", type(exc).__name__)
            return self._failed()
        relays = answer.get("relays") if isinstance(answer, dict) else None
        if isinstance(relays, list):
            self.relays = {
                str(r.get("relay_id")): str(r.get("public_url"))
                for r in relays
                if isinstance(r, dict) and r.get("relay_id") and r.get("public_url")
            }
        self.last_heartbeat_ok = time.time()
        if self.down_since is not None:
            self.down_since, self.back_since = None, time.time()
        return True

    def _failed(self) -> bool:
        if self.down_since is None:
            self.down_since = time.time()
        return False

    def tracker_down(self) -> bool:
        """The tracker has not answered a heartbeat for a while (a blip of one failed beat does not count)."""
        return self.down_since is not None and time.time() - self.down_since > 2 * self.config.heartbeat_interval

    def tracker_back_for(self) -> float:
        return time.time() - self.back_since if self.down_since is None else 0.0

    def tunnels_changed(self) -> None:
        """A tunnel opened or closed: tell the tracker now rather than at the next beat, so that a rig is tokenable
        as soon as it is reachable and turns unavailable as soon as it is not."""
        self._tunnels_changed.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            ok = await self.heartbeat_once()
            wait = self.config.heartbeat_interval if ok else min(5.0, self.config.heartbeat_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tunnels_changed.wait(), timeout=wait)
                await asyncio.sleep(0.2)  # coalesce a burst (a relay restart brings every agent back at once)
            self._tunnels_changed.clear()

    # --- witness reports --------------------------------------------------------------------------------

    def record(self, entry: dict) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(entry)
        if len(self.pending) >= REPORT_BATCH:
            self._report_wakeup.set()

    async def report_once(self, report_id: str, entries: list[dict]) -> bool:
        body = {"schema_version": 1, "report_id": report_id, "entries": entries}
        try:
            async with self.session.post(
                f"{self.tracker}/api/relays/{self.config.relay_id}/reports",
                json=body,
                headers=self._auth,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                if resp.status == 202:
                    return True
                if 400 <= resp.status < 500 and resp.status != 429:
                    # The tracker will never take this batch: keep it from blocking every later one.
                    log.warning("witness report refused: HTTP %s; dropping %d entries", resp.status, len(entries))
                    return True
                log.warning("witness report not taken: HTTP %s; retrying", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("witness report failed (%s); retrying", type(exc).__name__)
        return False

    async def flush(self) -> None:
        backoff = 2.0
        while self.pending:
            entries = [self.pending.popleft() for _ in range(min(REPORT_BATCH, len(self.pending)))]
            report_id = "rr_" + secrets.token_hex(8)
            while not await self.report_once(report_id, entries):  # same report_id: the tracker counts it once
                await asyncio.sleep(backoff + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, 120.0)
            backoff = 2.0

    async def _report_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_wakeup.wait(), timeout=self.config.report_interval)
            self._report_wakeup.clear()
            await self.flush()

    async def run(self) -> None:
        await asyncio.gather(self._keys_loop(), self._heartbeat_loop(), self._report_loop())

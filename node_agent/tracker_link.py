"""Everything the agent says to the tracker, over HTTP with the node secret: heartbeats (queue snapshot,
models, version, telemetry), usage reports from the local append-only log, the tracker's signing keys (cached
on disk so the agent keeps verifying while the tracker is down), revoked jtis and filter rules.

Failures are retried with exponential backoff and jitter; nothing here ever stops the agent serving."""

import asyncio
import contextlib
import json
import logging
import random
from pathlib import Path

import aiohttp

from node_agent import __version__, auth
from node_agent.ledger import Ledger

log = logging.getLogger("luckrig.agent.tracker")


class TrackerLink:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        tracker: str,
        node_id: str,
        node_secret: str,
        state_dir: Path,
        ledger: Ledger,
        heartbeat_interval: float,
    ):
        self.session = session
        self.tracker = tracker.rstrip("/")
        self.node_id, self.node_secret = node_id, node_secret
        self.keys_file = state_dir / "tracker_keys.json"
        self.ledger = ledger
        self.interval = heartbeat_interval
        self.revoked: set[str] = set()
        self.filter_rules_version = None
        self.last_heartbeat_ok: bool | None = None
        self.on_keys = None  # callback(dict kid → key)
        self.on_rules = None  # callback(rules, version)
        self.snapshot = None  # callable → heartbeat body parts
        self._usage_wakeup = asyncio.Event()

    @property
    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.node_secret}"}

    # --- keys -------------------------------------------------------------------------------------------

    def cached_keys(self) -> dict:
        try:
            return auth.load_keys(json.loads(self.keys_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return {}

    async def refresh_keys(self) -> dict:
        """Fetch /api/tracker-keys and cache it; on failure keep the cached keys."""
        try:
            async with self.session.get(
                self.tracker + "/api/tracker-keys", timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                resp.raise_for_status()
                published = (await resp.json())["keys"]
            keys = auth.load_keys(published)
            if keys:
                self.keys_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.keys_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(published))
                tmp.replace(self.keys_file)
                return keys
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.warning("could not fetch the tracker's keys (%s); using cached keys", type(exc).__name__)
        return self.cached_keys()

    # --- loops ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self._heartbeat_loop(), self._usage_loop(), self._keys_loop())

    async def _keys_loop(self) -> None:
        while True:
            await asyncio.sleep(600 + random.uniform(0, 60))
            keys = await self.refresh_keys()
            if keys and self.on_keys:
                self.on_keys(keys)

    async def heartbeat_once(self) -> bool:
        body = {"schema_version": 1, "agent_version": __version__, **(self.snapshot() if self.snapshot else {})}
        try:
            async with self.session.post(
                f"{self.tracker}/api/nodes/{self.node_id}/heartbeat",
                json=body,
                headers=self._auth,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    log.warning("heartbeat refused: HTTP %s", resp.status)
                    return False
                answer = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("heartbeat failed (%s)", type(exc).__name__)
            return False
        self.revoked = set(answer.get("revoked_jtis") or [])
        version = answer.get("filter_rules_version")
        if version != self.filter_rules_version:
            self.filter_rules_version = version
            await self.fetch_filter_rules()
        return True

    async def fetch_filter_rules(self) -> None:
        try:
            async with self.session.get(
                self.tracker + "/api/filter-rules", headers=self._auth, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                if resp.status != 200:
                    return  # the tracker publishes no rules: the built-in defaults stay
                doc = await resp.json()
            if self.on_rules and isinstance(doc.get("rules"), list):
                self.on_rules(doc["rules"], doc.get("version"))
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return

    async def _heartbeat_loop(self) -> None:
        backoff = 1.0
        while True:
            ok = await self.heartbeat_once()
            self.last_heartbeat_ok = ok
            if ok:
                backoff = 1.0
                await asyncio.sleep(self.interval)
            else:
                await asyncio.sleep(min(self.interval, backoff) + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, 60.0)

    def usage_added(self) -> None:
        self._usage_wakeup.set()

    async def report_usage_once(self) -> bool:
        start, end, entries = self.ledger.pending_usage()
        if not entries:
            if end > start:
                self.ledger.ack_usage(end)  # only unreadable lines: skip them
            return True
        body = {"schema_version": 1, "report_id": f"{self.node_id[:40]}-{start}-{end}", "entries": entries}
        try:
            async with self.session.post(
                f"{self.tracker}/api/nodes/{self.node_id}/usage",
                json=body,
                headers=self._auth,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                if resp.status != 202:
                    log.warning("usage report refused: HTTP %s", resp.status)
                    return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("usage report failed (%s); kept for later", type(exc).__name__)
            return False
        self.ledger.ack_usage(end)
        return True

    async def _usage_loop(self) -> None:
        backoff = 2.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._usage_wakeup.wait(), timeout=30)
            self._usage_wakeup.clear()
            await asyncio.sleep(1.0)  # gather a few requests into one report
            while not await self.report_usage_once():
                await asyncio.sleep(backoff + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, 300.0)
            backoff = 2.0

"""Everything the agent says to the tracker: heartbeats (queue snapshot, models, version, telemetry), queue
changes, usage reports from the local append-only log and moderation flags, up; the tracker's signing keys
(cached on disk so the agent keeps verifying while the tracker is down), revoked jtis, filter rules and the rig's
radius (visibility, circles, circle-only hours: node_agent/circles.py), down.

One websocket (`/ws/agent/`, node secret on the handshake) carries all of it while it is open, reconnecting
with backoff and jitter; the HTTP endpoints are the fallback whenever it is not. Failures are retried;
nothing here ever stops the agent serving."""

import asyncio
import contextlib
import json
import logging
import random
from pathlib import Path

import aiohttp

from node_agent import __version__, rules_cache
from node_agent.ledger import Ledger
from node_agent.tracker_keys import TrackerKeyCache

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
        self.key_cache = TrackerKeyCache(tracker=tracker, path=state_dir / "tracker_keys.json", log=log)
        self.ledger = ledger
        self.interval = heartbeat_interval
        self.state_dir = state_dir
        self.revoked_file = state_dir / "revoked.json"
        try:  # revocations survive a restart during a tracker outage
            self.revoked: set[str] = set(json.loads(self.revoked_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            self.revoked = set()
        self.filter_rules_version = None
        self.last_heartbeat_ok: bool | None = None
        # A tracker from before v1.1 takes only scalar telemetry values: once it refuses a heartbeat for its
        # telemetry, lists (filter_categories) are left out, so that the rig keeps heartbeating (and stays listed).
        self.scalar_telemetry_only = False
        # Likewise a tracker from before issue 16 knows no `model_identity`: once refused for it, it is left out.
        self.without_model_identity = False
        self.on_keys = None  # callback(dict kid → key)
        self.on_rules = None  # callback(rules)
        self.on_circles = None  # callback(dict with visibility, circles, circle_only_hours): the rig's radius
        self.snapshot = None  # callable → heartbeat body parts
        self.queue_view = None  # callable → the queue part alone
        self._usage_wakeup = asyncio.Event()
        self._tracker_back = asyncio.Event()  # a heartbeat got through after failing: report held usage at once
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._queue_dirty = asyncio.Event()
        self._usage_acks: dict[str, asyncio.Future] = {}

    @property
    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.node_secret}"}

    # --- keys -------------------------------------------------------------------------------------------

    def cached_keys(self) -> dict:
        return self.key_cache.cached()

    async def refresh_keys(self) -> dict:
        """Fetch /api/tracker-keys and cache it; on failure keep the cached keys."""
        return await self.key_cache.fetch(self.session) or self.key_cache.cached()

    # --- loops ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(
            self._heartbeat_loop(), self._usage_loop(), self._keys_loop(), self._ws_loop(), self._queue_loop()
        )

    # --- the websocket link -----------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return self.tracker.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws/agent/"

    @property
    def linked(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def _ws_loop(self) -> None:
        backoff = 1.0
        while True:
            try:
                async with self.session.ws_connect(
                    self.ws_url, headers=self._auth, heartbeat=20, max_msg_size=4 * 1024 * 1024
                ) as ws:
                    self.ws = ws
                    await self.heartbeat_once()
                    backoff = 1.0
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await self._on_message(msg.data)
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
                    if ws.close_code == 4401:
                        log.warning("the tracker refused the agent link (4401): wrong node secret?")
                        backoff = 60.0
                    elif ws.close_code == 4403:
                        # Taken down or banned: a moderator's decision, which retrying every second cannot change.
                        log.warning("the tracker closed the agent link (4403): this node is taken down or banned")
                        backoff = 300.0
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.info("agent link unavailable (%s); using HTTP", type(exc).__name__)
            finally:
                self.ws = None
            await asyncio.sleep(backoff + random.uniform(0, backoff / 2))
            backoff = min(backoff * 2, 60.0)

    async def _on_message(self, data: str) -> None:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "heartbeat_ack":
            await self._apply_answer(message)
        elif kind == "revoke":
            self._revoke(str(j) for j in message.get("jtis") or [])
        elif kind == "circles":
            self._circles(message)
        elif kind == "filter_rules":
            if message.get("version") != self.filter_rules_version:
                await self.fetch_filter_rules(message.get("version"))
        elif kind == "tracker_keys":
            keys = self.key_cache.store(message.get("keys") or [])
            if keys and self.on_keys:
                self.on_keys(keys)
        elif kind == "usage_ack":
            future = self._usage_acks.pop(str(message.get("report_id")), None)
            if future is not None and not future.done():
                future.set_result(True)
        elif kind == "error":
            log.warning("the tracker refused a link message: %s", message.get("code"))
            if self._telemetry_refused(message.get("field")):
                await self.heartbeat_once()

    async def _send(self, message: dict) -> bool:
        if not self.linked:
            return False
        try:
            await self.ws.send_str(json.dumps(message, separators=(",", ":")))
            return True
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return False

    def queue_changed(self) -> None:
        self._queue_dirty.set()

    async def _queue_loop(self) -> None:
        """Push queue changes at once, coalesced to at most ten a second."""
        while True:
            await self._queue_dirty.wait()
            self._queue_dirty.clear()
            if self.queue_view is not None:
                await self._send({"type": "queue", "queue": self.queue_view()})
            await asyncio.sleep(0.1)

    async def send_flag(self, body: dict) -> bool:
        """A moderation flag over the link; False when there is no link (the caller uses HTTP)."""
        return await self._send({"type": "flag", **body})

    async def _keys_loop(self) -> None:
        """Refresh the tracker's keys every ~10 minutes; every few seconds while the agent has none at all
        (first start with the tracker down), since until then it must refuse every token."""
        have_keys = bool(self.cached_keys())
        while True:
            await asyncio.sleep((600 if have_keys else 5) + random.uniform(0, 5 if not have_keys else 60))
            keys = await self.refresh_keys()
            have_keys = bool(keys)
            if keys and self.on_keys:
                self.on_keys(keys)

    def heartbeat_body(self) -> dict:
        body = {"schema_version": 1, "agent_version": __version__, **(self.snapshot() if self.snapshot else {})}
        telemetry = body.get("telemetry")
        if self.scalar_telemetry_only and isinstance(telemetry, dict):
            body["telemetry"] = {k: v for k, v in telemetry.items() if not isinstance(v, list | dict)}
        if self.without_model_identity:
            body.pop("model_identity", None)
        return body

    def _telemetry_refused(self, field) -> bool:
        """Whether a refusal names the telemetry (the first time only): then lists are left out from now on; or
        the model identity (the first time only): then it is left out from now on."""
        if str(field or "").startswith("model_identity") and not self.without_model_identity:
            self.without_model_identity = True
            log.warning("the tracker refused the heartbeat's model_identity (a tracker before it): leaving it out")
            return True
        if self.scalar_telemetry_only or not str(field or "").startswith("telemetry"):
            return False
        self.scalar_telemetry_only = True
        log.warning("the tracker refused the heartbeat's telemetry (a tracker before v1.1?): sending scalars only")
        return True

    async def heartbeat_once(self) -> bool:
        body = self.heartbeat_body()
        if await self._send({"type": "heartbeat", **body}):
            return True  # the answer arrives as a heartbeat_ack message
        try:
            async with self.session.post(
                f"{self.tracker}/api/nodes/{self.node_id}/heartbeat",
                json=body,
                headers=self._auth,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    log.warning("heartbeat refused: HTTP %s", resp.status)
                    refusal = await resp.json(content_type=None) if resp.status in (400, 403) else None
                    if resp.status == 403 and isinstance(refusal, dict):
                        # A hidden node still learns which tokens stopped working, so that it refuses them too.
                        self._revoke(str(j) for j in refusal.get("revoked_jtis") or [])
                    if isinstance(refusal, dict) and self._telemetry_refused(refusal.get("field")):
                        return await self.heartbeat_once()
                    return False
                answer = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("heartbeat failed (%s)", type(exc).__name__)
            return False
        await self._apply_answer(answer)
        return True

    def _revoke(self, jtis) -> None:
        before = len(self.revoked)
        self.revoked.update(jtis)
        if len(self.revoked) != before:
            tmp = self.revoked_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self.revoked)[-10000:]))
            tmp.replace(self.revoked_file)

    def _circles(self, message: dict) -> None:
        if self.on_circles is not None:
            self.on_circles(message)

    async def _apply_answer(self, answer: dict) -> None:
        self._revoke(str(j) for j in answer.get("revoked_jtis") or [])
        self._circles(answer)  # a heartbeat reply carries the rig's radius as a `circles` push does
        version = answer.get("filter_rules_version")
        if version != self.filter_rules_version:
            await self.fetch_filter_rules(version)

    async def fetch_filter_rules(self, version) -> None:
        """Fetch the published rules; the version is remembered only once they are in force, so a failed
        fetch is retried with the next heartbeat answer."""
        try:
            async with self.session.get(
                self.tracker + "/api/filter-rules", headers=self._auth, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                if resp.status != 200:
                    return  # the tracker publishes no rules: the built-in defaults stay
                doc = await resp.json()
            if isinstance(doc.get("rules"), list):
                if self.on_rules:
                    self.on_rules(doc["rules"])
                self.filter_rules_version = version
                self._keep_rules(doc)
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return

    def _keep_rules(self, doc: dict) -> None:
        """Keep the rules just applied, for the next start (and a local rig's: node_agent/rules_cache.py). Only an
        answer of the documented shape is kept; one that is not stays applied as before, leniently, but not kept."""
        try:
            version, rules = rules_cache.checked(doc)
            rules_cache.save(self.state_dir, tracker=self.tracker, version=version, rules=rules)
        except (rules_cache.RulesError, OSError) as exc:
            log.warning("the filter rules are applied but not kept for the next start: %s", exc)

    async def _heartbeat_loop(self) -> None:
        backoff = 1.0
        while True:
            ok = await self.heartbeat_once()
            if ok and self.last_heartbeat_ok is False:
                self._tracker_back.set()
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
        batch = self.ledger.pending_batch()
        if batch is None:
            return True
        report_id, end, entries = batch
        if not entries:
            self.ledger.ack_usage(end)  # only unreadable lines: skip them
            return True
        body = {"schema_version": 1, "report_id": report_id, "entries": entries}
        if self.linked:
            ack = asyncio.get_running_loop().create_future()
            self._usage_acks[report_id] = ack
            if await self._send({"type": "usage", **body}):
                try:
                    await asyncio.wait_for(ack, timeout=10)
                    self.ledger.ack_usage(end)
                    return True
                except TimeoutError:
                    pass  # fall back to HTTP; the tracker ignores a report it already has (same report_id)
            self._usage_acks.pop(report_id, None)
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
        while True:
            await self._report_backlog()  # first of all what an earlier run left unreported
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._usage_wakeup.wait(), timeout=30)
            self._usage_wakeup.clear()
            await asyncio.sleep(1.0)  # gather a few requests into one report

    async def _report_backlog(self) -> None:
        """Report until nothing is pending: a backlog of several batches (after an outage, or a batch formed before
        a restart and the lines after it) goes one batch a second, not one per wake-up. While the tracker is away
        the retries back off (up to 5 minutes), but not once it is back: the first heartbeat that gets through
        again cuts the wait short."""
        backoff = 2.0
        while True:
            if await self.report_usage_once():
                start, end, _ = self.ledger.pending_usage(1)
                if end == start:
                    return
                backoff = 2.0
                await asyncio.sleep(1.0)
                continue
            self._tracker_back.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tracker_back.wait(), timeout=backoff + random.uniform(0, backoff / 2))
            backoff = min(backoff * 2, 300.0)

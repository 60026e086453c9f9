"""The tracker's published public keys as the agent and the relay both keep them: fetched from
`GET /api/tracker-keys`, cached on disk so that tokens still verify offline through a tracker outage and after a
restart, and replaced only by a list that holds at least one usable key (an empty or broken answer never wipes a
working cache). One copy of this for both: the relay imports it from the agent's package, like the rest of the
wire code."""

import contextlib
import json
import logging
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node_agent.auth import load_keys

FETCH_TIMEOUT_SEC = 10


class TrackerKeyCache:
    def __init__(self, *, tracker: str, path: Path, log: logging.Logger):
        self.url = tracker.rstrip("/") + "/api/tracker-keys"
        self.path = path
        self.log = log

    def cached(self) -> dict[str, Ed25519PublicKey]:
        """The keys on disk (kid → key); none when there is no readable cache."""
        try:
            return load_keys(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    def store(self, published) -> dict[str, Ed25519PublicKey]:
        """Load a published list (from the endpoint or the tracker's push); cache it when it holds a usable key.
        A state directory that cannot be written costs the cache, never the keys in memory."""
        try:
            keys = load_keys(published)
        except (ValueError, TypeError, KeyError, AttributeError):  # not a list of key objects
            return {}
        if keys:
            with contextlib.suppress(OSError):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(published))
                tmp.replace(self.path)
        return keys

    async def fetch(self, session: aiohttp.ClientSession) -> dict[str, Ed25519PublicKey]:
        """Fetch, cache and return the published keys; none (and the cache untouched) when the tracker cannot be
        reached or answers with no usable key."""
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SEC)) as resp:
                resp.raise_for_status()
                published = (await resp.json())["keys"]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            self.log.warning("could not fetch the tracker's keys (%s); using cached keys", type(exc).__name__)
            return {}
        return self.store(published)

"""Tasting tokens on a gateway client's behalf: asked of the tracker (`POST /api/relays/<relay_id>/tokens`, the
relay secret, the client's contributor key or address), cached per (sha256 of the key, or the client's address;
node id), and renewed when under a minute from expiry (a quarter of a short token's life), when its requests are
used up (counted here), or when the agent refuses it. The client never sees a JWT.

The tracker's refusals (403 banned, 429 quota_exceeded / ip_rate_limited, 401 for a key it does not know, 404,
409) reach the client with the same status, code and Retry-After. While the tracker cannot be reached, a cached
token keeps serving until it expires; after that the client gets 503 `tracker_unavailable`."""

import asyncio
import calendar
import collections
import hashlib
import logging
import time
from dataclasses import dataclass

import aiohttp

from node_agent.errors import AgentError

log = logging.getLogger("luckrig.relay.tokens")

RENEW_BEFORE_SEC = 60
MAX_ENTRIES = 50_000  # cached tokens; the least recently used go first
TRACKER_TIMEOUT_SEC = 10
RELAY_REFUSED = {"wrong_relay", "unauthorized", "unknown_field", "invalid_field"}
EXPIRY_LEEWAY_SEC = 2  # a token this close to its expiry is not sent: it would expire on the way


@dataclass
class CachedToken:
    token: str
    jti: str
    node_id: str
    exp: float  # time.time() of expiry
    lifetime: float
    max_requests: int | None
    used: int = 0

    def usable(self, now: float) -> bool:
        return self.exp - now > EXPIRY_LEEWAY_SEC and (self.max_requests is None or self.used < self.max_requests)

    def fresh(self, now: float) -> bool:
        """Usable and not yet due for renewal."""
        return self.usable(now) and self.exp - now > min(RENEW_BEFORE_SEC, self.lifetime / 4)


def who(contributor_key: str | None, client_ip: str) -> str:
    """The cache's identity of a caller: never the key itself (a dump of the relay's memory should not hand out
    contributor keys any more than it must)."""
    if contributor_key:
        return "k:" + hashlib.sha256(contributor_key.encode()).hexdigest()
    return "ip:" + client_ip


def _iso_to_epoch(text) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(text)[:19], "%Y-%m-%dT%H:%M:%S")))
    except (TypeError, ValueError):
        return None


class TokenCache:
    def __init__(
        self, *, session: aiohttp.ClientSession | None, tracker: str, relay_id: str, secret: str, ttl_sec=None
    ):
        self.session, self.tracker, self.relay_id, self.secret = session, tracker.rstrip("/"), relay_id, secret
        self.ttl_sec = ttl_sec  # what the relay asks for (None: the tracker's default)
        self.entries: collections.OrderedDict[tuple[str, str], CachedToken] = collections.OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self.issued = 0  # tokens the tracker has issued to this relay (tests and /metrics read it)

    async def get(
        self, *, contributor_key: str | None, client_ip: str, node_id: str, renew: bool = False
    ) -> CachedToken:
        """A token for this caller at this rig, counted as one request. `renew`: the agent refused the cached one."""
        key = (who(contributor_key, client_ip), node_id)
        now = time.time()
        cached = self.entries.get(key)
        if cached is not None and not renew and cached.fresh(now):
            return self._use(key, cached)
        try:
            fresh = await self._issue(key, contributor_key, client_ip, node_id)
        except AgentError as exc:
            # The tracker cannot be reached: a token it issued earlier still holds until it expires.
            if exc.code == "tracker_unavailable" and cached is not None and not renew and cached.usable(now):
                return self._use(key, cached)
            raise
        return self._use(key, fresh)

    def forget(self, *, contributor_key: str | None, client_ip: str, node_id: str) -> None:
        self.entries.pop((who(contributor_key, client_ip), node_id), None)

    def _use(self, key, entry: CachedToken) -> CachedToken:
        entry.used += 1
        self.entries.move_to_end(key)
        return entry

    async def _issue(self, key, contributor_key, client_ip, node_id) -> CachedToken:
        # Single flight: a burst of one caller's requests to one rig makes one token, not one each.
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            entry = await self._ask(contributor_key, client_ip, node_id)
            self.entries[key] = entry
            while len(self.entries) > MAX_ENTRIES:
                self.entries.popitem(last=False)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._pending[key]

    async def _ask(self, contributor_key, client_ip, node_id) -> CachedToken:
        body = {"node_id": node_id, "client_ip": client_ip, "contributor_key": contributor_key}
        if self.ttl_sec:
            body["ttl_sec"] = self.ttl_sec
        try:
            async with self.session.post(
                f"{self.tracker}/api/relays/{self.relay_id}/tokens",
                json=body,
                headers={"Authorization": f"Bearer {self.secret}"},
                timeout=aiohttp.ClientTimeout(total=TRACKER_TIMEOUT_SEC),
            ) as resp:
                status = resp.status
                try:
                    answer = await resp.json(content_type=None)
                except ValueError:
                    answer = None
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("token request failed (%s)", type(exc).__name__)
            raise unavailable() from exc
        if status == 201 and isinstance(answer, dict) and isinstance(answer.get("token"), str):
            self.issued += 1
            now = time.time()
            exp = _iso_to_epoch(answer.get("expires_at")) or now + 60
            limits = answer.get("limits") if isinstance(answer.get("limits"), dict) else {}
            max_requests = limits.get("max_requests")
            return CachedToken(
                token=answer["token"],
                jti=str(answer.get("jti") or ""),
                node_id=node_id,
                exp=exp,
                lifetime=max(1.0, exp - now),
                max_requests=max_requests if isinstance(max_requests, int) and max_requests > 0 else None,
            )
        raise refusal(status, answer, retry_after)


def unavailable() -> AgentError:
    return AgentError(
        503,
        "tracker_unavailable",
        "The LuckRig tracker, which issues the tokens this gateway uses on your behalf, cannot be reached right "
        "now, and no earlier token for this rig is still valid. Try again in a minute.",
        headers={"Retry-After": "30"},
    )


def refusal(status: int, answer, retry_after: str | None) -> AgentError:
    """The tracker's refusal in the OpenAI shape, with the same status, code, Retry-After and details. A 5xx, or an
    answer that is not the tracker's JSON (a proxy's error page), counts as the tracker being unreachable."""
    if status >= 500 or not isinstance(answer, dict) or not isinstance(answer.get("code"), str):
        return unavailable()
    if (status == 401 and answer.get("field") != "contributor_key") or answer["code"] in RELAY_REFUSED:
        # The tracker refused the relay itself (its secret, its id), not the client: the client cannot fix that.
        log.error("the tracker refused this relay's token request: %s %s", status, answer["code"])
        return AgentError(
            503,
            "tracker_unavailable",
            "This relay cannot get tokens from the LuckRig tracker right now (its operator has been told); try "
            "another relay from GET /api/gateway, or later.",
            headers={"Retry-After": "60"},
        )
    extra = {k: answer[k] for k in ("retry_after_sec", "resets_at", "earn_more", "ban", "tier") if k in answer}
    headers = {"Retry-After": retry_after} if retry_after else {}
    message = str(answer.get("error") or answer.get("message") or answer["code"])
    return AgentError(
        status if 400 <= status < 500 else 502, answer["code"][:64], message, headers=headers, extra=extra
    )

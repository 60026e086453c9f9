"""The cache behind the per-IP rate limits: Redis, shared by every tracker process, and this process's own
counters while Redis cannot be reached.

django-ratelimit counts in a cache. When that cache was Redis and Redis went away, every check raised and every
per-IP limit was skipped: an outage (or an attacker who can cause one) opened the site to floods. Here each
process keeps counting on its own instead, stricter rather than open: every request weighs
RATELIMIT_FALLBACK_PROCESSES, so N processes behind one proxy together allow no more than the shared limit.
The switch is said once in the log each way, and `/metrics` shows `luckrig_ratelimit_fallback` (1 while it
lasts). Redis is tried again every RETRY_SEC, by one request, not by all of them.

Only the operations django-ratelimit uses fall back (add, get, incr, set, delete, clear): use this backend
for the rate-limit counters alone."""

import logging
import threading
import time

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

log = logging.getLogger("luckrig.ratelimit")

RETRY_SEC = 5.0
# The longest window a rate may have is a day (N/d) plus django-ratelimit's 5 s of slack.
_LONGEST_WINDOW_SEC = 86400 + 5
# LocMemCache keeps its data per LOCATION name at module level: every instance (Django makes one per thread)
# shares these counters.
_LOCAL_NAME = "luckrig-ratelimit-fallback"


class _Outage:
    """Whether this process is counting on its own; one for the process, whichever thread notices."""

    def __init__(self):
        self._lock = threading.Lock()
        self.since: float | None = None
        self.retry_at = 0.0

    def skip_shared(self, now: float) -> bool:
        """During an outage, only one caller per RETRY_SEC tries Redis again; the others go straight to local."""
        if self.since is None:
            return False
        with self._lock:
            if now >= self.retry_at:
                self.retry_at = now + RETRY_SEC
                return False
            return True

    def begin(self, exc: Exception, now: float) -> None:
        with self._lock:
            self.retry_at = now + RETRY_SEC
            if self.since is not None:
                return
            self.since = now
        log.error(
            "shared cache (Redis) unreachable (%s: %s): rate limits are now counted by this process alone, each "
            "request weighing %d, until it is back",
            type(exc).__name__,
            str(exc)[:200],
            weight(),
        )

    def end(self, now: float) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            lasted, self.since = now - self.since, None
        log.warning("shared cache (Redis) reachable again after %.0f s: rate limits are shared again", lasted)


outage = _Outage()


def fallback_active() -> bool:
    """True while this process counts rate limits on its own (the /metrics gauge)."""
    return outage.since is not None


def weight() -> int:
    return max(1, int(getattr(settings, "RATELIMIT_FALLBACK_PROCESSES", 1)))


def _weighed(value):
    return value * weight() if type(value) is int else value


class FallbackRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._local = LocMemCache(_LOCAL_NAME, {"TIMEOUT": _LONGEST_WINDOW_SEC, "OPTIONS": {"MAX_ENTRIES": 100_000}})

    def _shared(self, name: str, *args):
        """(True, result) from Redis, or (False, None) when it cannot be reached now."""
        now = time.monotonic()
        if outage.skip_shared(now):
            return False, None
        try:
            result = getattr(RedisCache, name)(self, *args)
        except (RedisError, OSError) as exc:
            outage.begin(exc, now)
            return False, None
        outage.end(now)
        return True, result

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        done, result = self._shared("add", key, value, timeout, version)
        return result if done else self._local.add(key, _weighed(value), timeout, version)

    def get(self, key, default=None, version=None):
        done, result = self._shared("get", key, default, version)
        return result if done else self._local.get(key, default, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        done, result = self._shared("set", key, value, timeout, version)
        return result if done else self._local.set(key, _weighed(value), timeout, version)

    def incr(self, key, delta=1, version=None):
        done, result = self._shared("incr", key, delta, version)
        if done:
            return result
        try:
            return self._local.incr(key, delta * weight(), version)
        except ValueError:
            # Redis went away between django-ratelimit's add and its incr: the count starts here.
            self._local.add(key, delta * weight(), _LONGEST_WINDOW_SEC, version)
            return self._local.get(key, delta * weight(), version)

    def delete(self, key, version=None):
        done, result = self._shared("delete", key, version)
        return result if done else self._local.delete(key, version)

    def clear(self):
        self._local.clear()
        self._shared("clear")

"""Per-node limits on what a node's agent sends: heartbeats, usage reports and moderation flags, over HTTP and
over the agent link alike (one budget per node and kind, whichever path and however many links).

An agent heartbeats every 15 s, reports usage about once a second at most and flags what its rules catch; a
node secret that floods these would otherwise cost one database write per message. Counters are fixed windows
in the rate-limit cache (Redis, shared by every tracker process; this process's own counters while Redis is
down, see core.ratecache), keyed by node id: only an authenticated agent spends its node's budget, so
a stranger who knows a node id cannot exhaust it. Over the limit: HTTP 429 `rate_limited` with Retry-After,
or on the link an `error` message with `retry_after_sec`, and the message is dropped.

Rates are `count/period` like django-ratelimit's (`5/5s`: five in each 5-second window, so one a second on
average with a burst of a few), from the settings named below when set, else the defaults."""

import math
import time

from django.conf import settings
from django.core.cache import caches

from core.api_errors import ApiError
from core.ratelimits import period_of

RATES = {
    "heartbeat": ("RATE_AGENT_HEARTBEAT", "5/5s"),
    "usage": ("RATE_AGENT_USAGE", "10/10s"),
    "flag": ("RATE_AGENT_FLAG", "30/30s"),
}


def rate(kind: str) -> tuple[int, int]:
    """(count, period in seconds) for one kind of agent message."""
    name, default = RATES[kind]
    value = getattr(settings, name, default)
    return int(value.split("/", 1)[0]), period_of(value)


def seconds_over(node_id: str, kind: str) -> int:
    """Count one `kind` message from this node: 0 while within its limit, else the seconds until the window
    ends (the message is then to be refused)."""
    if kind not in RATES or not getattr(settings, "RATELIMIT_ENABLE", True):
        return 0
    count, period = rate(kind)
    now = time.time()
    window = int(now // period)
    key = f"agent-rate:{kind}:{node_id}:{window}"
    cache = caches[settings.RATELIMIT_USE_CACHE]
    cache.add(key, 0, timeout=period + 5)
    try:
        used = cache.incr(key)
    except ValueError:  # expired between add and incr (or the cache was just cleared): this one starts it
        cache.add(key, 1, timeout=period + 5)
        used = 1
    if used <= count:
        return 0
    return max(1, math.ceil((window + 1) * period - now))


def refuse_if_over(node_id: str, kind: str) -> None:
    """429 `rate_limited` with Retry-After when this node is over its limit for `kind`."""
    retry = seconds_over(node_id, kind)
    if retry:
        count, period = rate(kind)
        raise ApiError(
            429,
            "rate_limited",
            f"Too many {kind} messages from this node (at most {count} every {period} s); try again later.",
            extra={"retry_after_sec": retry},
            headers={"Retry-After": str(retry)},
        )

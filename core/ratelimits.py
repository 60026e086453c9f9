"""Per-IP rate limits on write endpoints, with django-ratelimit's counters (a shared cache in production).

django-ratelimit's own decorator raises `Ratelimited` without saying when the window ends; clients need
`Retry-After`, so this wraps its `is_ratelimited` core and computes the end of the same fixed window."""

import functools
import re
import time
import zlib
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_ratelimit.core import is_ratelimited

from core.api_errors import ApiError
from core.clientip import ratelimit_key
from core.timefmt import iso

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"(\d+)/(\d*)([smhd])", re.ASCII)


def period_of(rate: str) -> int:
    """The window of a rate in seconds; ValueError for anything django-ratelimit would misread (it takes
    `5 per day` for no limit at all, `5/x` for 5 a second and `5/0d` for an error on every request)."""
    match = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if not match or int(match.group(2) or 1) == 0:
        raise ValueError(f"bad rate {rate!r}: expected a count, a slash and a period, like 5/d or 30/10m")
    return int(match.group(2) or 1) * _UNITS[match.group(3)]


def seconds_left_in_window(value: str, period: int, now: int | None = None) -> int:
    """The same window django-ratelimit uses: aligned to the period, offset by crc32 of the key value."""
    ts = int(time.time()) if now is None else now
    if period == 1:
        return 1
    window = ts - (ts % period) + (zlib.crc32(value.encode()) % period)
    if window < ts:
        window += period
    return max(1, window - ts)


def refuse_if_limited(
    request,
    rate_setting: str,
    group: str,
    *,
    client_hash: str,
    code: str = "ip_rate_limited",
    explain=None,
    who: str = "this address",
) -> None:
    """Count one POST against `group`'s per-address window for the client whose hashed household is
    `client_hash`, and raise the 429 when it is over the rate named by `rate_setting`. Usually the client is the
    caller (`limit` below); a relay asking for a token on a taster's behalf names the taster's address instead
    (tracker.gateway_api), and both count in the same window; a per-contributor limit passes the contributor's id
    and says so in `who`. `explain()`, when given, returns more body fields."""
    rate = getattr(settings, rate_setting)
    # Never fails open: while Redis is unreachable the counters are this process's own (ratecache.py),
    # and a malformed rate stops the tracker at start-up (checks.py) instead of switching a limit off.
    limited = is_ratelimited(
        request, group=group, key=lambda _group, _request: client_hash, rate=rate, method="POST", increment=True
    )
    if limited:
        retry = seconds_left_in_window(client_hash, period_of(rate))
        extra = {"retry_after_sec": retry, "resets_at": iso(timezone.now() + timedelta(seconds=retry))}
        extra.update(explain() if explain is not None else {})
        raise ApiError(
            429,
            code,
            f"Too many requests from {who}; try again in {retry} s.",
            extra=extra,
            headers={"Retry-After": str(retry)},
        )


def limit(rate_setting: str, group: str, code: str = "ip_rate_limited", explain=None):
    """Class decorator: limit the view's POST per client IP at the rate named by `rate_setting`. The 429 says when
    the window ends (`Retry-After`, `retry_after_sec`, `resets_at`); `explain(request)`, when given, returns more
    body fields (the token endpoint says what would earn more)."""

    def decorate(view_class):
        original = view_class.post

        @functools.wraps(original)
        def post(self, request, *args, **kwargs):
            refuse_if_limited(
                request,
                rate_setting,
                group,
                client_hash=ratelimit_key(group, request),
                code=code,
                explain=(lambda: explain(request)) if explain is not None else None,
            )
            return original(self, request, *args, **kwargs)

        view_class.post = post
        return view_class

    return decorate

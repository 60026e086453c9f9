"""The node list's `count` (docs/api.md, `GET /api/nodes`). Counting is the list's dearest part on a big
registry: the page itself comes from the ordering index, but a count must visit every listed row, and a filtered
count must also test each row's substring filters, which no index serves (`icontains`).

So the count is exact on a registry of up to NODE_LIST_EXACT_COUNT_UP_TO listed rigs, and above that one count
per filter combination is kept for NODE_LIST_COUNT_TTL_SEC seconds in the shared cache (Redis in production, so
every tracker process, ASGI or WSGI, reuses it); a count served from there says so with `count_is_estimate`.
The size of the registry comes with the count, in the same query: no extra query on any path."""

import contextlib
import hashlib
import json
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Q, QuerySet
from redis.exceptions import RedisError


def _key(filters: dict) -> str:
    # Filter values are the caller's text: hashed, so that a key is short and safe for any cache backend.
    canonical = json.dumps(filters, sort_keys=True, ensure_ascii=True)
    return "nodes:list-count:v1:" + hashlib.sha256(canonical.encode()).hexdigest()


def listed_count(listed: Callable[[], QuerySet], matching: Q, filters: dict) -> tuple[int, bool]:
    """(count, is_estimate) of the rows of `listed()` that match `matching`, for the filter values `filters`.
    `listed` is called only when a count is made: a count kept in the cache costs no QuerySet."""
    key = _key(filters)
    if settings.NODE_LIST_COUNT_TTL_SEC > 0:
        kept = _cached(key)
        if kept is not None:
            return kept, True
    if matching:
        counts = listed().aggregate(total=Count("pk"), matching=Count("pk", filter=matching))
    else:
        counts = listed().aggregate(total=Count("pk"))
        counts["matching"] = counts["total"]
    if counts["total"] > settings.NODE_LIST_EXACT_COUNT_UP_TO and settings.NODE_LIST_COUNT_TTL_SEC > 0:
        with contextlib.suppress(RedisError, OSError):  # see _cached
            cache.set(key, counts["matching"], settings.NODE_LIST_COUNT_TTL_SEC)
    return counts["matching"], False


def _cached(key: str) -> int | None:
    # The list must not depend on Redis being up: while it cannot be reached every count is made for its request.
    try:
        kept = cache.get(key)
    except (RedisError, OSError):
        return None
    return kept if isinstance(kept, int) else None

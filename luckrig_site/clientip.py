"""Who is asking: the client IP (trusting X-Forwarded-For only from TRUSTED_PROXIES) and its keyed hash.

Raw IPs are never stored anywhere: only HMAC-SHA256(SECRET_KEY, ip)."""

import hashlib
import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings


@lru_cache(maxsize=8)
def _trusted_networks(spec: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def _is_trusted(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in _trusted_networks(tuple(settings.TRUSTED_PROXIES)))


def client_ip(request) -> str:
    """The socket peer, or the right-most X-Forwarded-For hop that is not a trusted proxy.

    Walking from the right stops a client from choosing its own IP by sending a forged left part."""
    peer = request.META.get("REMOTE_ADDR") or "0.0.0.0"  # noqa: S104 - a value, not a bind
    if not settings.TRUSTED_PROXIES or not _is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer


def hash_ip(ip: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), ip.encode(), hashlib.sha256).hexdigest()


def ip_hash(request) -> str:
    """Memoised on the request: several limits and the token subject use it."""
    cached = getattr(request, "_luckrig_ip_hash", None)
    if cached is None:
        cached = hash_ip(client_ip(request))
        request._luckrig_ip_hash = cached
    return cached


def ratelimit_key(group, request) -> str:
    """django-ratelimit key function: the hashed client IP, proxy-aware."""
    return ip_hash(request)

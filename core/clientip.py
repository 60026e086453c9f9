"""Who is asking: the client IP (trusting X-Forwarded-For only from TRUSTED_PROXIES) and its keyed hash.

Raw IPs are never stored anywhere: only HMAC-SHA256(SECRET_KEY, household(ip)). Every per-IP limit, quota, ban
and anonymous identity goes through `hash_ip`, so the household rule below holds for all of them at once."""

import hashlib
import hmac
import ipaddress
from functools import lru_cache
from types import SimpleNamespace

from django.conf import settings

# RFC 6052's well-known NAT64 prefix: the last 32 bits are the IPv4 address behind the translator.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`), 6to4 (2002::/16), Teredo
    (2001::/32, the client's public address) or well-known NAT64 (64:ff9b::/96). None for a native address."""
    if addr.ipv4_mapped:
        return addr.ipv4_mapped
    if addr.sixtofour:
        return addr.sixtofour
    if addr.teredo:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def household(ip: str) -> str:
    """The part of an address that names one subscriber, as the text that gets hashed.

    A home connection gets a whole IPv6 /64 (SLAAC, privacy addresses: a new address whenever it likes), so
    an IPv6 address counts by its /64; counting single addresses would give one person 2^64 identities. An
    address that embeds an IPv4 address (mapped, 6to4, Teredo, NAT64) counts as that IPv4 address: a 6to4
    site has a /48 and all the Teredo clients of one server share a /64. An IPv4 address is itself, spelled
    as before, so hashes stored before this rule still match. Text that is not an address is kept as it is."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        v4 = embedded_ipv4(addr)
        if v4 is not None:
            return str(v4)
        # int() drops a zone id (fe80::1%eth0); the network address of the /64 names the household.
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


def _as_ipv4_if_mapped(addr):
    return addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr


@lru_cache(maxsize=8)
def _trusted_networks(spec: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def _is_trusted(ip: str) -> bool:
    try:
        # A proxy on a dual-stack socket reaches Django as ::ffff:10.0.0.5; it is the proxy 10.0.0.5.
        addr = _as_ipv4_if_mapped(ipaddress.ip_address(ip))
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
    """The keyed hash of the address's household (see `household`): what is stored, never the address."""
    return hmac.new(settings.SECRET_KEY.encode(), household(ip).encode(), hashlib.sha256).hexdigest()


def ip_hash(request) -> str:
    """Memoised on the request: several limits and the token subject use it."""
    cached = getattr(request, "_luckrig_ip_hash", None)
    if cached is None:
        cached = hash_ip(client_ip(request))
        request._luckrig_ip_hash = cached
    return cached


def scope_ip_hash(scope) -> str | None:
    """ip_hash for a websocket's ASGI scope, by the same rule as for a request (peer, trusted proxies'
    X-Forwarded-For); None when the server gave no peer."""
    client = scope.get("client")
    if not client:
        return None
    headers = dict(scope.get("headers") or [])
    meta = {"REMOTE_ADDR": client[0], "HTTP_X_FORWARDED_FOR": headers.get(b"x-forwarded-for", b"").decode("latin-1")}
    return hash_ip(client_ip(SimpleNamespace(META=meta)))


def ratelimit_key(group, request) -> str:
    """django-ratelimit key function: the hashed client household, proxy-aware."""
    return ip_hash(request)


def pseudonymous_ip(request) -> str:
    """A stand-in address for libraries that insist on storing an IP (django-axes keeps one per failed admin
    login): a unique-local IPv6 address (fd00::/8) made of 120 bits of the client's ip hash. The same household
    always gets the same one, it is a valid `inet` for PostgreSQL, and it reveals nothing of the address."""
    return str(ipaddress.IPv6Address((0xFD << 120) | int(ip_hash(request)[:30], 16)))

"""Who is calling, and how often: the client address as the contract defines it (the socket peer, or the
left-most untrusted X-Forwarded-For hop when the peer is a trusted proxy; an IPv6 address by its /64; an
IPv4-mapped address as the IPv4 it maps), and a per-address token bucket. In memory: the relay keeps no
database, and a restart forgetting a minute of counts is harmless."""

import ipaddress
import time

MAX_TRACKED = 100_000  # addresses remembered at once; past that, full buckets are forgotten first


def parse_networks(spec: str) -> list:
    return [ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()]


def _addr(text: str):
    try:
        return ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None


def limit_key(addr) -> str:
    """The identity a per-IP limit counts: an IPv6 address by its /64 (one home connection gets a whole /64)."""
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def client_key(peer: str | None, forwarded_for: str | None, trusted: list) -> str:
    addr = client_address(peer, forwarded_for, trusted)
    return "unknown" if addr is None else limit_key(addr)


def client_address(peer: str | None, forwarded_for: str | None, trusted: list):
    """The client's address (an ipaddress object; None when the peer's is unreadable): the socket peer, or the
    left-most untrusted X-Forwarded-For hop when the peer is a trusted proxy."""
    addr = _addr(peer or "")
    if addr is None:
        return None
    if forwarded_for and any(addr in net for net in trusted):
        # Right to left: the first hop that is not one of our proxies is the client.
        for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
            hop_addr = _addr(hop)
            if hop_addr is None:
                break
            addr = hop_addr
            if not any(hop_addr in net for net in trusted):
                break
    return addr


class RateLimiter:
    """A token bucket per key: `per_min` requests a minute on average, up to `burst` at once."""

    def __init__(self, per_min: int, burst: int):
        self.rate = per_min / 60.0
        self.burst = float(max(1, burst))
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when the request may go; otherwise the seconds to wait before the next one would."""
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
        if len(self.buckets) >= MAX_TRACKED and key not in self.buckets:
            self._forget_full(now)
        self.buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        for k, (tokens, last) in list(self.buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self.buckets[k]
        if len(self.buckets) >= MAX_TRACKED:  # everyone is busy: forget the oldest half
            for k in sorted(self.buckets, key=lambda k: self.buckets[k][1])[: MAX_TRACKED // 2]:
                del self.buckets[k]

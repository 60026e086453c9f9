"""Per-address connection limits for the agent's listening socket: one client address may hold at most so many open
connections, counted as they are made and lost, so that one taster cannot tie up every connection slot."""

import ipaddress
import logging
from collections import Counter

log = logging.getLogger("luckrig.agent")


def address_key(host: str, *, exempt_loopback: bool = True) -> str | None:
    """What one client address counts as: an IPv4 address, an IPv6 address's /64 (one household gets a whole
    /64), an IPv4-mapped IPv6 address as its IPv4 address; None for loopback (when exempt) and non-IP peers."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if exempt_loopback and address.is_loopback:
        return None
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class ConnectionGuard:
    """At most `limit` open connections per client address (`address_key`); one more is aborted as it is
    accepted, before anything is read. Loopback is exempt: a reverse proxy on the same machine brings every taster
    from 127.0.0.1. (Relayed tasters use no connection here: the tunnel hands them to the application in process,
    and the relay enforces its own per-IP limits.)"""

    def __init__(self, limit: int, *, exempt_loopback: bool = True):
        self.limit, self.exempt_loopback = limit, exempt_loopback
        self.open: Counter[str] = Counter()
        self.counted: dict[object, str] = {}  # aiohttp's per-connection handler → its address key

    def install(self, server) -> None:
        """Hook aiohttp's low-level Server, which hears of every connection made and lost."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler, transport) -> None:
            made(handler, transport)
            if not self.admit(handler, transport):
                transport.abort()

        def connection_lost(handler, exc=None) -> None:
            self.forget(handler)
            lost(handler, exc)

        server.connection_made, server.connection_lost = connection_made, connection_lost

    def admit(self, handler, transport) -> bool:
        if self.limit <= 0:
            return True
        peer = transport.get_extra_info("peername")
        key = address_key(str(peer[0]), exempt_loopback=self.exempt_loopback) if peer else None
        if key is None:
            return True
        if self.open[key] >= self.limit:
            # No address in the log: it is personal data, and the count is what the operator needs.
            log.warning("refused a connection: its address already has %d open", self.limit)
            return False
        self.open[key] += 1
        self.counted[handler] = key
        return True

    def forget(self, handler) -> None:
        key = self.counted.pop(handler, None)
        if key is not None:
            self.open[key] -= 1
            if self.open[key] <= 0:
                del self.open[key]

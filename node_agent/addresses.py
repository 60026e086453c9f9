"""Which addresses `luckrig-node pull` may download from. A model file is fetched from a URL the operator typed or
a catalog named, and the host it redirects to: without this check a redirect (or a name that resolves somewhere
unexpected) could make the agent fetch from a service on the operator's own network (a router's admin page, a
metadata service) and write the answer to disk. The check happens inside aiohttp's resolver, on the very addresses
the socket connects to; a literal IP in a URL never reaches the resolver, so `url_allowed` judges it.

The rule is the tracker's (core/urlguard.py `is_public_address`), copied because the agent never imports the
tracker; the relay's gateway uses this copy for the rigs it carries requests to (relay/addresses.py), and
tests/relay/test_rig_addresses.py holds it equal to the tracker's. `pull --allow-private` lifts it for a models
mirror on the operator's own network (and the tests, which serve files on 127.0.0.1)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class BlockedAddress(OSError):
    """A name that resolves only to addresses that may not be connected to (a download's, or a relayed rig's)."""


def is_public_address(ip: str) -> bool:
    """A global unicast address, judged through any IPv4 address it stands for (IPv4-mapped, 6to4, well-known
    NAT64); local-use NAT64 and IPv4-compatible addresses are refused outright."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in _NAT64_LOCAL_USE or addr in _IPV4_COMPATIBLE:
            return False
        if addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        elif addr.sixtofour:
            addr = addr.sixtofour
        elif addr in _NAT64_WELL_KNOWN:
            addr = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.is_global and not addr.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses (all of them when private ones are allowed)."""

    def __init__(self, allow_private: bool):
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host, port=0, family=socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return infos
        allowed = [info for info in infos if is_public_address(info["host"])]
        if not allowed:
            raise BlockedAddress(f"{host} resolves to a private, loopback or link-local address")
        return allowed

    async def close(self):
        await self._inner.close()


def url_allowed(url: str, *, allow_private: bool) -> bool:
    """Whether this URL's host may be connected to as it is written. A literal IP never reaches the resolver
    (aiohttp connects to it directly), so it is judged here; a name is judged by the resolver, on every
    connection."""
    if allow_private:
        return True
    host = (urlsplit(url).hostname or "").strip("[]")
    try:
        return is_public_address(host)
    except ValueError:
        return bool(host)  # a name: PublicOnlyResolver decides when it is resolved

"""Outbound fetches to URLs that contributors chose (health probes, fingerprint checks), guarded against SSRF.

The check happens inside aiohttp's resolver, i.e. on the very addresses the socket connects to, so a DNS
answer that changes between a check and the connection (DNS rebinding) cannot slip a private address
through. Redirects are never followed and bodies are read up to a byte limit."""

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver


class BlockedAddress(Exception):
    """The URL resolves to an address that outbound fetches may not reach."""


# IPv6 ranges whose packets end up at an IPv4 address: the address is judged by that IPv4 address, else a
# private one hides behind a global-looking IPv6 form (Python's is_global says yes to all of these).
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: the local network's own translator
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291, deprecated: no stack routes it any more


def is_public_address(ip: str) -> bool:
    """A global unicast address, judged through any IPv4 address it stands for.

    Refused outright: local-use NAT64 (its embedding and its translator are the local network's own) and
    IPv4-compatible addresses (deprecated; a real rig never has one). Judged by the IPv4 address inside:
    IPv4-mapped, 6to4 (2002::/16) and well-known NAT64 (64:ff9b::/96), which a DNS64 resolver hands out for
    every IPv4-only host, so a public rig behind one stays reachable while 64:ff9b::10.0.0.1 does not."""
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


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_PRIVATE_SUFFIXES = ("localhost", "local", "internal", "lan", "home.arpa", "localdomain")


def host_looks_public(host: str) -> bool:
    """Without resolving it: a literal global IP, or a dotted DNS name with an alphabetic top-level label
    that is not a private-use suffix. Refuses numeric tricks (`2130706433`, `0x7f.1`) and `localhost.`."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        return is_public_address(host)
    except ValueError:
        pass
    if not _DOMAIN.match(host):
        return False
    return not any(host == s or host.endswith("." + s) for s in _PRIVATE_SUFFIXES)


def check_url_syntax(url: str) -> None:
    """http(s) only, a host, no credentials in the URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials")


class GuardedResolver(AbstractResolver):
    def __init__(self, allow_private: bool):
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(self, host, port=0, family=socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            allowed = [info for info in infos if is_public_address(info["host"])]
            if not allowed:
                raise BlockedAddress(f"{host} resolves to a private, loopback or link-local address")
            return allowed
        return infos

    async def close(self):
        await self._inner.close()


# What a failed connection says in public (a node's `last_error`, the fingerprint check): one sentence for
# refused, timed out, unresolvable and not allowed alike, so that nobody can use the tracker to learn which
# ports are open on a host it may not (or may) reach. The specific cause stays in `detail`, for logs only.
UNREACHABLE = "blocked or unreachable: refused, timed out, or not an address the tracker may fetch"


@dataclass
class FetchResult:
    ok: bool
    status: int | None
    body: bytes
    latency_ms: int | None
    error: str  # safe to show anyone
    detail: str = ""  # the specific cause of a failed connection, for the operator's logs only


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def fetch(
    session: aiohttp.ClientSession, url: str, *, allow_private: bool, timeout_sec: float, max_bytes: int
) -> FetchResult:
    """GET `url` once: no redirects, bounded time and size. Never raises for network trouble."""
    started = time.monotonic()
    try:
        check_url_syntax(url)
        host = urlsplit(url).hostname or ""
        literal = _literal_ip(host)
        # A literal IP never reaches the resolver, so it is checked here.
        if literal and not allow_private and not is_public_address(literal):
            raise BlockedAddress(f"{host} is a private, loopback or link-local address")
        async with session.get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_sec),
            headers={"User-Agent": "luckrig-tracker"},
        ) as resp:
            body = bytearray()
            while len(body) <= max_bytes:  # read(n) may return fewer bytes: loop to EOF or one past the limit
                chunk = await resp.content.read(max_bytes + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            body = bytes(body)
            latency = int((time.monotonic() - started) * 1000)
            if len(body) > max_bytes:
                return FetchResult(False, resp.status, b"", latency, f"response larger than {max_bytes} bytes")
            if 300 <= resp.status < 400:
                return FetchResult(False, resp.status, body, latency, f"redirect ({resp.status}) not followed")
            ok = 200 <= resp.status < 300
            return FetchResult(ok, resp.status, body, latency, "" if ok else f"HTTP {resp.status}")
    except ValueError as exc:
        return FetchResult(False, None, b"", None, f"bad url: {exc}")
    except BlockedAddress as exc:
        return _unreachable(f"blocked: {exc}")
    except TimeoutError:
        return _unreachable(f"timed out after {timeout_sec:g} s")
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        if isinstance(cause, BlockedAddress) or isinstance(getattr(cause, "__cause__", None), BlockedAddress):
            return _unreachable(f"blocked: {cause}")
        return _unreachable(f"connection failed: {exc.strerror or exc}")
    except (aiohttp.ClientError, OSError) as exc:
        return _unreachable(f"request failed: {type(exc).__name__}: {exc}"[:300])


def _unreachable(detail: str) -> FetchResult:
    return FetchResult(False, None, b"", None, UNREACHABLE, detail)


def make_session(*, allow_private: bool, limit: int = 20) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private), limit=limit, force_close=True, use_dns_cache=False
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False)


def fetch_once(url: str, *, allow_private: bool, timeout_sec: float, max_bytes: int) -> FetchResult:
    """Synchronous wrapper for views (they run in a worker thread under ASGI, so a fresh loop is fine)."""

    async def run():
        async with make_session(allow_private=allow_private, limit=1) as session:
            return await fetch(session, url, allow_private=allow_private, timeout_sec=timeout_sec, max_bytes=max_bytes)

    return asyncio.run(run())

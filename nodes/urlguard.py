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


def is_public_address(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
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


@dataclass
class FetchResult:
    ok: bool
    status: int | None
    body: bytes
    latency_ms: int | None
    error: str


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
    except BlockedAddress as exc:
        return FetchResult(False, None, b"", None, f"blocked: {exc}")
    except ValueError as exc:
        return FetchResult(False, None, b"", None, f"bad url: {exc}")
    except TimeoutError:
        return FetchResult(False, None, b"", None, f"timed out after {timeout_sec:g} s")
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        if isinstance(cause, BlockedAddress) or isinstance(getattr(cause, "__cause__", None), BlockedAddress):
            return FetchResult(False, None, b"", None, f"blocked: {cause}")
        return FetchResult(False, None, b"", None, f"connection failed: {exc.strerror or exc}")
    except (aiohttp.ClientError, OSError) as exc:
        message = str(exc)
        if "private, loopback" in message:
            return FetchResult(False, None, b"", None, f"blocked: {message}")
        return FetchResult(False, None, b"", None, f"request failed: {type(exc).__name__}: {message}"[:300])


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

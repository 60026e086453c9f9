"""Local mode on the LAN (issue 16), the foundation: announcing this agent over mDNS (`serve --lan`) and seeing the
other LuckRig rigs on the same network (`luckrig-node discover`, and the local router).

The announcement is `_luckrig._tcp.local.` for the agent's own port (never the model server's: that one has no
tokens, no queue and no filter), on the default-route interface's IPv4 addresses and its global and ULA IPv6 ones
(node_agent/lan_addresses.py: docker bridges, veth pairs, VPN tunnels and link-local addresses are other networks or
none), followed as they change (a new DHCP lease, the default route moving). Its TXT record carries hints, never
authentication: anyone on the LAN can announce any node id, key, model or radius. What a device may do with
another is decided by pairing (the pinned Ed25519 key, node_agent/identity.py), not by anything read here; so the
browser keeps what it reads, checked for shape only, and never lets a hostile record crash it or print terminal
escapes."""

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ifaddr
from zeroconf import DNSOutgoing, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
from zeroconf.const import _FLAGS_AA, _FLAGS_QR_RESPONSE

from node_agent import identity
from node_agent.lan_addresses import (
    Announcement,
    LanError,
    announceable,
    listen_interfaces,
    system_announce_addresses,
)

__all__ = ["Announcement", "LanError", "system_announce_addresses"]  # what pairing and the agent take from here

log = logging.getLogger("luckrig.agent.lan")

SERVICE_TYPE = "_luckrig._tcp.local."
# `luckrig-node pair`'s short-lived listener (node_agent/pairing.py): not a rig, so not in the rigs' browse.
PAIRING_SERVICE_TYPE = "_luckrig-pair._tcp.local."
TXT_VERSION = "1"
RADII = ("local", "circle", "public")
TXT_STRING_MAX = 255  # one TXT character-string is a length byte and at most 255 bytes (RFC 6763 section 6.1)
MAX_RIGS = 256  # a flood of announcements must not grow the table without bound


def trust_radius(tracker: str, visibility: str) -> str:
    """The rig's radius as the LAN sees it: `local` with no tracker (paired devices only), `circle` for a circle
    rig, `public` otherwise (an unlisted rig is not listed, but any holder of a tracker token may taste it)."""
    if not tracker or visibility == "local":
        return "local"
    return "circle" if visibility == "circle" else "public"


# --- TXT records -------------------------------------------------------------------------------------------------


def txt_record(
    *, node_id: str, public_key: str, model: str, radius: str, version: str, tls: bool = False
) -> dict[str, str]:
    """The announcement's TXT fields, each within one TXT string. A field too long to fit is left out and said in
    the log (a hint is better missing than cut into another name). `tls=1`: the rig serves HTTPS with a certificate
    for its `pk` (node_agent/lan_tls.py); a hint too, which the router's pinned check makes true or refuses."""
    fields = {"txtvers": TXT_VERSION, "version": version, "node": node_id, "pk": public_key, "model": model}
    fields |= {"radius": radius, "tls": "1" if tls else ""}
    record = {}
    for key, value in fields.items():
        if not value:
            continue
        if len(key.encode()) + 1 + len(value.encode()) > TXT_STRING_MAX:
            log.warning("the LAN announcement leaves out %s: longer than one TXT string", key)
            continue
        record[key] = value
    return record


_VERSION = re.compile(r"[0-9A-Za-z.+-]{1,32}")
_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def printable(text: str, limit: int = 200) -> str:
    """`text` without control or formatting characters (a hostile record must not drive the terminal), cut."""
    kept = "".join(ch if ch.isprintable() else "\N{REPLACEMENT CHARACTER}" for ch in text[:limit])
    return kept + ("…" if len(text) > limit else "")


def parse_txt(properties: dict) -> tuple[dict, list[str]]:
    """The fields of a TXT record as read off the network, checked for shape: (fields, problems). A field that is
    missing or malformed is None and named in problems; nothing here raises for any input."""
    fields: dict = {"txtvers": None, "version": None, "node": None, "pk": None, "fingerprint": None}
    fields |= {"model": None, "radius": None, "tls": None}
    problems: list[str] = []
    text = {}
    for key, value in (properties or {}).items():
        try:
            name = key.decode("ascii") if isinstance(key, bytes) else str(key)
            # Keys are case-insensitive and the first of a repeated key counts (RFC 6763 section 6.4).
            text.setdefault(name.lower(), value.decode("utf-8") if isinstance(value, bytes) else value)
        except UnicodeDecodeError:
            if "a field that is not text" not in problems:
                problems.append("a field that is not text")
    if text.get("txtvers") != TXT_VERSION:
        problems.append("unknown txtvers")
        return fields, problems
    fields["txtvers"] = TXT_VERSION

    def take(name: str, ok: Callable[[str], bool]):
        value = text.get(name)
        if isinstance(value, str) and ok(value):
            fields[name] = value
        else:
            problems.append(f"{name} missing or malformed")

    take("version", _VERSION.fullmatch)
    if "node" in text:  # a local rig has no node id (no tracker gave it one): absent is fine, malformed is not
        take("node", _NODE.fullmatch)
    take("model", lambda v: 0 < len(v) <= 200 and v.isprintable())
    take("radius", lambda v: v in RADII)
    if "tls" in text:  # absent: plain HTTP; present: exactly "1"
        take("tls", lambda v: v == "1")
    pk = text.get("pk")
    try:
        fields["fingerprint"] = identity.fingerprint_of(identity.public_key_from_b64(pk))
        fields["pk"] = pk
    except (ValueError, TypeError):
        problems.append("pk missing or malformed")
    return fields, problems


# --- announcing --------------------------------------------------------------------------------------------------


def instance_name(agent: identity.Identity) -> str:
    """A stable name per agent key: the same after a restart, different for every agent on the LAN."""
    return "luckrig-" + hashlib.sha256(agent.public_raw).hexdigest()[:12]


def ip_version_of(interfaces: list) -> IPVersion:
    """The IP versions of zeroconf interfaces: IPv4 addresses, IPv6 addresses or interface indexes (IPv6)."""
    v6 = any(isinstance(a, int) or ":" in a for a in interfaces)
    v4 = any(isinstance(a, str) and ":" not in a for a in interfaces)
    return IPVersion.All if v4 and v6 else IPVersion.V6Only if v6 else IPVersion.V4Only


class LanAdvertiser:
    """Announces this agent on `addresses` (their interface only) while it runs; `stop()` sends the goodbye
    packets. Registration probes the name first (about a second), so it runs in the background: the agent serves
    at once. With `find` (what to announce now: node_agent/lan_addresses.py), the addresses are checked every
    `check_interval` seconds and a change is announced: zeroconf's sockets move to the new addresses
    (`async_update_interfaces`) and the service's records are sent again (`async_update_service`)."""

    def __init__(
        self,
        *,
        agent: identity.Identity,
        port: int,
        addresses: list[str],
        service_type: str = SERVICE_TYPE,
        find: Callable[[], Announcement] | None = None,
        check_interval: float = 10.0,
    ):
        self.identity, self.port, self.addresses = agent, port, addresses
        self.service_type = service_type  # PAIRING_SERVICE_TYPE for `luckrig-node pair`'s listener
        self.find, self.check_interval = find, check_interval
        self.txt: dict[str, str] = {}
        self.name = f"{instance_name(agent)}.{service_type}"
        self.server = f"{instance_name(agent)}.local."
        self.aiozc: AsyncZeroconf | None = None
        self.info: AsyncServiceInfo | None = None
        self._registering: asyncio.Task | None = None
        self._lost = ""  # why the last check found nothing to announce (said once, not every check)
        self.registered = asyncio.Event()

    def _info(self) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            self.service_type,
            self.name,
            port=self.port,
            properties=self.txt,
            server=self.server,
            parsed_addresses=self.addresses,
        )

    def start(self, txt: dict[str, str]) -> None:
        self.txt = txt
        interfaces = Announcement("", self.addresses).zeroconf_interfaces()
        self.aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=ip_version_of(interfaces))
        self.info = self._info()
        self._registering = asyncio.create_task(self._register())

    async def _register(self) -> None:
        try:
            # Probing first (is the name free?); the awaitable it returns then sends the announcements.
            announcing = await self.aiozc.async_register_service(self.info, allow_name_change=True)
        except Exception as exc:  # noqa: BLE001 - whatever zeroconf raises, the rig keeps serving
            log.warning("the LAN announcement failed: %s", exc)
            return
        self.name = self.info.name  # allow_name_change may have renamed it after a conflict
        self.registered.set()
        log.info("announcing %s on the LAN at %s port %d", self.name, ", ".join(self.addresses), self.port)
        await announcing
        while self.find is not None:
            await asyncio.sleep(self.check_interval)
            await self.check()

    async def check(self) -> None:
        """Announce the addresses `find` gives now, if they changed. Nothing to announce (the lease lost, the cable
        out) keeps the last announcement: it expires with its records unless the addresses come back."""
        try:
            found = self.find()
        except (LanError, OSError, ValueError) as exc:
            if str(exc) != self._lost:
                log.warning("the LAN announcement stays as it was: %s", exc)
            self._lost = str(exc)
            return
        self._lost = ""
        if found.addresses == self.addresses:
            return
        try:
            interfaces = found.zeroconf_interfaces()
            await self.aiozc.async_update_interfaces(interfaces, ip_version_of(interfaces))
            gone = [address for address in self.addresses if address not in found.addresses]
            self.addresses = found.addresses
            self.info = self._info()
            await (await self.aiozc.async_update_service(self.info))
            self._goodbye(gone)
        except Exception as exc:  # noqa: BLE001 - the next check tries again; the rig keeps serving
            log.warning("could not announce the new LAN addresses: %s", exc)
            return
        log.info("the LAN addresses changed: announcing %s on %s", ", ".join(self.addresses), found.interface)

    def _goodbye(self, addresses: list[str]) -> None:
        """Address records with TTL 0 for the addresses no longer announced (RFC 6762 section 10.1), so that browsers
        drop them within a second rather than when their TTL (120 s) runs out: the records sent with the new
        addresses are not relied on to flush them (tests/node_agent/test_lan_addresses.py fails without this).
        Sent on the sockets that remain."""
        if not addresses:
            return
        gone = AsyncServiceInfo(
            self.service_type, self.name, port=self.port, server=self.server, parsed_addresses=addresses
        )
        out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        for record in gone.dns_addresses(override_ttl=0):
            out.add_answer_at_time(record, 0)
        self.aiozc.zeroconf.async_send(out)

    def status(self) -> dict:
        """For /health (public through the relay: no LAN address, no key) and `luckrig-node status`."""
        return {"announced": self.registered.is_set(), "radius": self.txt.get("radius")}

    async def update(self, txt: dict[str, str]) -> None:
        """Announce new TXT fields (the rig's radius changed), once registered; a no-op when nothing changed."""
        if txt == self.txt:
            return
        self.txt = txt
        if self.registered.is_set() and self.aiozc is not None:
            self.info = self._info()
            await (await self.aiozc.async_update_service(self.info))

    async def stop(self) -> None:
        """Say goodbye (TTL 0 records, so browsers drop the rig at once rather than after its TTL) and close.
        Closing zeroconf unregisters whatever it has registered, with goodbyes, even in the middle of announcing."""
        if self._registering is not None and not self._registering.done():
            self._registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._registering
        self.registered.clear()
        if self.aiozc is not None:
            aiozc, self.aiozc = self.aiozc, None
            await aiozc.async_close()


# --- seeing the others -------------------------------------------------------------------------------------------


def url_host(address: str) -> str:
    """An address as a URL's host: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def usable_addresses(addresses: list[str]) -> list[str]:
    """The addresses a rig announces that a client here can connect to, IPv4 first: an IPv6 link-local one is left
    out (it needs the interface's scope, which the record does not carry)."""
    kept = []
    for address in addresses:
        with contextlib.suppress(ValueError):
            if announceable(address, allow_loopback=True) and address not in kept:
                kept.append(address)
    return sorted(kept, key=lambda a: ":" in a)


@dataclass
class SeenRig:
    name: str
    addresses: list[str]
    port: int | None
    fields: dict
    problems: list[str]
    first_seen: float
    last_seen: float = field(default=0.0)

    def url(self, address: str | None = None) -> str | None:
        """`http://host:port` at `address` (`https` when it announces `tls=1`; default: the first announced, IPv4
        when there is one); an IPv6 address in brackets (RFC 3986). None without an address or a port."""
        address = address or (self.addresses[0] if self.addresses else None)
        if address is None or self.port is None:
            return None
        scheme = "https" if self.fields.get("tls") else "http"
        return f"{scheme}://{url_host(address)}:{self.port}"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "addresses": self.addresses,
            "port": self.port,
            "url": self.url(),
            **self.fields,
            "problems": self.problems,
        }


class LanBrowser:
    """The table of LuckRig rigs seen on the LAN, by service name: added and changed from zeroconf's events (each
    one resolved for its address, port and TXT), removed on a goodbye or when zeroconf's cache lets the records
    expire, and swept every `sweep_interval` seconds for entries whose records have gone from the cache."""

    def __init__(
        self,
        aiozc: AsyncZeroconf,
        *,
        sweep_interval: float = 10.0,
        resolve_timeout: float = 3.0,
        on_change: Callable[[str, SeenRig | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        service_type: str = SERVICE_TYPE,
    ):
        self.aiozc = aiozc
        self.service_type = service_type
        self.sweep_interval, self.resolve_timeout = sweep_interval, resolve_timeout
        self.on_change = on_change
        self.clock = clock
        self.rigs: dict[str, SeenRig] = {}
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task] = set()
        self._resolving: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._browser = AsyncServiceBrowser(self.aiozc.zeroconf, self.service_type, handlers=[self._on_event])
        self._spawn(self._sweep_forever())

    async def stop(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro, *, resolving: bool = False) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if resolving:
            self._resolving.add(task)
            task.add_done_callback(self._resolving.discard)

    async def settle(self) -> None:
        """Wait for the rigs already heard of to be resolved (each bounded by resolve_timeout)."""
        if self._resolving:
            await asyncio.wait(set(self._resolving), timeout=self.resolve_timeout + 1)

    def _on_event(self, zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._forget(name)
        else:
            self._spawn(self._resolve(name), resolving=True)

    def _forget(self, name: str) -> None:
        if self.rigs.pop(name, None) is not None and self.on_change is not None:
            self.on_change(name, None)

    async def _resolve(self, name: str) -> None:
        info = AsyncServiceInfo(self.service_type, name)
        try:
            found = await info.async_request(self.aiozc.zeroconf, int(self.resolve_timeout * 1000))
        except Exception as exc:  # noqa: BLE001 - a hostile or broken record must not stop the browser
            log.info("could not resolve a LAN announcement: %s", type(exc).__name__)
            return
        if found:
            self._store(name, info)

    def _store(self, name: str, info: AsyncServiceInfo) -> None:
        if name not in self.rigs and len(self.rigs) >= MAX_RIGS:
            return
        try:
            fields, problems = parse_txt(info.properties)
            addresses = usable_addresses(info.parsed_addresses(IPVersion.All))
        except Exception:  # noqa: BLE001 - whatever a record holds
            fields, problems, addresses = parse_txt({}), ["unreadable record"], []
        port = info.port if isinstance(info.port, int) and 0 < info.port < 65536 else None
        if port is None:
            problems.append("no port")
        now = self.clock()
        seen = self.rigs.get(name)
        self.rigs[name] = SeenRig(name, addresses, port, fields, problems, seen.first_seen if seen else now, now)
        if self.on_change is not None:
            self.on_change(name, self.rigs[name])

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()

    def sweep(self) -> None:
        """Drop the rigs whose service records are no longer in zeroconf's cache (expired, or a goodbye missed), and
        take a rig's new addresses from it: an address retired by a goodbye leaves the cache a second after the
        event that resolved the rig, with no event of its own."""
        for name in list(self.rigs):
            info = AsyncServiceInfo(self.service_type, name)
            if not info.load_from_cache(self.aiozc.zeroconf):
                self._forget(name)
                continue
            try:
                changed = usable_addresses(info.parsed_addresses(IPVersion.All)) != self.rigs[name].addresses
            except Exception:  # noqa: BLE001 - whatever a record holds
                changed = False
            if changed:
                self._store(name, info)


def print_discovered(seconds: float, interface: str = "", *, as_json: bool = False) -> int:
    """`luckrig-node discover`: what the LAN announces, one line per rig (what it claims: TXT is not proof)."""
    if seconds <= 0:
        raise ValueError("--seconds must be greater than 0")
    rigs = asyncio.run(discover(seconds, interface))
    if as_json:
        print(json.dumps(rigs, indent=2))
        return 0
    if not rigs:
        print(f"No LuckRig rig announced itself on the LAN in {seconds:g} s (agents announce with serve --lan).")
        return 0
    for rig in rigs:
        where = ", ".join(f"{url_host(address)}:{rig['port']}" for address in rig["addresses"]) or "no address"
        claims = " ".join(f"{key}={rig[key]}" for key in ("node", "model", "radius", "version") if rig[key])
        print(printable(f"{rig['name']}  {where}  {claims}  key {rig['fingerprint'] or '?'}", limit=400))
        if rig["problems"]:
            print(printable("    ignored: " + "; ".join(rig["problems"]), limit=400))
    print("These are claims the rigs make about themselves; pairing (next) is what will prove who they are.")
    return 0


def browsing_zeroconf(interface: str = "") -> AsyncZeroconf:
    """Zeroconf for browsing, over IPv4 and IPv6: on `interface` when one is named, else on every interface
    (node_agent/lan_addresses.py `listen_interfaces`). IPv4 alone where this machine has no IPv6 at all."""
    choice = listen_interfaces(ifaddr.get_adapters(), interface)
    if not choice:
        raise LanError(
            f"interface {interface} has no address to listen on" if interface else "no interface to listen on"
        )
    try:
        return AsyncZeroconf(interfaces=choice, ip_version=ip_version_of(choice))
    except OSError as exc:  # no IPv6 here (disabled, or no such socket family)
        log.info("browsing over IPv4 only: %s", exc)
        return AsyncZeroconf(interfaces=[c for c in choice if isinstance(c, str)], ip_version=IPVersion.V4Only)


async def discover(seconds: float, interface: str = "") -> list[dict]:
    """Browse for `seconds` and return what was seen (`luckrig-node discover`)."""
    aiozc = browsing_zeroconf(interface)
    browser = LanBrowser(aiozc)
    try:
        await browser.start()
        await asyncio.sleep(seconds)
        await browser.settle()  # a rig heard of just before the end is listed, not lost
        return [rig.as_dict() for rig in sorted(browser.rigs.values(), key=lambda r: r.name)]
    finally:
        await browser.stop()
        await aiozc.async_close()

"""Which addresses `serve --lan` announces (issue 16): the default route's interface and, on it, the addresses
other devices on the LAN can use. IPv4 addresses that are not link-local; IPv6 global and unique local (ULA)
addresses, never link-local (fe80::/10: useless without the interface's scope, which a browser elsewhere cannot
know) nor loopback. Docker bridges, veth pairs, VPN tunnels and the like are other networks, never announced.

The default route comes from Linux's /proc (IPv4 and IPv6 tables) where it exists; elsewhere (macOS, the BSDs,
Windows) from the "UDP connect" trick: connecting a UDP socket sends nothing, but makes the kernel pick the route
and the source address it would use for a documentation address (192.0.2.1, 2001:db8::1, which no LAN routes
specially), and the interface holding that address is the default route's. `--lan-interface` overrides both."""

import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import ifaddr

RTF_UP = 0x1
# Interfaces that are never the LAN, even when a default route goes through them: containers' bridges and pairs,
# VPN tunnels, hypervisors' host-only networks, loopback. A name is a heuristic; --lan-interface overrides it.
NOT_LAN_PREFIXES = (
    "lo",
    "docker",
    "br-",
    "veth",
    "virbr",
    "vboxnet",
    "vmnet",
    "tun",
    "tap",
    "wg",
    "tailscale",
    "zt",
    "utun",
    "ppp",
    "cni",
    "flannel",
    "podman",
)
# Where a packet to the internet would go, without sending one: documentation addresses (RFC 5737, RFC 3849).
PROBE_V4, PROBE_V6 = "192.0.2.1", "2001:db8::1"


class LanError(Exception):
    """Why the agent cannot announce itself (said once in the log; the rig keeps serving)."""


class Announcement(NamedTuple):
    """The interface(s) announced and their addresses, IPv4 first (a client that takes the first address, as the
    local router does, then uses IPv4 whenever the rig has it)."""

    interface: str
    addresses: list[str]

    def zeroconf_interfaces(self) -> list[str]:
        """What python-zeroconf should listen and answer on: each IPv4 address (it joins the group by address) and
        one IPv6 address of the interface (it joins by the interface index it finds for it; a second address of
        the same interface would only join the same group again)."""
        v4 = [a for a in self.addresses if ":" not in a]
        v6 = [a for a in self.addresses if ":" in a]
        return v4 + v6[:1]


# --- the default route -----------------------------------------------------------------------------------------


def default_route_interfaces(route_table: str) -> list[str]:
    """The interfaces of IPv4 default routes in /proc/net/route's format, lowest metric first."""
    found = []
    for line in route_table.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8:
            continue
        try:
            destination, flags, metric, mask = int(parts[1], 16), int(parts[3], 16), int(parts[6]), int(parts[7], 16)
        except ValueError:
            continue
        if destination == 0 and mask == 0 and flags & RTF_UP:
            found.append((metric, parts[0]))
    return [name for _, name in sorted(found)]


def default_route6_interfaces(route_table: str) -> list[str]:
    """The interfaces of IPv6 default routes in /proc/net/ipv6_route's format (destination, its prefix length,
    source, its prefix length, next hop, metric, refcount, use, flags, device), lowest metric first. The kernel's
    unreachable default on `lo` has no RTF_UP."""
    found = []
    for line in route_table.splitlines():
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            destination, prefix, metric, flags = (
                int(parts[0], 16),
                int(parts[1], 16),
                int(parts[5], 16),
                int(parts[8], 16),
            )
        except ValueError:
            continue
        if destination == 0 and prefix == 0 and flags & RTF_UP:
            found.append((metric, parts[9]))
    return [name for _, name in sorted(found)]


def is_lan_interface(name: str) -> bool:
    return not name.startswith(NOT_LAN_PREFIXES)


def first_lan(names: Iterable[str]) -> str | None:
    return next((name for name in names if is_lan_interface(name)), None)


def lan_interface(route_table: str) -> str:
    """The interface of the IPv4 default route (the lowest metric one that is not a container, VPN or loopback
    interface); LanError when there is none."""
    name = first_lan(default_route_interfaces(route_table))
    if name is None:
        raise LanError("no default route through a LAN interface: name one with --lan-interface")
    return name


def holder_of(adapters: Iterable, address: str) -> str | None:
    """The name of the adapter that holds `address` (as getsockname gave it), if any."""
    wanted = ipaddress.ip_address(address.split("%")[0])
    for adapter in adapters:
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(text.split("%")[0]) == wanted:
                    return adapter.name
    return None


def probe_source(family: int, target: str) -> str | None:
    """The source address the kernel would use to reach `target`, or None when it has no route there. A UDP
    connect() only picks the route: no packet leaves."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))
            return probe.getsockname()[0]
    except OSError:
        return None


def probed_interfaces(adapters: list) -> tuple[str | None, str | None]:
    """(IPv4, IPv6) default-route interfaces by the UDP connect trick, each None when there is no such route or
    it goes through a container, VPN or loopback interface."""
    found = []
    for family, target in ((socket.AF_INET, PROBE_V4), (socket.AF_INET6, PROBE_V6)):
        source = probe_source(family, target)
        name = holder_of(adapters, source) if source else None
        found.append(name if name and is_lan_interface(name) else None)
    return found[0], found[1]


# --- the addresses on it -----------------------------------------------------------------------------------------


def announceable(address: str, *, allow_loopback: bool = False) -> bool:
    """An address other devices can use: not link-local (IPv4 169.254/16, IPv6 fe80::/10), unspecified, multicast
    or (unless named by the operator) loopback. IPv6: global or unique local (fc00::/7) only."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.is_link_local or ip.is_unspecified or ip.is_multicast or (ip.is_loopback and not allow_loopback):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_loopback:
        return ip.is_global or ip in ipaddress.IPv6Network("fc00::/7")
    return True


def interface_addresses(adapters: Iterable, name: str, *, allow_loopback: bool = False, version: int = 4) -> list[str]:
    """The announceable addresses of interface `name` (IP `version` 4 or 6) in an ifaddr adapter table."""
    found = []
    for adapter in adapters:
        if adapter.name != name:
            continue
        for ip in adapter.ips:
            is_v6 = not isinstance(ip.ip, str)  # IPv6: (address, flowinfo, scope_id)
            if is_v6 != (version == 6):
                continue
            text = ip.ip[0] if is_v6 else ip.ip
            if announceable(text, allow_loopback=allow_loopback) and text not in found:
                found.append(str(ipaddress.ip_address(text.split("%")[0])))
    return found


def announce_addresses(
    route_table: str,
    adapters: Iterable,
    interface: str = "",
    *,
    route6_table: str = "",
    probed: tuple[str | None, str | None] | None = None,
) -> Announcement:
    """What to announce: `interface`'s addresses when the operator names one (loopback allowed then: a test or a
    single-machine setup), else the IPv4 default route's interface's IPv4 addresses and the IPv6 default route's
    interface's IPv6 ones (each family falls back on the other's interface when it has no default route of its
    own). The routes come from /proc's tables, or from `probed` (the UDP connect trick) when given. LanError when
    there is nothing to announce."""
    adapters = list(adapters)
    if interface:
        name4 = name6 = interface
    elif probed is not None:
        name4, name6 = probed
    else:
        name4, name6 = (
            first_lan(default_route_interfaces(route_table)),
            first_lan(default_route6_interfaces(route6_table)),
        )
    if name4 is None and name6 is None:
        raise LanError("no default route through a LAN interface: name one with --lan-interface")
    name4, name6 = name4 or name6, name6 or name4
    loopback = bool(interface)
    addresses = interface_addresses(adapters, name4, allow_loopback=loopback) + interface_addresses(
        adapters, name6, allow_loopback=loopback, version=6
    )
    names = name4 if name4 == name6 else f"{name4} (IPv4), {name6} (IPv6)"
    if not addresses:
        raise LanError(f"interface {names} has no IPv4 address and no global or ULA IPv6 address to announce")
    return Announcement(names, addresses)


def listen_interfaces(adapters: Iterable, name: str = "") -> list[str | int]:
    """python-zeroconf interfaces to browse on: every IPv4 address and the index of every interface with IPv6 (it
    joins the IPv6 group by index), loopback's IPv6 side left out unless named (nothing multicasts there); only
    interface `name`'s when one is named."""
    chosen: list[str | int] = []
    for adapter in adapters:
        if name and adapter.name != name:
            continue
        chosen += [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
        v6 = [ip.ip[0] for ip in adapter.ips if isinstance(ip.ip, tuple)]
        if adapter.index and v6 and (name or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in v6)):
            chosen.append(adapter.index)
    return chosen


def reachable_through(addresses: list[str], host: str) -> list[str]:
    """The announced addresses the agent listening on `host` answers on: an IPv4 listener (0.0.0.0 or one IPv4
    address) is not reached at an IPv6 address, so announcing one would send clients to a closed port. `::` (dual
    stack on Linux), a name or an IPv6 address keep them all."""
    try:
        listens_v4_only = ipaddress.ip_address(host).version == 4
    except ValueError:
        return addresses
    return [a for a in addresses if ":" not in a] if listens_v4_only else addresses


def read_proc(*names: str) -> str | None:
    """A /proc file of this thread's network namespace (a thread may be in another one than the process: the
    tests' browsers are), or None when there is no /proc (not Linux)."""
    for name in names:
        for path in (f"/proc/thread-self/net/{name}", f"/proc/net/{name}"):
            with contextlib.suppress(OSError):
                return Path(path).read_text()
    return None


def system_announce_addresses(interface: str = "", *, host: str = "", use_proc: bool = True) -> Announcement:
    """This machine's announcement now: /proc's route tables when there are some (and `use_proc`), the UDP
    connect trick otherwise; only the addresses an agent listening on `host` answers on."""
    adapters = ifaddr.get_adapters()
    route_table = read_proc("route") if use_proc else None
    if interface or route_table is None:
        found = announce_addresses("", adapters, interface, probed=None if interface else probed_interfaces(adapters))
    else:
        found = announce_addresses(route_table, adapters, route6_table=read_proc("ipv6_route") or "")
    if host:
        kept = reachable_through(found.addresses, host)
        if not kept:
            raise LanError(f"interface {found.interface} has no address an agent listening on {host} answers on")
        found = Announcement(found.interface, kept)
    return found

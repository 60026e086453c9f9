"""What `serve --lan` announces and how it follows the network (issue 16): IPv6 (global and ULA addresses, never
link-local, loopback or another interface's), the default route found without /proc (the UDP connect trick), and
addresses that change under a running announcement (a new DHCP lease, IPv4 gone), seen from another network
namespace across a veth pair with real mDNS."""

import asyncio
import functools
import time

import ifaddr
import pytest
import requests
from aiohttp import web

from node_agent import cli, identity, lan
from node_agent import lan_addresses as la
from tests.node_agent import netns
from tests.node_agent.test_lan import HEADER, adapter, route, wait_for

V6_HEADERLESS_LO = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)


def route6(iface: str, metric: int = 1024, destination: str = "0" * 32, prefix: str = "00", flags: str = "00000003"):
    gateway = "fe800000000000000000000000000001"
    return f"{destination} {prefix} {'0' * 32} 00 {gateway} {metric:08x} 00000001 00000000 {flags} {iface}\n"


def test_ipv6_global_and_ula_addresses_are_announced_never_link_local_loopback_or_docker():
    table6 = (
        V6_HEADERLESS_LO  # the kernel's unreachable default: not up, and loopback anyway
        + route6("docker0", metric=1)
        + route6("eth0", destination="fd4c7272000000000000000000000000", prefix="40")  # not a default route
        + route6("eth0", metric=1024)
    )
    assert la.default_route6_interfaces(table6) == ["docker0", "eth0"]
    adapters = [
        adapter("lo", "127.0.0.1", ("::1", 0, 1)),
        adapter("docker0", "172.17.0.1", ("fd00:dead::1", 0, 3)),
        adapter("eth0", "192.168.1.20", ("fe80::1", 0, 2), ("2a01:4f8::20", 0, 2), ("fd4c:7272::20", 0, 2)),
    ]
    found = la.announce_addresses(HEADER + route("eth0"), adapters, route6_table=table6)
    assert found == ("eth0", ["192.168.1.20", "2a01:4f8::20", "fd4c:7272::20"])
    # python-zeroconf listens on each IPv4 address and on the interface's IPv6 side once.
    assert found.zeroconf_interfaces() == ["192.168.1.20", "2a01:4f8::20"]
    assert lan.ip_version_of(found.zeroconf_interfaces()) == lan.IPVersion.All
    # An agent listening on IPv4 only is not announced at its IPv6 addresses (clients would find a closed port).
    assert la.reachable_through(found.addresses, "0.0.0.0") == ["192.168.1.20"]  # noqa: S104
    assert la.reachable_through(found.addresses, "192.168.1.20") == ["192.168.1.20"]
    assert la.reachable_through(found.addresses, "::") == found.addresses


def test_each_family_follows_its_own_default_route_and_falls_back_on_the_other():
    adapters = [
        adapter("eth0", "192.168.1.20", ("fd4c:7272::20", 0, 2)),
        adapter("wlan0", "192.168.2.30", ("2a01:4f8::30", 0, 3)),
    ]
    both = la.announce_addresses(HEADER + route("eth0"), adapters, route6_table=route6("wlan0"))
    assert both == ("eth0 (IPv4), wlan0 (IPv6)", ["192.168.1.20", "2a01:4f8::30"])
    # No IPv6 default route: the IPv4 route's interface gives both (a ULA-only home network has no IPv6 route).
    assert la.announce_addresses(HEADER + route("eth0"), adapters)[1] == ["192.168.1.20", "fd4c:7272::20"]
    # An IPv6-only network: the IPv6 route's interface gives both.
    v6_only = [adapter("eth0", ("fe80::1", 0, 2), ("fd4c:7272::20", 0, 2))]
    assert la.announce_addresses(HEADER, v6_only, route6_table=route6("eth0")) == ("eth0", ["fd4c:7272::20"])
    with pytest.raises(la.LanError, match="no IPv4 address and no global or ULA IPv6 address"):
        la.announce_addresses(HEADER, [adapter("eth0", ("fe80::1", 0, 2))], route6_table=route6("eth0"))


def test_a_browser_uses_ipv6_in_brackets_and_never_link_local():
    assert lan.usable_addresses(["fd4c:7272::1", "fe80::1", "10.0.0.5", "10.0.0.5"]) == ["10.0.0.5", "fd4c:7272::1"]
    rig = lan.SeenRig("r", ["fd4c:7272::1"], 8788, {}, [], 0.0)
    assert rig.url() == "http://[fd4c:7272::1]:8788" and rig.as_dict()["url"] == rig.url()
    assert lan.SeenRig("r", ["10.0.0.5", "fd4c:7272::1"], 8788, {}, [], 0.0).url() == "http://10.0.0.5:8788"
    assert lan.SeenRig("r", [], 8788, {}, [], 0.0).url() is None
    # Browsing listens on every IPv4 address and every interface's IPv6 side, loopback's only when named.
    lo = ifaddr.Adapter("lo", "lo", [ifaddr.IP("127.0.0.1", 8, "lo"), ifaddr.IP(("::1", 0, 0), 128, "lo")], index=1)
    eth = ifaddr.Adapter(
        "eth0", "eth0", [ifaddr.IP("10.0.0.5", 24, "e"), ifaddr.IP(("fe80::5", 0, 2), 64, "e")], index=2
    )
    v4_only = ifaddr.Adapter("eth1", "eth1", [ifaddr.IP("10.1.0.5", 24, "eth1")], index=3)
    assert la.listen_interfaces([lo, eth, v4_only]) == ["127.0.0.1", "10.0.0.5", 2, "10.1.0.5"]
    assert la.listen_interfaces([lo, eth, v4_only], "lo") == ["127.0.0.1", 1]
    assert lan.ip_version_of(["10.0.0.5"]) == lan.IPVersion.V4Only and lan.ip_version_of([2]) == lan.IPVersion.V6Only


def test_without_proc_the_default_route_is_found_by_a_udp_connect(tmp_path):
    """The portable fallback, forced on Linux: it finds what /proc finds, and says so when there is no route."""

    def both_ways():
        return la.system_announce_addresses(), la.system_announce_addresses(use_proc=False)

    def no_route():
        assert la.probe_source(la.socket.AF_INET, la.PROBE_V4) is None
        with pytest.raises(la.LanError, match="no default route"):
            la.system_announce_addresses(use_proc=False)
        return la.system_announce_addresses("lo", use_proc=False)  # --lan-interface still names one

    with netns.veth_pair() as pair:
        netns.add_ipv6(pair)
        from_proc, probed = netns.run_in(pair.a, lambda: asyncio.to_thread(both_ways), timeout=10)
        with netns.namespace() as alone:
            named = netns.run_in(alone, lambda: asyncio.to_thread(no_route), timeout=10)
    assert from_proc == probed == (pair.link_a, [pair.address_a, netns.ULA_A])
    assert named == ("lo", ["127.0.0.1", "::1"])  # loopback only when named


def test_the_announcement_follows_ipv6_a_new_lease_and_ipv4_going_away(tmp_path, capsys):
    key = identity.load_or_create(tmp_path)
    txt = lan.txt_record(node_id="", public_key=key.public_b64, model="smollm2", radius="local", version="1")
    port = 8788

    async def rig(stop):
        """The agent's side in namespace a: something answering on its port over IPv4 and IPv6, announced."""

        async def health(request):
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "::", port).start()
        find = functools.partial(la.system_announce_addresses, host="::")
        advertiser = lan.LanAdvertiser(agent=key, port=port, addresses=find().addresses, find=find, check_interval=0.5)
        advertiser.start(txt)
        try:
            while not stop.is_set():
                await asyncio.sleep(0.1)
        finally:
            await advertiser.stop()
            await runner.cleanup()

    def addresses(browser) -> list[str] | None:
        rigs = list(browser.rigs.values())
        return rigs[0].addresses if len(rigs) == 1 else None

    with netns.veth_pair() as pair:
        netns.add_ipv6(pair)
        # A decoy with a ULA of its own, as docker's IPv6 bridge has: never announced.
        for args in (
            ("link", "add", "docker0", "type", "veth", "peer", "name", "veth0dock"),
            ("addr", "add", "fd4c:dead::1/64", "dev", "docker0", "nodad"),
            ("link", "set", "docker0", "up"),
        ):
            netns._checked("-n", pair.a, *args)
        renewed = f"10.77.{pair.subnet}.3"

        async def watch():
            aiozc = lan.browsing_zeroconf()
            browser = lan.LanBrowser(aiozc, sweep_interval=0.5)
            timings = {}
            try:
                await browser.start()
                await wait_for(lambda: addresses(browser) == [pair.address_a, netns.ULA_A], 20, "not seen dual stack")
                (seen,) = browser.rigs.values()
                over_v6 = await asyncio.to_thread(requests.get, seen.url(netns.ULA_A) + "/health", timeout=5)
                assert over_v6.json() == {"ok": True}

                # A new DHCP lease: the old IPv4 address goes, another comes.
                netns._checked("-n", pair.a, "addr", "del", pair.address_a + "/25", "dev", pair.link_a)
                netns._checked("-n", pair.a, "addr", "add", renewed + "/25", "dev", pair.link_a)
                started = time.monotonic()
                await wait_for(lambda: addresses(browser) == [renewed, netns.ULA_A], 15, "the new lease not seen")
                timings["lease"] = time.monotonic() - started

                # IPv4 gone altogether: the rig is reached over IPv6 alone, its URL in brackets.
                netns._checked("-n", pair.a, "addr", "del", renewed + "/25", "dev", pair.link_a)
                started = time.monotonic()
                await wait_for(lambda: addresses(browser) == [netns.ULA_A], 15, "the IPv4 address not retired")
                timings["v6_only"] = time.monotonic() - started
                (seen,) = browser.rigs.values()
                only_v6 = await asyncio.to_thread(requests.get, seen.url() + "/health", timeout=5)
                assert seen.url() == f"http://[{netns.ULA_A}]:{port}" and only_v6.status_code == 200
                code = await asyncio.to_thread(cli.main, ["discover", "--seconds", "2.5"])
                return timings, code
            finally:
                await browser.stop()
                await aiozc.async_close()

        with netns.background_in(pair.a, rig):
            timings, code = netns.run_in(pair.b, watch, timeout=90)
    # Checked every 0.5 s here (10 s in the agent), then announced: seen well within the bound.
    assert timings["lease"] < 10 and timings["v6_only"] < 10, timings
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("luckrig-"))
    assert code == 0 and f"[{netns.ULA_A}]:{port}" in line and "fd4c:dead" not in line


def test_nothing_to_announce_for_a_while_keeps_the_last_announcement_and_says_so_once(tmp_path, caplog):
    key = identity.load_or_create(tmp_path)

    def cable_out() -> la.Announcement:
        raise la.LanError("no default route through a LAN interface: name one with --lan-interface")

    advertiser = lan.LanAdvertiser(agent=key, port=8788, addresses=["192.168.1.20"], find=cable_out)
    for _ in range(3):
        asyncio.run(advertiser.check())
    assert advertiser.addresses == ["192.168.1.20"]
    said = [r.getMessage() for r in caplog.records if "stays as it was" in r.getMessage()]
    assert said == [
        "the LAN announcement stays as it was: no default route through a LAN interface: name one with --lan-interface"
    ]

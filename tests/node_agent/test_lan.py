"""Local mode's foundation (issue 16): the agent's identity key, which address an agent announces, the TXT
record, and mDNS for real (python-zeroconf) inside network namespaces: an announcement seen and dropped in-process
over a namespace's loopback, and one agent process announcing itself across a veth pair."""

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import ifaddr
import pytest
import requests
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from node_agent import __version__, cli, config, identity, lan, lan_addresses
from tests.node_agent import netns

ROOT = Path(__file__).resolve().parents[2]
HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def route(iface: str, destination: str = "00000000", metric: int = 0, flags: str = "0003", mask: str = "00000000"):
    return f"{iface}\t{destination}\t0101A8C0\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"


def adapter(name: str, *addresses) -> ifaddr.Adapter:
    ips = [ifaddr.IP(a, 24 if isinstance(a, str) else 64, name) for a in addresses]
    return ifaddr.Adapter(name, name, ips)


# --- the identity key ---------------------------------------------------------------------------------------------


def test_the_identity_key_is_made_once_private_and_kept(tmp_path):
    first = identity.load_or_create(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / identity.FILE_NAME).st_mode) == 0o600
    again = identity.load_or_create(tmp_path)
    assert again.public_raw == first.public_raw and len(first.public_b64) == 43
    assert first.fingerprint.startswith("sha256:")
    assert identity.fingerprint_of(identity.public_key_from_b64(first.public_b64)) == first.fingerprint


def test_a_file_that_is_not_an_ed25519_key_is_refused_not_replaced(tmp_path):
    from node_agent import keys

    keys.generate(tmp_path / identity.FILE_NAME)  # an X25519 key where the Ed25519 one belongs
    before = (tmp_path / identity.FILE_NAME).read_bytes()
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        identity.load_or_create(tmp_path)
    assert (tmp_path / identity.FILE_NAME).read_bytes() == before


# --- which address is announced -------------------------------------------------------------------------------


def test_the_default_route_interface_is_announced_not_docker_or_a_vpn():
    table = (
        HEADER
        + route("docker0", "000011AC", mask="0000FFFF", flags="0001")
        + route("wg0", metric=50)  # a full-tunnel VPN's default route, preferred by metric
        + route("wlan0", metric=600)
        + route("eth0", metric=100)
        + route("eth1", metric=10, flags="0002")  # down (no RTF_UP)
    )
    assert lan_addresses.default_route_interfaces(table) == ["wg0", "eth0", "wlan0"]
    assert lan_addresses.lan_interface(table) == "eth0"
    adapters = [
        adapter("lo", "127.0.0.1"),
        adapter("docker0", "172.17.0.1"),
        adapter("eth0", "192.168.1.20", "169.254.3.4", ("fe80::1", 0, 2)),
        adapter("wg0", "10.8.0.2"),
    ]
    assert lan_addresses.announce_addresses(table, adapters) == ("eth0", ["192.168.1.20"])


def test_an_explicit_interface_overrides_the_default_route():
    table = HEADER + route("eth0")
    adapters = [adapter("eth0", "192.168.1.20"), adapter("lo", "127.0.0.1")]
    assert lan_addresses.announce_addresses(table, adapters, "lo") == ("lo", ["127.0.0.1"])


@pytest.mark.parametrize(
    ("table", "adapters", "message"),
    [
        (HEADER, [adapter("eth0", "192.168.1.20")], "no default route"),
        (HEADER + route("docker0") + route("veth12ab"), [adapter("docker0", "172.17.0.1")], "no default route"),
        (HEADER + route("eth0"), [adapter("eth0", "169.254.7.7", ("fe80::1", 0, 2))], "no IPv4 address"),
        ("garbage\nnot a route table at all\n", [], "no default route"),
    ],
)
def test_no_lan_address_is_said_not_guessed(table, adapters, message):
    with pytest.raises(lan_addresses.LanError, match=message):
        lan_addresses.announce_addresses(table, adapters)


# --- TXT --------------------------------------------------------------------------------------------------------


def test_the_txt_record_fits_one_string_per_field_and_reads_back(tmp_path):
    key = identity.load_or_create(tmp_path)
    txt = lan.txt_record(node_id="n_abc", public_key=key.public_b64, model="smollm2", radius="circle", version="1.2.0")
    assert all(len(k) + 1 + len(v.encode()) <= 255 for k, v in txt.items())
    fields, problems = lan.parse_txt({k.encode(): v.encode() for k, v in txt.items()})
    assert problems == []
    assert fields == {
        "txtvers": "1",
        "version": "1.2.0",
        "node": "n_abc",
        "pk": key.public_b64,
        "fingerprint": key.fingerprint,
        "model": "smollm2",
        "radius": "circle",
        "tls": None,  # a circle rig serves plain HTTP: no `tls` announced
    }
    # `tls`: absent, or exactly "1" (a local rig serving HTTPS with its key's certificate, node_agent/lan_tls.py).
    txt = lan.txt_record(node_id="", public_key=key.public_b64, model="m", radius="local", version="1", tls=True)
    assert txt["tls"] == "1" and lan.parse_txt(txt) == (
        {**fields, "node": None, "model": "m", "radius": "local", "version": "1", "tls": "1"},
        [],
    )
    for bad in ("yes", "0", "", "11"):
        fields_bad, problems = lan.parse_txt(txt | {"tls": bad})
        assert fields_bad["tls"] is None and problems == ["tls missing or malformed"], bad
    # Keys are case-insensitive, and the first of a repeated one counts.
    fields, _ = lan.parse_txt({b"TXTVERS": b"1", b"txtvers": b"2", b"Radius": b"local", b"radius": b"public"})
    assert (fields["txtvers"], fields["radius"]) == ("1", "local")
    too_long = lan.txt_record(node_id="n", public_key=key.public_b64, model="m" * 300, radius="local", version="1")
    assert "model" not in too_long and too_long["radius"] == "local"


def test_trust_radius_follows_the_tracker_and_the_rig_visibility():
    assert lan.trust_radius("", "public") == "local"
    assert lan.trust_radius("https://t", "circle") == "circle"
    assert lan.trust_radius("https://t", "unlisted") == "public"
    assert lan.trust_radius("https://t", "public") == "public"


@pytest.mark.parametrize(
    "properties",
    [
        {},
        None,
        {b"txtvers": b"2", b"node": b"n"},
        {b"txtvers": None},
        {b"\xff\xfe": b"\xff", b"txtvers": b"1"},
        {b"txtvers": b"1", b"pk": b"A" * 43, b"model": b"\x1b[2Jclear", b"radius": b"everyone", b"node": b"a b"},
        {b"txtvers": b"1", b"pk": b"not-base64!" * 4, b"version": b"9" * 300},
        {b"txtvers": b"1", b"pk": None, b"model": None, b"node": None, b"version": None, b"radius": None},
    ],
)
def test_hostile_txt_records_are_read_without_raising(properties):
    fields, problems = lan.parse_txt(properties)
    assert problems
    assert fields["radius"] in (None, *lan.RADII)
    assert all(value is None or value.isprintable() for value in fields.values())


def test_a_printed_name_cannot_drive_the_terminal():
    assert lan.printable("rig\x1b[2J\u202eevil") == "rig\N{REPLACEMENT CHARACTER}[2J\N{REPLACEMENT CHARACTER}evil"


# --- mDNS for real, in-process, on a fresh namespace's loopback ----------------------------------------------------


async def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds} s")
        await asyncio.sleep(0.05)


def test_a_rig_is_seen_updated_and_dropped_on_goodbye_while_hostile_records_are_ignored(tmp_path):
    key = identity.load_or_create(tmp_path)
    txt = lan.txt_record(node_id="n_one", public_key=key.public_b64, model="smollm2", radius="public", version="1")

    async def scenario():
        advertiser = lan.LanAdvertiser(agent=key, port=8788, addresses=["127.0.0.1"])
        advertiser.start(txt)
        aiozc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        hostile = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        browser = lan.LanBrowser(aiozc, sweep_interval=0.5)
        try:
            await browser.start()
            await wait_for(lambda: advertiser.name in browser.rigs, 10, "the rig was not seen")
            seen = browser.rigs[advertiser.name]
            assert (seen.addresses, seen.port, seen.problems) == (["127.0.0.1"], 8788, [])
            assert (seen.fields["node"], seen.fields["model"], seen.fields["radius"]) == ("n_one", "smollm2", "public")
            assert seen.fields["fingerprint"] == key.fingerprint

            # A hostile neighbour: garbage TXT, a right-to-left override in its name. Listed with its problems; the
            # browser goes on working.
            bad = AsyncServiceInfo(
                lan.SERVICE_TYPE,
                "evil\u202egnp." + lan.SERVICE_TYPE,
                port=1,
                properties={b"txtvers": b"1", b"pk": b"\xff" * 40, b"radius": b"root", b"model": b"\x07" * 10},
                server="evil.local.",
                parsed_addresses=["127.0.0.1"],
            )
            await (await hostile.async_register_service(bad, ttl=2))
            await wait_for(lambda: bad.name in browser.rigs, 10, "the hostile record was not listed")
            assert browser.rigs[bad.name].fields["radius"] is None and browser.rigs[bad.name].problems

            # The rig's radius changes: the browser sees the new TXT.
            await advertiser.update({**txt, "radius": "circle"})
            await wait_for(lambda: browser.rigs[advertiser.name].fields["radius"] == "circle", 10, "no update")

            # Goodbye: gone at once, not after the records' TTL (75 s for TXT and SRV, 120 s for the address).
            started = time.monotonic()
            await advertiser.stop()
            await wait_for(lambda: advertiser.name not in browser.rigs, 5, "the goodbye was not heard")
            assert time.monotonic() - started < 5 and bad.name in browser.rigs

            # A device that drops off the network says no goodbye: its records stop being answered and expire
            # (a 2 s TTL here), and the staleness sweep drops the rig (zeroconf's own events alone kept it longer).
            hostile.zeroconf.registry.async_remove(bad)
            await wait_for(lambda: bad.name not in browser.rigs, 10, "the silent rig stayed in the table")
        finally:
            await browser.stop()
            await hostile.async_close()
            await aiozc.async_close()
            await advertiser.stop()

    with netns.namespace() as name:
        netns.run_in(name, scenario, timeout=40)


def test_discover_prints_what_the_lan_announces(tmp_path, capsys):
    key = identity.load_or_create(tmp_path)
    txt = lan.txt_record(node_id="n_two", public_key=key.public_b64, model="qwen3:8b", radius="local", version="1")

    async def scenario():
        advertiser = lan.LanAdvertiser(agent=key, port=9001, addresses=["127.0.0.1"])
        advertiser.start(txt)
        try:
            await asyncio.wait_for(advertiser.registered.wait(), 10)
            # The command runs its own event loop; a thread made here is in this namespace too.
            text = await asyncio.to_thread(cli.main, ["discover", "--seconds", "1.5", "--lan-interface", "lo"])
            # A responder multicasts a record at most once a second (RFC 6762 section 6): a second browse this
            # soon after the first is answered at its second query, about a second in.
            as_json = await asyncio.to_thread(cli.main, ["discover", "--seconds", "2.5", "--json"])
            return text, as_json
        finally:
            await advertiser.stop()

    with netns.namespace() as name:
        codes = netns.run_in(name, scenario, timeout=30)
    out = capsys.readouterr().out
    assert codes == (0, 0)
    line = next(line for line in out.splitlines() if line.startswith("luckrig-"))
    assert "127.0.0.1:9001" in line and "node=n_two model=qwen3:8b radius=local version=1" in line
    assert f"key {key.fingerprint}" in line and "pairing (next) is what will prove who they are" in out
    listed = json.loads(out[out.index("[") :])
    assert [(rig["node"], rig["port"], rig["addresses"], rig["problems"]) for rig in listed] == [
        ("n_two", 9001, ["127.0.0.1"], [])
    ]


def test_discover_says_when_nothing_is_announced(capsys):
    with netns.namespace() as name:
        assert netns.run_in(name, lambda: asyncio.to_thread(cli.main, ["discover", "--seconds", "0.5"]), 20) == 0
    assert "No LuckRig rig announced itself on the LAN in 0.5 s" in capsys.readouterr().out


# --- one agent process, across a veth pair --------------------------------------------------------------------


def test_an_agent_with_lan_is_discovered_from_another_namespace_at_its_lan_address_only(tmp_path, capsys):
    config_dir, port = tmp_path / "agent", 8788
    with netns.veth_pair() as pair:
        # A decoy in the agent's namespace, made as docker makes its bridge's veth: its address must not be announced.
        decoy = f"10.77.{pair.subnet}.129"
        for args in (
            ("link", "add", "docker0", "type", "veth", "peer", "name", "veth0dock"),
            ("addr", "add", decoy + "/25", "dev", "docker0"),
            ("link", "set", "docker0", "up"),
            ("link", "set", "veth0dock", "up"),
        ):
            netns._checked("-n", pair.a, *args)
        # What `luckrig-node status` reads on this machine; the flags lan_rig passes win over it for the agent.
        saved = {"node_id": "fake-node", "tracker": "http://127.0.0.1:9", "host": pair.address_a, "port": port}
        config.save_config(config_dir, saved | {"upstream": "http://127.0.0.1:9"})
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")} | {"PYTHONPATH": str(ROOT)}
        log = open(tmp_path / "agent.log", "w")  # noqa: SIM115 - closed below
        agent = subprocess.Popen(
            ["ip", "netns", "exec", pair.a, sys.executable, "-m", "tests.node_agent.lan_rig", str(config_dir), "8788"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        async def discovery():
            aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)
            browser = lan.LanBrowser(aiozc, sweep_interval=1)
            try:
                await browser.start()
                await wait_for(lambda: browser.rigs and agent.poll() is None, 25, "the agent was not seen")
                (seen,) = browser.rigs.values()
                health = await asyncio.to_thread(
                    requests.get, f"http://{seen.addresses[0]}:{seen.port}/health", timeout=5
                )
                # `luckrig-node status` with the agent's config dir, from here (the tracker is out of reach).
                await asyncio.to_thread(cli.main, ["status", "--config-dir", str(config_dir)])
                agent.send_signal(signal.SIGTERM)
                started = time.monotonic()
                await wait_for(lambda: not browser.rigs, 10, "the agent's goodbye was not heard")
                return seen, health.json(), time.monotonic() - started
            finally:
                await browser.stop()
                await aiozc.async_close()

        try:
            seen, health, gone_after = netns.run_in(pair.b, discovery, timeout=45)
            assert agent.wait(10) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
            log.close()
    agent_log = (tmp_path / "agent.log").read_text()
    key = identity.load_or_create(config_dir)
    assert seen.addresses == [pair.address_a], agent_log
    assert f"announcing {seen.name} on the LAN at {pair.address_a} port 8788" in agent_log
    assert seen.port == port and seen.problems == []
    assert seen.fields | {"fingerprint": None} == {
        "txtvers": "1",
        "version": __version__,
        "node": "fake-node",
        "pk": key.public_b64,
        "fingerprint": None,
        "model": "smollm2-fake",
        "radius": "public",
        "tls": None,  # a public rig with --lan serves plain HTTP
    }
    assert seen.fields["fingerprint"] == key.fingerprint
    # The announced port is the agent's own (its /health), not the model server's.
    assert health["node_id"] == "fake-node" and health["engine"]["name"] == "luckrig-node-agent"
    assert gone_after < 10
    # /health is public through the relay: it says that the rig is announced, never its LAN address or key.
    assert health["lan"] == {"announced": True, "radius": "public"}
    assert f"LAN:       announced on the LAN as public, key {key.fingerprint}" in capsys.readouterr().out


# --- the flags ------------------------------------------------------------------------------------------------


def test_lan_is_off_unless_asked_by_flag_or_environment(monkeypatch, tmp_path):
    parser = cli.build_parser()
    base = ["serve", "--config-dir", str(tmp_path)]
    assert config.resolve(cli.flags_of(parser.parse_args(base))).lan is False
    on = config.resolve(cli.flags_of(parser.parse_args([*base, "--lan", "--lan-interface", "eth1"])))
    assert (on.lan, on.lan_interface) == (True, "eth1")
    monkeypatch.setenv("LUCKRIG_AGENT_LAN", "1")
    assert config.resolve(cli.flags_of(parser.parse_args(base))).lan is True
    monkeypatch.setenv("LUCKRIG_AGENT_LAN", "maybe")
    with pytest.raises(ValueError, match="expected 1 or 0"):
        config.resolve(cli.flags_of(parser.parse_args(base)))

"""`luckrig-node pair`, `pair CODE`, `pair --list` and `unpair` (issue 16): the commands around node_agent/pairing.py
and the paired-device store (node_agent/paired.py)."""

import asyncio
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from node_agent import config, identity, lan, paired, pairing


def _config_dir(args) -> Path:
    return Path(args.config_dir or config.default_config_dir())


def confirm(peer: pairing.Peer, *, yes: bool, ask=input) -> bool:
    """Show the comparison code and ask (unless --yes) whether it matches the other screen."""
    print(lan.printable(f"Paired device: {peer.name}  key {peer.fingerprint}", limit=300))
    print(f"Comparison code: {peer.comparison[:3]} {peer.comparison[3:]}  (the other device shows the same)")
    if yes:
        return True
    if not sys.stdin.isatty():
        print("Not a terminal: confirm with --yes after comparing the codes. Nothing was pinned.")
        return False
    return ask("Does the other device show the same comparison code? [y/N] ").strip().lower() in ("y", "yes")


def pin(store: paired.PairedStore, peer: pairing.Peer, *, yes: bool) -> int:
    if not confirm(peer, yes=yes):
        print("Not paired: nothing was pinned.")
        return 1
    device = store.pin(peer.public_key, peer.name)
    print(lan.printable(f"Pinned {device.name} ({device.fingerprint}) in {store.path}.", limit=300))
    return 0


async def show_code(args, agent: identity.Identity, store: paired.PairedStore) -> int:
    """Device A: listen for one device's pairing request with a fresh code, announced on the LAN."""
    session = pairing.PairingSession(agent, args.name or pairing.default_name())
    session.done = asyncio.get_running_loop().create_future()
    runner = web.AppRunner(pairing.listener_app(session), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    advertiser = None
    if not args.no_announce:
        try:
            _, addresses = lan.system_announce_addresses(args.lan_interface or "", host=args.host)
            advertiser = lan.LanAdvertiser(
                agent=agent, port=args.port, addresses=addresses, service_type=lan.PAIRING_SERVICE_TYPE
            )
            advertiser.start({"txtvers": lan.TXT_VERSION, "pk": agent.public_b64})
        except (lan.LanError, OSError) as exc:
            print(f"Not announced on the LAN ({exc}): on the other device use --address HOST:{args.port}.")
            advertiser = None
    print(f"Pairing code: {pairing.display_code(session.code)}  (valid {pairing.CODE_TTL // 60} minutes, once)")
    print(f"On the other device: luckrig-node pair {pairing.display_code(session.code)}")
    print(f"This device's key: {agent.fingerprint}", flush=True)
    try:
        peer = await asyncio.wait_for(session.done, pairing.CODE_TTL)
    except TimeoutError:
        print("The pairing code expired before any device used it. Nothing was pinned.")
        return 1
    finally:
        if advertiser is not None:
            await advertiser.stop()
        await runner.cleanup()
    return await asyncio.to_thread(pin, store, peer, yes=args.yes)


async def find_listeners(seconds: float, interface: str = "") -> list[str]:
    """The base URLs of the pairing listeners announced on the LAN within `seconds` (the first as soon as one is
    seen, after a short wait for others)."""
    aiozc = lan.browsing_zeroconf(interface)
    browser = lan.LanBrowser(aiozc, service_type=lan.PAIRING_SERVICE_TYPE)
    try:
        await browser.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not browser.rigs and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
        await browser.settle()
        return [url for url in (rig.url() for rig in browser.rigs.values()) if url]  # IPv6 in brackets
    finally:
        await browser.stop()
        await aiozc.async_close()


async def use_code(args, agent: identity.Identity, store: paired.PairedStore) -> int:
    """Device B: find the device showing the code and pair with it."""
    code = pairing.normalize_code(args.code)
    if args.address:
        candidates = [args.address if "://" in args.address else f"http://{args.address}"]
    else:
        candidates = await find_listeners(args.seconds, args.lan_interface or "")
        if not candidates:
            print(f"No device is showing a pairing code on the LAN (looked for {args.seconds:g} s).")
            return 1
    name = args.name or pairing.default_name()
    problems = []
    async with aiohttp.ClientSession(trust_env=False) as http:
        for base in candidates:
            try:
                peer = await pairing.request_pairing(http, base, code, agent, name)
            except pairing.PairingError as exc:
                problems.append(f"{base}: {exc}")
                continue
            return await asyncio.to_thread(pin, store, peer, yes=args.yes)
    for problem in problems:
        print(lan.printable(problem, limit=300))
    print("Not paired: nothing was pinned.")
    return 1


def list_paired(store: paired.PairedStore) -> int:
    devices = store.devices()
    if not devices:
        print("No paired devices.")
        return 0
    for device in devices.values():
        print(lan.printable(f"{device.fingerprint}  {device.name}  paired {device.paired_at}", limit=300))
    return 0


def run_pair(args) -> int:
    store = paired.PairedStore(_config_dir(args))
    if args.list:
        return list_paired(store)
    agent = identity.load_or_create(_config_dir(args))
    if args.code:
        return asyncio.run(use_code(args, agent, store))
    return asyncio.run(show_code(args, agent, store))


def run_unpair(args) -> int:
    store = paired.PairedStore(_config_dir(args))
    device = store.unpair(args.device)
    print(lan.printable(f"Unpaired {device.name} ({device.fingerprint}): its requests are refused from now on."))
    return 0


def add_parsers(sub, with_config_dir) -> None:
    pair = with_config_dir(
        sub.add_parser(
            "pair",
            help="pair with another device on the LAN: show a code here, or give the code another device shows",
            description="Without CODE: listen for a few minutes (port 8791, announced on the LAN) and show a code. "
            "With CODE (on the other device): find it on the LAN, exchange keys, and show the same six-digit "
            "comparison code on both; each device pins the other's key when its user confirms.",
        )
    )
    pair.add_argument("code", nargs="?", help="the code the other device shows (ABCD-EFGH)")
    pair.add_argument("--list", action="store_true", help="list the paired devices")
    pair.add_argument("--yes", "-y", action="store_true", help="pin without asking (compare the codes first)")
    pair.add_argument("--name", help="this device's name as the other one will show it (default: the host name)")
    pair.add_argument("--host", default="0.0.0.0", help="showing a code: listen on this address (default all)")  # noqa: S104
    pair.add_argument("--port", type=int, default=pairing.PORT, help=f"showing a code: the port ({pairing.PORT})")
    pair.add_argument("--no-announce", action="store_true", help="showing a code: do not announce it over mDNS")
    pair.add_argument("--address", help="with CODE: the other device's HOST:PORT (skips the mDNS search)")
    pair.add_argument("--seconds", type=float, default=5.0, help="with CODE: how long to search the LAN (5)")
    pair.add_argument("--lan-interface", help="announce or search on this interface only")
    pair.set_defaults(func=run_pair)

    unpair = with_config_dir(sub.add_parser("unpair", help="forget a paired device: its requests get 401 at once"))
    unpair.add_argument("device", help="its fingerprint (sha256:...) or its name (luckrig-node pair --list)")
    unpair.set_defaults(func=run_unpair)

"""Network namespaces for the LAN tests (issue 16): "two machines" on one host, joined by a veth pair
(../shared/SERVICES.md), and a way to run an asyncio coroutine inside one from this test process.

Linux keeps the network namespace per thread: a thread that calls setns(2) makes its sockets (multicast ones
included) in that namespace while the rest of the test process stays where it was. So the browsing side runs
in-process, in a thread of its own that ends with the test; names are unique per run, addresses are in 10.77.x.0/24
only, and teardown always deletes the namespaces."""

import asyncio
import contextlib
import ctypes
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _checked(*args: str) -> None:
    done = ip(*args)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Pair:
    """Two namespaces `a` and `b`: `a` has `address_a` on its veth end and a default route through it (the LAN
    interface an agent announces), `b` has `address_b`."""

    a: str
    b: str
    address_a: str
    address_b: str
    subnet: int
    link_a: str = ""
    link_b: str = ""


def _tag() -> str:
    return f"{os.getpid() % 100000}{random.randrange(1000):03d}"  # noqa: S311 - a name, not a secret


def _add_namespace(name: str) -> None:
    done = ip("netns", "add", name)
    if done.returncode != 0:
        pytest.skip(f"this kernel or user cannot make network namespaces (ip netns add: {done.stderr.strip()})")
    _checked("-n", name, "link", "set", "lo", "up")


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """One fresh namespace with only `lo` (up): multicast on loopback, nothing else to reach."""
    name = "lrl" + _tag()
    _add_namespace(name)
    try:
        yield name
    finally:
        ip("netns", "del", name)


@contextlib.contextmanager
def veth_pair() -> Iterator[Pair]:
    tag, subnet = _tag(), random.randrange(1, 255)  # noqa: S311
    a, b = "lra" + tag, "lrb" + tag
    _add_namespace(a)
    try:
        _add_namespace(b)
        try:
            _checked("link", "add", "va" + tag, "netns", a, "type", "veth", "peer", "name", "vb" + tag, "netns", b)
            address_a, address_b = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
            _checked("-n", a, "addr", "add", address_a + "/25", "dev", "va" + tag)
            _checked("-n", b, "addr", "add", address_b + "/25", "dev", "vb" + tag)
            _checked("-n", a, "link", "set", "va" + tag, "up")
            _checked("-n", b, "link", "set", "vb" + tag, "up")
            _checked("-n", a, "route", "add", "default", "dev", "va" + tag)
            yield Pair(a, b, address_a, address_b, subnet, "va" + tag, "vb" + tag)
        finally:
            ip("netns", "del", b)
    finally:
        ip("netns", "del", a)


def run_in(namespace_name: str, coro_factory, timeout: float):
    """Run `coro_factory()` on a new event loop in a new thread that has entered `namespace_name`; its result or
    its exception, within `timeout` seconds."""
    outcome: dict = {}

    def target() -> None:
        try:
            fd = os.open(f"/var/run/netns/{namespace_name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            outcome["value"] = asyncio.run(asyncio.wait_for(coro_factory(), timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout + 15)
    if thread.is_alive():
        raise TimeoutError(f"the coroutine in {namespace_name} did not end")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


ULA_A, ULA_B = "fd4c:7272::1", "fd4c:7272::2"  # a unique local /64 (RFC 4193) on the veth pair


def add_ipv6(pair: Pair) -> None:
    """IPv6 on the pair, usable at once (`nodad`: no duplicate address detection to wait for): a ULA on each end,
    fixed link-local addresses in place of the kernel's (still tentative for a second or two), and an IPv6
    default route through `a`'s end."""
    for namespace_name, link, ula, local in (
        (pair.a, pair.link_a, ULA_A, "fe80::a"),
        (pair.b, pair.link_b, ULA_B, "fe80::b"),
    ):
        _checked("-n", namespace_name, "-6", "addr", "flush", "dev", link)
        _checked("-n", namespace_name, "addr", "add", local + "/64", "dev", link, "nodad")
        _checked("-n", namespace_name, "addr", "add", ula + "/64", "dev", link, "nodad")
    _checked("-n", pair.a, "-6", "route", "add", "default", "dev", pair.link_a)


@contextlib.contextmanager
def background_in(namespace_name: str, coro_factory, timeout: float = 60) -> Iterator[threading.Event]:
    """Run `coro_factory(stop)` in `namespace_name` (as `run_in` does) while the block runs; `stop`, a
    threading.Event, is set when the block ends and the coroutine is expected to return then. Its exception, if
    any, is raised when the block ends."""
    stop, outcome = threading.Event(), {}

    def work() -> None:
        try:
            run_in(namespace_name, lambda: coro_factory(stop), timeout)
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        yield stop
    finally:
        stop.set()
        worker.join(timeout + 20)
    if "error" in outcome:
        raise outcome["error"]

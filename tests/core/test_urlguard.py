"""The SSRF guard of the tracker's outbound fetches (health probes, fingerprint checks), issue 11: IPv6 forms
that reach an IPv4 address (NAT64, 6to4, IPv4-compatible, IPv4-mapped) are judged by that IPv4 address, and a
failed fetch says the same thing whether a port was refused, silent, or never tried."""

import asyncio
import json
import socket
import time

import pytest

from core.urlguard import BlockedAddress, GuardedResolver, fetch_once, host_looks_public, is_public_address
from tests import factories
from tests.httpserver import Route, ScriptedServer

HIDDEN_BEHIND_IPV6 = [
    # NAT64, well-known prefix (RFC 6052): a translator would connect to 127.0.0.1, 10.0.0.1, 169.254.169.254
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b::a9fe:a9fe",
    # NAT64, local-use prefix (RFC 8215): its translator and its format are the local network's own
    "64:ff9b:1::a00:1",
    "64:ff9b:1::808:808",
    # 6to4 (2002::/16): the IPv4 address of the site is bits 16-48
    "2002:7f00:1::1",
    "2002:a00:1::",
    "2002:c0a8:101::1",
    "2002:a9fe:a9fe::1",
    # IPv4-compatible (::/96, deprecated) and IPv4-mapped (::ffff:0:0/96)
    "::7f00:1",
    "::a00:1",
    "::c0a8:101",
    "::8.8.8.8",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
]


@pytest.mark.parametrize("address", HIDDEN_BEHIND_IPV6)
def test_ipv6_forms_of_private_loopback_and_link_local_addresses_are_refused(address):
    assert not is_public_address(address)
    assert not host_looks_public(f"[{address}]")


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_and_their_translations_are_allowed(address):
    """A DNS64 resolver answers 64:ff9b::<public IPv4> for every IPv4-only host: those stay reachable."""
    assert is_public_address(address)


def test_the_resolver_drops_such_answers_before_any_connection():
    class Answers:
        async def resolve(self, host, port=0, family=socket.AF_INET):
            return [
                {"hostname": host, "host": a, "port": port, "family": socket.AF_INET6, "proto": 0, "flags": 0}
                for a in ("64:ff9b::a00:1", "2002:a00:1::1", "::ffff:127.0.0.1")
            ]

        async def close(self):
            pass

    async def resolve():
        guard = GuardedResolver(allow_private=False)
        guard._inner = Answers()
        return await guard.resolve("rebinding.example", 80)

    with pytest.raises(BlockedAddress):
        asyncio.run(resolve())


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "2002:7f00:1::1", "::7f00:1"])
def test_a_literal_ipv6_url_that_hides_a_private_address_is_never_fetched(address):
    started = time.monotonic()
    result = fetch_once(f"http://[{address}]:9/health", allow_private=False, timeout_sec=2, max_bytes=1024)
    assert not result.ok and result.error.startswith("blocked")
    assert time.monotonic() - started < 1  # refused before any connection attempt


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (an open port that does not speak HTTP)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port  # nothing listens there any more: connections are refused


def test_refused_silent_and_blocked_targets_get_one_and_the_same_error(silent_port, closed_port):
    """Otherwise the error would tell an outsider which private ports are open."""
    fetch = dict(timeout_sec=0.5, max_bytes=1024)
    refused = fetch_once(f"http://127.0.0.1:{closed_port}/health", allow_private=True, **fetch)
    silent = fetch_once(f"http://127.0.0.1:{silent_port}/health", allow_private=True, **fetch)
    blocked = fetch_once(f"http://127.0.0.1:{silent_port}/health", allow_private=False, **fetch)
    unresolvable = fetch_once("http://no-such-host.invalid/health", allow_private=False, **fetch)
    errors = {r.error for r in (refused, silent, blocked, unresolvable)}
    assert len(errors) == 1, errors
    assert not any(r.ok or r.status or r.latency_ms for r in (refused, silent, blocked, unresolvable))
    (error,) = errors
    assert str(closed_port) not in error and str(silent_port) not in error and "127.0.0.1" not in error
    # The operator's own logs may keep the specific cause.
    assert refused.detail != silent.detail


@pytest.mark.django_db
def test_the_public_probe_error_and_fingerprint_check_do_not_say_whether_a_port_is_open(
    api, owner, settings, silent_port, closed_port
):
    from tracker.monitor import run_cycle

    settings.ALLOW_PRIVATE_NODE_URLS = True
    settings.MONITOR_PROBE_TIMEOUT_SEC = 0.5
    key = factories.x25519_public_pem()
    nodes = [
        factories.make_node(owner, endpoint_url=f"http://127.0.0.1:{port}/v1", node_public_key=key)[0]
        for port in (silent_port, closed_port)
    ]
    from django.utils import timezone

    run_cycle(timezone.now(), jitter_sec=0)
    shown = set()
    for node in nodes:
        node.refresh_from_db()
        assert node.consecutive_failures == 1
        shown.add(api.get(f"/api/nodes/{node.pk}/metrics")[1]["last_error"])
        _, checked = api.post("/api/fingerprint/verify", {"node_id": node.pk})
        assert checked["ok"] is False
        shown.add(checked["error"])
    assert len(shown) == 1, shown


def test_a_reachable_public_style_answer_still_says_what_went_wrong():
    """Past the connection (an allowed address that answered), the status code is the owner's to see."""
    with ScriptedServer() as server:
        server.routes["/health"] = Route(503, json.dumps({"ok": False}).encode())
        result = fetch_once(server.base + "/health", allow_private=True, timeout_sec=2, max_bytes=1024)
    assert not result.ok and result.status == 503 and result.error == "HTTP 503"

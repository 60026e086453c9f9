"""Rendezvous hashing and the relayed-node liveness rule (pure)."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from nodes import liveness, rendezvous
from nodes.rendezvous import RelayState

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NODES = [f"rig-{i}" for i in range(3000)]


def test_the_same_node_always_gets_the_same_relay_whatever_the_order():
    relays = ["relay-a", "relay-b", "relay-c"]
    for node in NODES[:50]:
        assert rendezvous.choose(relays, node) == rendezvous.choose(list(reversed(relays)), node)
    assert rendezvous.choose([], "rig-1") is None
    assert rendezvous.choose(["only"], "rig-1") == "only"


def test_the_score_is_sha256_of_relay_and_node():
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"relay-a|rig-1").digest(), "big")
    assert rendezvous.score("relay-a", "rig-1") == expected


def test_nodes_spread_evenly_across_relays():
    for relays in (["relay-a", "relay-b"], ["r1", "r2", "r3", "r4"]):
        counts = Counter(rendezvous.choose(relays, n) for n in NODES)
        share = len(NODES) / len(relays)
        assert set(counts) == set(relays)
        assert all(abs(c - share) < 0.1 * share for c in counts.values()), counts


def test_only_a_departed_relays_nodes_move_and_a_new_relay_takes_only_its_share():
    three = ["relay-a", "relay-b", "relay-c"]
    before = {n: rendezvous.choose(three, n) for n in NODES}
    after = {n: rendezvous.choose(["relay-a", "relay-c"], n) for n in NODES}
    moved = [n for n in NODES if before[n] != after[n]]
    assert moved and all(before[n] == "relay-b" for n in moved)
    assert {after[n] for n in moved} == {"relay-a", "relay-c"}  # spread over the others, not piled on one
    grown = {n: rendezvous.choose([*three, "relay-d"], n) for n in NODES}
    changed = [n for n in NODES if grown[n] != before[n]]
    assert all(grown[n] == "relay-d" for n in changed)
    assert abs(len(changed) - len(NODES) / 4) < 0.1 * len(NODES)


def test_eligible_relays_are_live_not_draining_and_not_reported_unreachable_once_quiet():
    relays = [
        RelayState("fresh", NOW - timedelta(seconds=5)),
        RelayState("quiet", NOW - timedelta(seconds=20)),
        RelayState("gone", NOW - timedelta(seconds=61)),
        RelayState("never", None),
        RelayState("draining", NOW, draining=True),
    ]
    assert rendezvous.eligible(relays, NOW) == ["fresh", "quiet"]
    assert rendezvous.eligible(relays, NOW, unreachable_relay_id="quiet") == ["fresh"]
    assert rendezvous.eligible(relays, NOW, unreachable_relay_id="fresh") == ["fresh", "quiet"]
    assert rendezvous.eligible(relays, NOW, unreachable_relay_id="gone") == ["fresh", "quiet"]
    assert rendezvous.eligible(relays, NOW, unreachable_relay_id="unknown") == ["fresh", "quiet"]


def relayed(**kw):
    base = dict(
        last_heartbeat_at=NOW,
        last_probe_at=None,
        consecutive_failures=0,
        queue_active=0,
        queue_max_active=1,
        reachability="relayed",
        tunnel_seen_at=NOW - timedelta(seconds=10),
    )
    base.update(kw)
    return liveness.derive_status(liveness.Observed(**base), now=NOW, interval_sec=15, failures_before_down=3)


def test_a_relayed_node_needs_a_fresh_heartbeat_and_a_fresh_tunnel():
    assert relayed() == "available"
    assert relayed(queue_active=1) == "busy"
    assert relayed(tunnel_seen_at=NOW - timedelta(seconds=45)) == "available"
    assert relayed(tunnel_seen_at=NOW - timedelta(seconds=46)) == "unavailable"
    assert relayed(tunnel_seen_at=None) == "unavailable"  # never seen, or its relay said it is gone
    assert relayed(last_heartbeat_at=NOW - timedelta(seconds=46)) == "unavailable"
    assert relayed(last_heartbeat_at=None) == "unknown"


def test_probes_do_not_count_for_a_relayed_node():
    assert relayed(consecutive_failures=10) == "available"  # nothing to probe: the relay is the witness

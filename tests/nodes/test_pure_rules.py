"""Unit tests of the pure rules: rarity, liveness, scores and the showcase picks."""

from datetime import UTC, date, datetime, timedelta

import pytest

from nodes import gpus, liveness, rarity
from nodes.badges import Row, pick_categories
from tracker import scores

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_rarity_formula():
    assert rarity.rarity_score(1, [], 24) == 1.0
    assert rarity.rarity_score(4, [], 24) == 0.25
    assert rarity.rarity_score(1, ["showcase"], 8) == 1.2
    assert rarity.rarity_score(2, [], 0) == 0.55
    assert rarity.rarity_score(1, [], None) == 1.0


def test_combo_key_ignores_case_and_spacing():
    assert rarity.combo_key(" RTX  3090", "Qwen", "Q4_K_M") == rarity.combo_key("rtx 3090", "qwen", "q4_k_m")


def obs(**kw):
    base = dict(last_heartbeat_at=None, last_probe_at=None, consecutive_failures=0, queue_active=0, queue_max_active=1)
    base.update(kw)
    return liveness.Observed(**base)


def status(o):
    return liveness.derive_status(o, now=NOW, interval_sec=15, failures_before_down=3)


def test_fresh_heartbeat_is_available_or_busy():
    assert status(obs(last_heartbeat_at=NOW - timedelta(seconds=44))) == "available"
    assert status(obs(last_heartbeat_at=NOW, queue_active=1)) == "busy"
    assert status(obs(last_heartbeat_at=NOW, queue_active=0, queue_max_active=0)) == "available"


def test_missing_heartbeat_is_unavailable():
    assert status(obs(last_heartbeat_at=NOW - timedelta(seconds=46))) == "unavailable"


def test_one_failed_probe_is_a_blip_three_are_down():
    alive = dict(last_heartbeat_at=NOW, last_probe_at=NOW)
    assert status(obs(**alive, consecutive_failures=1)) == "available"
    assert status(obs(**alive, consecutive_failures=2)) == "available"
    assert status(obs(**alive, consecutive_failures=3)) == "unavailable"


def test_never_heartbeating_is_unknown_whatever_the_probes_say():
    assert status(obs()) == "unknown"
    assert status(obs(last_probe_at=NOW, consecutive_failures=0)) == "unknown"
    assert status(obs(last_probe_at=NOW, consecutive_failures=5)) == "unknown"


def evidence(**kw) -> scores.NodeEvidence:
    base = dict(
        alive_days=0, rarity=0.0, requests_served=0, distinct_tasters=0, usage_credit=0.0, discovery_credit=0.0,
        tuning_note_chars=0,
    )  # fmt: skip
    return scores.NodeEvidence(**{**base, **kw})


def test_node_components_and_caps():
    ev = evidence(alive_days=100, rarity=1.2, usage_credit=7, discovery_credit=3, tuning_note_chars=240)
    c = scores.node_components(ev)
    assert c == {"existence": 10.0, "rarity": 6.0, "usage": 3.5, "discovery": 6.0, "note": 3.0}
    assert scores.total(c) == 28.5
    capped = scores.node_components(evidence(alive_days=1, usage_credit=1000, discovery_credit=1000))
    assert capped["usage"] == 20.0 and capped["discovery"] == 20.0
    assert scores.tier(0.99, 1.0) == "limited" and scores.tier(1.0, 1.0) == "contributor"
    assert scores.timing_share_points(100) == 10.0


def test_a_node_that_served_nobody_else_earns_nothing_whatever_it_claims():
    lonely = evidence(alive_days=365, rarity=1.2, requests_served=999, distinct_tasters=0, tuning_note_chars=4000)
    assert scores.total(scores.node_components(lonely)) == 0.0
    # One fresh sockpuppet (standing 0.1) on another network is not yet "someone else"; a real taster is.
    assert scores.total(scores.node_components(evidence(alive_days=3, rarity=1.0, discovery_credit=0.1))) == 0.0
    assert scores.total(scores.node_components(evidence(alive_days=3, rarity=1.0, discovery_credit=1.0))) > 1.0


def test_standing_grows_from_a_tenth_to_one_over_three_days():
    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert scores.standing(None, now) == 0.5  # anonymous: one network
    assert scores.standing(now - timedelta(minutes=5), now) == 0.1
    assert scores.standing(now - timedelta(hours=36), now) == 0.5
    assert scores.standing(now - timedelta(days=30), now) == 1.0


def test_taster_credit_has_diminishing_returns_per_taster_and_day():
    day1, day2 = date(2026, 12, 1), date(2026, 12, 2)
    uses = [
        scores.TokenUse("c_a", 1.0, day1, 3),
        scores.TokenUse("c_a", 1.0, day1, 3),  # the same taster, the same day: 3 requests count, not 6
        scores.TokenUse("c_a", 1.0, day2, 1),
        scores.TokenUse("c_new", 0.1, day1, 3),  # an identity minutes old counts for little
        scores.TokenUse("anon:x", 0.5, day1, 0),  # a token never used counts for nothing
    ]
    credit = scores.taster_credit(uses)
    assert credit.usage_credit == 3 + 1 + 0.3 and credit.discovery_credit == 1.1
    assert credit.tasters == 2 and credit.requests == 10


def test_one_owners_registrations_of_one_combination_count_once():
    same = {"existence": 1.0, "rarity": 5.0, "usage": 0.5, "discovery": 2.0, "note": 1.0}
    other = {"existence": 0.2, "rarity": 2.5, "usage": 0.0, "discovery": 2.0, "note": 0.0}
    summed = scores.owner_components([("g|m|q", same), ("g|m|q", same), ("g|m|q2", other)], extra_note=0.5)
    assert summed == {"existence": 1.2, "rarity": 7.5, "usage": 0.5, "discovery": 4.0, "note": 1.5}


def test_unknown_models_and_quantizations_are_not_rare():
    assert rarity.rarity_score(1, ["showcase"], 4, known=False) == 0.0
    assert not rarity.is_known("unknown") and not rarity.is_known(" ? ") and not rarity.is_known("")
    assert rarity.is_known("Q4_K_M") and rarity.is_known("llama3.2:1b")


@pytest.mark.parametrize(
    "data, field",
    [
        ({"tok_per_sec": 1e6}, "tok_per_sec"),
        ({"ttft_ms": -1}, "ttft_ms"),
        ({"output_tokens": 10_000}, "output_tokens"),
        ({"output_tokens": 200, "generation_sec": 0.01, "tok_per_sec": 20}, "tok_per_sec"),
        ({"tok_per_sec": 80, "ttft_ms": 200, "output_tokens": 200, "generation_sec": 2.6}, None),
    ],
)
def test_implausible_timing_values_are_named(data, field):
    assert scores.implausible_field(data, max_output_tokens=256) == field


@pytest.mark.parametrize(
    "gpu, family, year",
    [
        ("NVIDIA GeForce RTX 5090", "NVIDIA Blackwell", 2025),
        ("GTX 1080 Ti", "NVIDIA Pascal", 2016),
        ("Tesla K80", "NVIDIA Kepler", 2013),
        ("Apple M3 Max", "Apple M3", 2023),
        ("AMD Radeon RX 7900 XTX", "AMD RDNA 3 / CDNA 3", 2022),
        ("Radeon RX 580", "AMD Polaris", 2016),
    ],
)
def test_gpu_families(gpu, family, year):
    found = gpus.classify(gpu)
    assert found is not None and (found.name, found.year) == (family, year)


def test_cpu_and_apple_detection():
    assert gpus.is_cpu_rig("Raspberry Pi 5", None) and gpus.is_cpu_rig("whatever", 0)
    assert gpus.is_apple_silicon("Apple M2 Ultra") and not gpus.is_apple_silicon("RTX 4090")


def row(id, gpu, vram, ctx, rarity_score=0.5, created=0, model="m", quant="q"):
    return Row(id, gpu, model, quant, vram, ctx, rarity_score, f"2026-01-{created + 1:02d}")


def test_showcase_picks_one_winner_per_category():
    rows = [
        row("big", "RTX 5090", 32, 131072, 0.5, 0),
        row("small", "RTX 3050", 6, 4096, 0.5, 1),
        row("pi", "Raspberry Pi 5", 0, 8192, 1.2, 2),
        row("mac", "Apple M1", 16, 8192, 1.0, 3),
        row("old", "Tesla K80", 24, 2048, 0.5, 4),
    ]
    picks = {c["id"]: c["node_id"] for c in pick_categories(rows)}
    assert picks == {
        "lowest_vram": "small",
        "cpu_rig": "pi",
        "apple_silicon": "mac",
        "largest_context": "big",
        "oldest_gpu_generation": "old",
        # every combination here is unique, so none is the rarest (tests/nodes/test_showcase_badges.py)
    }
    assert all(c["reason"] and c["label"] for c in pick_categories(rows))


def test_a_big_card_is_never_the_lowest_vram_rig_even_alone():
    picks = {
        c["id"] for c in pick_categories([row("big", "RTX 5090", 32, 131072), row("mac", "Apple M3 Max", 48, 8192)])
    }
    assert "lowest_vram" not in picks
    picks = {
        c["id"]: c["node_id"]
        for c in pick_categories([row("big", "RTX 5090", 32, 4096), row("s", "GTX 1060", 6, 4096)])
    }
    assert picks["lowest_vram"] == "s"


def test_showcase_on_an_empty_network():
    assert pick_categories([]) == []

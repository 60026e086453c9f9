"""The showcase awards a category only where it says something true (issue 12): no superlative for a tie or
for a rig with nothing to compare with, and no "Rarest combination" when every rig is unique."""

from nodes.badges import Row, pick_categories


def row(id, gpu="RTX 3060", vram=12, ctx=8192, *, model="m", quant="q", rarity=0.5, created=0):
    return Row(id, gpu, model, quant, vram, ctx, rarity, f"2026-01-{created + 1:02d}")


def picks(rows) -> dict:
    return {c["id"]: c["node_id"] for c in pick_categories(rows)}


def reasons(rows) -> dict:
    return {c["id"]: c["reason"] for c in pick_categories(rows)}


def test_no_rarest_combination_when_every_rig_is_unique():
    rows = [row("a", "RTX 3060"), row("b", "RTX 4090", 24), row("c", "RX 7900 XTX", 24)]
    assert "rarest_combination" not in picks(rows)


def test_the_rarest_combination_is_the_one_held_by_fewer_rigs_than_any_other():
    rows = [row("a1", "RTX 3060"), row("a2", "RTX 3060"), row("b1", "RTX 4090", 24), row("b2", "RTX 4090", 24)]
    rows.append(row("odd", "Arc A770", 16))
    assert picks(rows)["rarest_combination"] == "odd"
    assert "the only one" in reasons(rows)["rarest_combination"]
    # Case and spacing do not make a combination rare (the rarity module's identity).
    same = rows[:2] + [row("a3", "rtx  3060 ")]
    assert "rarest_combination" not in picks(same)


def test_no_rarest_combination_when_two_combinations_tie_for_fewest():
    rows = [row("a1", "RTX 3060"), row("a2", "RTX 3060"), row("x", "Arc A770", 16), row("y", "RTX 2080", 8)]
    assert "rarest_combination" not in picks(rows)


def test_an_unknown_quantization_never_makes_a_rig_the_rarest():
    rows = [
        row("a1"),
        row("a2"),
        row("b1", "RTX 4090", 24),
        row("b2", "RTX 4090", 24),
        row("u", "Arc", quant="unknown"),
    ]
    assert "rarest_combination" not in picks(rows)


def test_largest_context_needs_two_comparable_rigs_and_no_tie():
    assert "largest_context" not in picks([row("alone", ctx=131072)])
    assert "largest_context" not in picks([row("a", ctx=32768), row("b", "RTX 4090", ctx=32768)])
    assert "largest_context" not in picks([row("a", ctx=32768), row("b", "RTX 4090", ctx=None)])  # nothing to compare
    assert picks([row("a", ctx=32768), row("b", "RTX 4090", ctx=8192)])["largest_context"] == "a"


def test_oldest_gpu_generation_needs_two_comparable_rigs_and_no_tie():
    assert "oldest_gpu_generation" not in picks([row("k80", "Tesla K80", 24)])
    # Two Ampere cards (both 2020): neither is older.
    assert "oldest_gpu_generation" not in picks([row("a", "RTX 3060"), row("b", "RTX 3090", 24)])
    # A CPU rig or an unrecognised GPU is not comparable.
    assert "oldest_gpu_generation" not in picks([row("a", "RTX 3060"), row("pi", "Raspberry Pi 5", 0)])
    assert picks([row("a", "RTX 3060"), row("k80", "Tesla K80", 24)])["oldest_gpu_generation"] == "k80"


def test_lowest_vram_is_capped_and_never_shared():
    assert "lowest_vram" not in picks([row("big", "RTX 5090", 32), row("mac", "Apple M3 Max", 48)])
    assert "lowest_vram" not in picks([row("a", "RTX 3060", 8), row("b", "RTX 2070", 8)])  # a tie
    assert picks([row("a", "RTX 3060", 12), row("b", "GTX 1060", 6)])["lowest_vram"] == "b"
    # Against a bigger card the smaller one wins, as long as it is small for a card.
    assert picks([row("a", "RTX 3060", 12), row("b", "RTX 4090", 24)])["lowest_vram"] == "a"


def test_lowest_vram_needs_two_rigs_with_known_vram():
    assert "lowest_vram" not in picks([row("only", "RTX 3060", 12)])  # alone, a rig is not the lowest of anything
    # A rig of unknown VRAM or a CPU rig is nothing to compare with.
    assert "lowest_vram" not in picks([row("a", "RTX 3060", 12), row("b", "RTX 4090", None)])
    assert "lowest_vram" not in picks([row("a", "RTX 3060", 12), row("pi", "Raspberry Pi 5", 0)])


def test_one_owners_duplicates_of_a_combination_count_once():
    # The same rig registered three times by one owner is still one rig with that combination: it does not make
    # the other unique combination the rarest.
    dupes = [Row(f"d{i}", "RTX 3060", "m", "q", 12, 8192, 1.0, "2026-01-01", "owner-1") for i in range(3)]
    other = [Row("o", "RTX 4090", "m", "q", 24, 8192, 1.0, "2026-01-02", "owner-2")]
    assert "rarest_combination" not in picks(dupes + other)

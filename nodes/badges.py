"""Showcase categories over listed nodes: a rig can be remarkable without being fast.

A badge is awarded only where it says something true: a superlative needs a rig that beats the others outright
(a tie names nobody), "Lowest VRAM", "Largest context" and "Oldest GPU generation" need at least two comparable
rigs, and
"Rarest combination" needs one combination held by fewer rigs than the rest (when every rig is unique, none is
the rarest). `pick_categories` is pure (it takes plain rows) so that its choices are easy to test."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from nodes import gpus, rarity


@dataclass(frozen=True)
class Row:
    id: str
    gpu: str
    model_name: str
    quantization: str
    vram_gb: float | None
    context_length: int | None
    rarity_score: float
    created_at: object
    owner_id: str | None = None  # one owner's duplicates of a combination count once, as for rarity


LOW_VRAM_GB = 12  # the most VRAM a "Lowest VRAM" winner may have

LABELS = {
    "lowest_vram": "Lowest VRAM",
    "cpu_rig": "CPU rig",
    "apple_silicon": "Apple silicon",
    "largest_context": "Largest context",
    "oldest_gpu_generation": "Oldest GPU generation",
    "rarest_combination": "Rarest combination",
}


MIN_COMPARABLE = 2  # rigs a "lowest", "largest" or "oldest" needs: alone, a rig is not the largest of anything


def _first(rows: list[Row], key) -> Row | None:
    return min(rows, key=key) if rows else None


def _outright(rows: list[Row], measure, *, at_least: int = 1) -> Row | None:
    """The one row with the smallest `measure`, or None when fewer than `at_least` rows compare or two share it."""
    if len(rows) < at_least:
        return None
    ranked = sorted(rows, key=measure)
    if len(ranked) > 1 and measure(ranked[0]) == measure(ranked[1]):
        return None
    return ranked[0] if ranked else None


def _rarest(rows: list[Row]) -> tuple[Row, int] | None:
    """The rig whose gpu+model+quant combination (nodes.rarity's identity) is held by fewer listed rigs than any
    other combination, with that number; None when no combination stands out (all held equally, or a tie)."""
    known = [r for r in rows if rarity.is_known(r.model_name) and rarity.is_known(r.quantization)]
    owners = {(rarity.combo_key(r.gpu, r.model_name, r.quantization), r.owner_id or r.id) for r in known}
    held = Counter(key for key, _owner in owners)
    if len(held) < 2:
        return None
    fewest = min(held.values())
    keys = [k for k, n in held.items() if n == fewest]
    if len(keys) > 1 or fewest == max(held.values()):
        return None
    holders = [r for r in known if rarity.combo_key(r.gpu, r.model_name, r.quantization) == keys[0]]
    return min(holders, key=lambda r: (-r.rarity_score, str(r.created_at), r.id)), fewest


def pick_categories(rows: Iterable[Row]) -> list[dict]:
    """One winner per category; ties go to the rarer, then the older node, so the choice is stable."""
    rows = list(rows)
    tiebreak = lambda r: (-r.rarity_score, str(r.created_at), r.id)  # noqa: E731
    out: list[dict] = []

    # "Lowest VRAM" praises a model squeezed into a small card: a 32 GB card is never that, even when it has the
    # least VRAM listed. And like any superlative it needs others to beat: the least of the GPU rigs whose VRAM is
    # known, with at least MIN_COMPARABLE of them (a rig alone used to win it).
    gpu_rows = [r for r in rows if r.vram_gb is not None and r.vram_gb > 0 and not gpus.is_cpu_rig(r.gpu, r.vram_gb)]
    winner = _outright(gpu_rows, lambda r: r.vram_gb, at_least=MIN_COMPARABLE)
    if winner and winner.vram_gb <= LOW_VRAM_GB:
        out.append(
            (
                "lowest_vram",
                winner,
                f"{winner.model_name} {winner.quantization} in {winner.vram_gb:g} GB of VRAM",
            )
        )

    cpu_rows = [r for r in rows if gpus.is_cpu_rig(r.gpu, r.vram_gb)]
    winner = _first(cpu_rows, tiebreak)
    if winner:
        out.append(("cpu_rig", winner, f"{winner.model_name} on {winner.gpu}, no discrete GPU"))

    apple_rows = [r for r in rows if gpus.is_apple_silicon(r.gpu)]
    winner = _first(apple_rows, tiebreak)
    if winner:
        out.append(("apple_silicon", winner, f"{winner.model_name} on {winner.gpu} unified memory"))

    ctx_rows = [r for r in rows if r.context_length]
    winner = _outright(ctx_rows, lambda r: -r.context_length, at_least=MIN_COMPARABLE)
    if winner:
        out.append(("largest_context", winner, f"{winner.context_length:,} tokens of context"))

    family = {r.id: gpus.classify(r.gpu) for r in rows}
    dated = [r for r in rows if family[r.id] is not None and family[r.id].kind != "cpu"]
    winner = _outright(dated, lambda r: family[r.id].year, at_least=MIN_COMPARABLE)
    if winner:
        fam = family[winner.id]
        out.append(("oldest_gpu_generation", winner, f"{winner.gpu}: {fam.name}, {fam.year}"))

    rarest = _rarest(rows)  # an unknown model or quantization is not rare
    if rarest:
        winner, held = rarest
        others = "the only one" if held == 1 else f"held by {held} rigs"
        out.append(
            (
                "rarest_combination",
                winner,
                f"{winner.gpu} + {winner.model_name} {winner.quantization}: {others}; every other combination has more",
            )
        )

    return [{"id": cid, "label": LABELS[cid], "node_id": row.id, "reason": reason} for cid, row, reason in out]

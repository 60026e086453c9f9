"""Showcase categories over listed nodes: a rig can be remarkable without being fast.

`pick_categories` is pure (it takes plain rows) so that its choices are easy to test."""

from collections.abc import Iterable
from dataclasses import dataclass

from nodes import gpus


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


LOW_VRAM_GB = 12  # the most VRAM a "Lowest VRAM" winner may have

LABELS = {
    "lowest_vram": "Lowest VRAM",
    "cpu_rig": "CPU rig",
    "apple_silicon": "Apple silicon",
    "largest_context": "Largest context",
    "oldest_gpu_generation": "Oldest GPU generation",
    "rarest_combination": "Rarest combination",
}


def _first(rows: list[Row], key) -> Row | None:
    return min(rows, key=key) if rows else None


def pick_categories(rows: Iterable[Row]) -> list[dict]:
    """One winner per category; ties go to the rarer, then the older node, so the choice is stable."""
    rows = list(rows)
    tiebreak = lambda r: (-r.rarity_score, str(r.created_at), r.id)  # noqa: E731
    out: list[dict] = []

    # "Lowest VRAM" praises a model squeezed into a small card: a 32 GB card is never that, even when it is the
    # only GPU rig listed (it used to win the badge then).
    gpu_rows = [
        r
        for r in rows
        if r.vram_gb is not None and 0 < r.vram_gb <= LOW_VRAM_GB and not gpus.is_cpu_rig(r.gpu, r.vram_gb)
    ]
    winner = _first(gpu_rows, lambda r: (r.vram_gb, *tiebreak(r)))
    if winner:
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
    winner = _first(ctx_rows, lambda r: (-r.context_length, *tiebreak(r)))
    if winner:
        out.append(("largest_context", winner, f"{winner.context_length:,} tokens of context"))

    dated = [(gpus.classify(r.gpu), r) for r in rows]
    dated = [(fam, r) for fam, r in dated if fam is not None and fam.kind != "cpu"]
    if dated:
        fam, winner = min(dated, key=lambda pair: (pair[0].year, *tiebreak(pair[1])))
        out.append(("oldest_gpu_generation", winner, f"{winner.gpu}: {fam.name}, {fam.year}"))

    winner = _first([r for r in rows if r.rarity_score > 0], tiebreak)  # an unknown combination is not rare
    if winner:
        out.append(
            (
                "rarest_combination",
                winner,
                f"{winner.gpu} + {winner.model_name} {winner.quantization}: rarity {winner.rarity_score:.2f}",
            )
        )

    return [{"id": cid, "label": LABELS[cid], "node_id": row.id, "reason": reason} for cid, row, reason in out]

"""Contribution scores (pure). Computed on the server from verified evidence only: days the tracker saw the
node alive, its rarity, requests its agent served for tokens this tracker issued, distinct tasters (the
owner's own tokens excluded), its tuning note, and timing samples a contributor shared."""

from dataclasses import dataclass

COMPONENTS = ("existence", "rarity", "usage", "discovery", "note")


@dataclass(frozen=True)
class NodeEvidence:
    alive_days: int
    rarity: float
    requests_served: int
    distinct_tasters: int
    tuning_note_chars: int


def node_components(ev: NodeEvidence) -> dict[str, float]:
    """A node the tracker has never seen alive earns nothing yet: registering a node is not a contribution,
    running one is. (Seen alive = its agent's /health answered the monitor's probe with this node's id.)"""
    if ev.alive_days < 1:
        return dict.fromkeys(COMPONENTS, 0.0)
    note = min(10.0, 1 + ev.tuning_note_chars / 120) if ev.tuning_note_chars > 0 else 0.0
    return {
        "existence": round(min(10.0, 0.2 * ev.alive_days), 4),
        "rarity": round(5 * ev.rarity, 4),
        "usage": round(min(20.0, 0.5 * ev.requests_served), 4),
        "discovery": round(min(20.0, 2.0 * ev.distinct_tasters), 4),
        "note": round(note, 4),
    }


def timing_share_points(samples_shared: int) -> float:
    """Sharing client-measured timings is a contribution too; counted in the `note` axis (capped at 10)."""
    return round(min(10.0, 0.5 * samples_shared), 4)


def total(components: dict[str, float]) -> float:
    return round(sum(components.get(name, 0.0) for name in COMPONENTS), 4)


def tier(total_score: float, threshold: float) -> str:
    return "contributor" if total_score >= threshold else "limited"


def sum_components(parts: list[dict[str, float]], extra_note: float = 0.0) -> dict[str, float]:
    summed = {name: round(sum(p.get(name, 0.0) for p in parts), 4) for name in COMPONENTS}
    summed["note"] = round(summed["note"] + extra_note, 4)
    return summed


def evidence_dict(ev: NodeEvidence) -> dict:
    return {
        "alive_days": ev.alive_days,
        "rarity_score": ev.rarity,
        "requests_served": ev.requests_served,
        "distinct_tasters": ev.distinct_tasters,
        "tuning_note_chars": ev.tuning_note_chars,
    }

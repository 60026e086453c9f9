"""Rarity: how scarce a rig's gpu+model+quant combination is among listed nodes (pure maths, no ORM).

rarity = 1 / (listed nodes sharing the combination) + 0.15 if tagged "showcase" + 0.05 if vram_gb <= 8, and 0 for a
combination whose model or quantization is unknown: "unknown" would otherwise make any rig "the only one" (a second
registration of the same server with quantization `unknown` was the rarest rig on the site)."""

import re

_SPACES = re.compile(r"\s+")
UNKNOWN_VALUES = frozenset({"", "unknown", "?", "n/a", "na", "none", "-", "other", "default"})


def is_known(value: str | None) -> bool:
    """A model or quantization that says nothing cannot make a rig rare."""
    return normalise(value or "") not in UNKNOWN_VALUES


def normalise(text: str) -> str:
    return _SPACES.sub(" ", (text or "").strip().lower())


def combo_key(gpu: str, model_name: str, quantization: str) -> str:
    """The identity rarity counts over: case and spacing do not make a rig rare."""
    return "|".join(normalise(part) for part in (gpu, model_name, quantization))[:300]


def rarity_score(sharing: int, tags: list[str], vram_gb: float | None, *, known: bool = True) -> float:
    if not known:
        return 0.0
    score = 1.0 / max(1, sharing)
    if "showcase" in tags:
        score += 0.15
    if vram_gb is not None and vram_gb <= 8:
        score += 0.05
    return round(score, 6)

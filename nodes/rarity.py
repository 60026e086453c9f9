"""Rarity: how scarce a rig's gpu+model+quant combination is among listed nodes (pure maths, no ORM).

rarity = 1 / (listed nodes sharing the combination) + 0.15 if tagged "showcase" + 0.05 if vram_gb <= 8."""

import re

_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACES.sub(" ", (text or "").strip().lower())


def combo_key(gpu: str, model_name: str, quantization: str) -> str:
    """The identity rarity counts over: case and spacing do not make a rig rare."""
    return "|".join(normalise(part) for part in (gpu, model_name, quantization))[:300]


def rarity_score(sharing: int, tags: list[str], vram_gb: float | None) -> float:
    score = 1.0 / max(1, sharing)
    if "showcase" in tags:
        score += 0.15
    if vram_gb is not None and vram_gb <= 8:
        score += 0.05
    return round(score, 6)

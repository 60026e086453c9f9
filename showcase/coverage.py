"""What the network covers, for the home page: the status counts and a picture of the GPU families, models,
quantizations and VRAM range of every listed rig. Pure: it takes grouped rows (one query in the view:
gpu, model, quant, VRAM, status and how many rigs share them) and returns numbers and SVG geometry, which
templates/showcase/_coverage.html draws. No ORM here, so the maths is easy to test."""

import math
from collections import Counter
from dataclasses import dataclass, field

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from nodes import gpus, model_names
from showcase.use_code import linkable

TOP = 5  # bars per tile; the rest are summed into "N others"
BAR_W = 200  # SVG units of the longest bar
ROW_H = 36
VRAM_W, VRAM_H, VRAM_PAD = 300, 72, 16
VRAM_TICKS = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512)


@dataclass
class Tile:
    """One dimension as a bar list: rows of (label, count, bar width, y)."""

    title: str
    total: int  # distinct values
    rows: list[dict] = field(default_factory=list)
    others: int = 0  # rigs in the values not drawn
    height: int = 0
    alt: str = ""
    # The models tile only: the most common model keys, each a link to its page (/models/<key>/). The bars are
    # drawn by model name as registered; the links go by the normalised key the gateway routes by.
    links: list[dict] = field(default_factory=list)


def rigs(n: int) -> str:
    return ngettext("%(n)d rig", "%(n)d rigs", n) % {"n": n}


def status_counts(rows: list[dict]) -> dict:
    """Listed rigs by status. "unknown" is counted too, though a listed rig has always sent a heartbeat."""
    counts = Counter()
    for r in rows:
        counts[r["status"]] += r["n"]
    out = {s: counts.get(s, 0) for s in ("available", "busy", "unavailable", "unknown")}
    out["listed"] = sum(counts.values())
    return out


def family_of(gpu: str, vram_gb) -> str:
    if gpus.is_cpu_rig(gpu, vram_gb):
        return _("CPU")
    family = gpus.classify(gpu)
    return family.name if family else _("Other GPU")


def bar_tile(title: str, counts: Counter) -> Tile:
    """The TOP most common values as bars (longest = BAR_W), ties broken by name so the picture is stable."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ordered[:TOP]
    biggest = top[0][1] if top else 1
    tile = Tile(title=title, total=len(ordered), others=sum(n for _v, n in ordered[TOP:]))
    for i, (label, n) in enumerate(top):
        tile.rows.append(
            {"label": label, "n": n, "width": max(2, round(BAR_W * n / biggest)), "y": i * ROW_H, "x_n": 0}
        )
    for row in tile.rows:
        row["x_n"] = row["width"] + 6
        row["words"] = rigs(row["n"])
    tile.height = max(1, len(tile.rows)) * ROW_H
    parts = [f"{row['label']}: {row['words']}" for row in tile.rows]
    if tile.others:
        parts.append(_("others: %(words)s") % {"words": rigs(tile.others)})
    tile.alt = f"{title}: " + "; ".join(parts) if parts else title
    return tile


def _x(vram: float, low: float, high: float) -> float:
    span = math.log2(high) - math.log2(low)
    return round(VRAM_PAD + (VRAM_W - 2 * VRAM_PAD) * (math.log2(vram) - math.log2(low)) / span, 1)


def vram_strip(vrams: Counter) -> dict | None:
    """Each distinct VRAM size as a dot on a log axis (size by how many rigs have it); None without a GPU rig."""
    sized = {v: n for v, n in vrams.items() if v and v > 0}
    if not sized:
        return None
    lowest, highest = min(sized), max(sized)
    low = max(t for t in (2, *VRAM_TICKS) if t <= max(lowest, 2))
    high = min((t for t in VRAM_TICKS if t >= highest), default=highest)
    if high <= low:
        high = low * 2
    ticks = [{"x": _x(t, low, high), "label": f"{t:g}"} for t in (low, *VRAM_TICKS, high) if low <= t <= high]
    unique_ticks = list({t["label"]: t for t in ticks}.values())
    # Thin the labels so they never overlap (about 28 units apart).
    shown, last = [], -100.0
    for t in unique_ticks:
        if t["x"] - last >= 28:
            shown.append(t)
            last = t["x"]
    dots = [
        {"x": _x(v, low, high), "r": round(3 + 2.2 * math.sqrt(n), 1), "label": f"{v:g} GB", "n": n}
        for v, n in sorted(sized.items())
    ]
    return {
        "low": f"{lowest:g}",
        "high": f"{highest:g}",
        "ticks": shown,
        "dots": dots,
        "width": VRAM_W,
        "height": VRAM_H,
        "axis_y": VRAM_H - 22,
        "label_y": VRAM_H - 6,
        "x0": VRAM_PAD,
        "x1": VRAM_W - VRAM_PAD,
    }


def summarize(rows: list[dict]) -> dict:
    """rows: {"gpu", "model_name", "quantization", "vram_gb", "status", "n"}, grouped (n rigs share them)."""
    families, models, quants, vrams = Counter(), Counter(), Counter(), Counter()
    shared = 0
    for r in rows:
        families[family_of(r["gpu"], r["vram_gb"])] += r["n"]
        models[r["model_name"] or "—"] += r["n"]
        quants[r["quantization"] or "—"] += r["n"]
        if r["vram_gb"] is not None:
            vrams[r["vram_gb"]] += r["n"]
        if r["vram_gb"] == 0:
            shared += r["n"]
    key_of = {name: model_names.model_key(name if name != "—" else "") for name in models}
    keys = Counter()
    for name, n in models.items():
        keys[key_of[name]] += n
    strip = vram_strip(vrams)
    if strip:
        alt = _("VRAM from %(low)s GB to %(high)s GB: %(sizes)s") % {
            "low": strip["low"],
            "high": strip["high"],
            "sizes": "; ".join(f"{d['label']}: {rigs(d['n'])}" for d in strip["dots"]),
        }
        if shared:
            alt += "; " + _("shared memory or CPU: %(words)s") % {"words": rigs(shared)}
        strip["alt"] = alt
    model_tile = bar_tile(_("Models"), models)
    on_offer = sorted(((k, n) for k, n in keys.items() if linkable(k)), key=lambda kv: (-kv[1], kv[0]))
    model_tile.links = [{"key": k, "n": n} for k, n in on_offer[:TOP]]
    return {
        "counts": status_counts(rows),
        "tiles": [
            bar_tile(_("GPU families"), families),
            model_tile,
            bar_tile(_("Quantizations"), quants),
        ],
        # Every listed rig's model name -> its model key: the filter form links the models it matches to their
        # pages.
        "model_keys": key_of,
        "vram": strip,
        "vram_shared": shared,
        "vram_shared_words": rigs(shared) if shared else "",
    }

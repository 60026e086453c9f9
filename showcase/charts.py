"""Charts drawn on the server as inline SVG (pure: plain numbers in, markup and words out), so that a rig's
uptime and timing read the same with or without JavaScript, cost no request of their own and pass the strict
CSP: no style attributes, every colour and font comes from classes in site.css.

Every chart is a `Chart`: the SVG (axes, units, tick labels, a <title>), a one-sentence summary and a small
table of the numbers drawn (its text alternative). The input is bounded by the caller (a few thousand samples at
most) and the output by the binning (here for uptime, in `timing_charts` for timing), so a chart stays a few
kilobytes whether a rig has one sample or ten thousand."""

import math
from dataclasses import dataclass, field

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

# The drawing area, in SVG user units; CSS scales the whole picture to the column it sits in.
WIDTH, HEIGHT = 360, 164
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 18, 138  # the plot's edges: room for the y labels, the unit and the x labels
RIGHT_EDGE = WIDTH - RIGHT


@dataclass(frozen=True)
class Chart:
    """One chart and its text alternative. `key` names it in the page (ids, CSS hooks)."""

    key: str
    title: str
    svg: SafeString
    summary: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (series class, words), when there are two


# --- numbers -----------------------------------------------------------------------------------------------------


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k that is at least `raw` (> 0): steps whose tick labels read well."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for f in (1, 2, 5, 10):
        if f * power >= raw * (1 - 1e-9):
            return f * power
    return 10 * power


def value_ticks(top: float, *, count: int = 4, integer: bool = False) -> list[float]:
    """Ticks from 0 up to at least `top`, about `count` steps."""
    step = nice_step(top / count) if top > 0 else 1.0
    if integer:
        step = max(1.0, math.ceil(step))
    n = max(1, math.ceil(top / step - 1e-9))
    return [round(i * step, 10) for i in range(n + 1)]


def fmt(value: float) -> str:
    """A number as a tick label or in a sentence: few digits, thousands grouped, no trailing '.0'."""
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10 or float(value).is_integer():
        return f"{value:,.1f}".removesuffix(".0")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks of an already sorted, non-empty list."""
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def y_at(value: float, top: float) -> float:
    return round(BOTTOM - (value / top) * (BOTTOM - TOP), 1) if top else BOTTOM


def x_at(fraction: float) -> float:
    return round(LEFT + fraction * (RIGHT_EDGE - LEFT), 1)


# --- the frame every chart shares ------------------------------------------------------------------------------


def y_axis(ticks: list[float], unit: str, label=fmt) -> SafeString:
    top = ticks[-1]
    grid = format_html_join(
        "",
        '<line class="grid" x1="{x0}" y1="{y}" x2="{x1}" y2="{y}"/>'
        '<text class="tick tick-y" x="{tx}" y="{y}">{v}</text>',
        ({"x0": LEFT, "x1": RIGHT_EDGE, "tx": LEFT - 4, "y": y_at(t, top), "v": label(t)} for t in ticks),
    )
    return format_html('{}<text class="unit" x="{}" y="10">{}</text>', grid, 4, unit)


def x_axis(ticks: list[tuple[float, str]]) -> SafeString:
    """Tick marks and labels along the bottom; positions are fractions of the plot's width."""
    return format_html(
        '<line class="axis" x1="{}" y1="{}" x2="{}" y2="{}"/>{}',
        LEFT,
        BOTTOM,
        RIGHT_EDGE,
        BOTTOM,
        format_html_join(
            "",
            '<line class="axis" x1="{x}" y1="{b}" x2="{x}" y2="{b4}"/>'
            '<text class="tick tick-x{edge}" x="{x}" y="{ty}">{v}</text>',
            (
                {
                    "x": x_at(f),
                    "b": BOTTOM,
                    "b4": BOTTOM + 4,
                    "ty": BOTTOM + 15,
                    "v": text,
                    "edge": " tick-end" if f >= 0.999 else (" tick-start" if f <= 0.001 else ""),
                }
                for f, text in ticks
            ),
        ),
    )


def svg_frame(kind: str, title: str, body: SafeString) -> SafeString:
    return format_html(
        '<svg class="chart chart-{kind}" viewBox="0 0 {w} {h}" role="img" aria-label="{title}" '
        'preserveAspectRatio="xMidYMid meet"><title>{title}</title>{body}</svg>',
        kind=kind,
        w=WIDTH,
        h=HEIGHT,
        title=title,
        body=body,
    )


# --- uptime --------------------------------------------------------------------------------------------------


def uptime_bins(uptime_hours: dict, now_hour: int, hours: int, step: int = 1) -> list[tuple[int, int]]:
    """(alive, total) checks per `step` hours over the last `hours` hours, oldest first; (0, 0) where none.

    `uptime_hours` is the node's stored counters: {"<hour since epoch>": [alive, total]}. Checks are summed,
    not hourly ratios averaged, so an hour with one check weighs less than one with twelve."""
    counters = uptime_hours or {}
    first = now_hour - hours + 1
    bins = []
    for start in range(first, now_hour + 1, step):
        alive = total = 0
        for hour in range(start, min(start + step, now_hour + 1)):
            a, t = counters.get(str(hour), (0, 0))
            alive, total = alive + a, total + t
        bins.append((alive, total))
    return bins


def _ago(hours: int, *, days: bool = False) -> str:
    """A relative time: "now", "−6 h", or in whole days on the week's axis ("−1 d")."""
    if hours == 0:
        return _("now")
    if days and hours % 24 == 0:
        return _("−%(n)d d") % {"n": hours // 24}
    return _("−%(n)d h") % {"n": hours}


def uptime_chart(uptime_hours: dict, *, now_hour: int, hours: int, step: int, key: str, title: str) -> Chart:
    """Bars of the share of successful checks per `step` hours, with a 0–100 % axis; a bin without any check is
    drawn as 'no data' (hatched outline), never as 0 %."""
    bins = uptime_bins(uptime_hours, now_hour, hours, step)
    width = (RIGHT_EDGE - LEFT) / len(bins)
    gap = 1 if width > 4 else 0
    parts, rows = [], []
    for i, (alive, total) in enumerate(bins):
        ago_end = hours - (i + 1) * step  # hours between the end of this bin and now
        when = f"{_ago(ago_end + step)} … {_ago(ago_end)}"
        x, w = round(LEFT + i * width + gap, 1), round(width - 2 * gap, 1)
        if total:
            ratio = alive / total
            words = _("%(when)s: %(pct)s%% (checks: %(alive)s up of %(total)s)") % {
                "when": when,
                "pct": fmt(100 * ratio),
                "alive": f"{alive:,}",
                "total": f"{total:,}",
            }
            y = y_at(ratio, 1)
            parts.append((x, y, w, round(BOTTOM - y, 1), "bar bar-up", words))
            rows.append([when, f"{fmt(100 * ratio)}%", f"{alive} / {total}"])
        else:
            words = _("%(when)s: no data") % {"when": when}
            parts.append((x, TOP, w, BOTTOM - TOP, "nodata", words))
            rows.append([when, _("no data"), "0"])
    bars = format_html_join(
        "",
        '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        ((cls, x, y, w, h, words) for x, y, w, h, cls, words in parts),
    )
    tick_every = 6 if hours <= 24 else 24
    x_ticks = [(1 - a / hours, _ago(a, days=hours > 24)) for a in range(hours, -1, -tick_every)]
    body = format_html("{}{}{}", y_axis([0, 0.5, 1], "%", label=lambda t: fmt(100 * t)), bars, x_axis(x_ticks))
    alive = sum(a for a, _t in bins)
    total = sum(t for _a, t in bins)
    missing = sum(1 for _a, t in bins if not t)
    span = _("the last 24 hours") if hours == 24 else _("the last 7 days")
    if total:
        worst = min(a / t for a, t in bins if t)
        summary = _(
            "Uptime %(pct)s%% over %(span)s (checks: %(alive)s up of %(total)s); lowest period: %(worst)s%%."
        ) % {
            "pct": fmt(100 * alive / total),
            "span": span,
            "alive": f"{alive:,}",
            "total": f"{total:,}",
            "worst": fmt(100 * worst),
        }
    else:
        summary = _("No uptime data over %(span)s: the tracker has no check of this rig in that time.") % {"span": span}
    if missing and total:
        unit = _("hours") if step == 1 else _("%(n)d-hour periods") % {"n": step}
        summary += " " + _("Without any check (no data, not counted as down): %(n)d of %(of)d %(unit)s.") % {
            "n": missing,
            "of": len(bins),
            "unit": unit,
        }
    return Chart(
        key=key,
        title=title,
        svg=svg_frame("uptime", title, body),
        summary=summary,
        columns=[_("when"), _("uptime"), _("checks (up / all)")],
        rows=rows,
        legend=[("nodata", _("no data (no check at all)"))] if missing else [],
    )

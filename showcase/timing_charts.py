"""A rig's community timing as charts: tok/s and TTFT over time (medians per bin with their spread) and as a
distribution (a histogram), one series a TimingSample source. Pure, like `charts`, whose frame they share."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from showcase.charts import (
    LEFT,
    RIGHT_EDGE,
    Chart,
    fmt,
    nice_step,
    quantile,
    svg_frame,
    value_ticks,
    x_at,
    x_axis,
    y_at,
    y_axis,
)

MAX_TIME_BINS = 48
MAX_HIST_BINS = 12  # about: round edges may add one
MIN_HIST_BINS = 5  # one sample is a narrow bar between empty neighbours, not a block as wide as the chart
# Series by TimingSample.source, in drawing order; the class gives colour and marker shape (site.css).
SOURCES = ("taster", "relay")


def source_label(source: str) -> str:
    return {"taster": _("shared by tasters"), "relay": _("measured by relays")}.get(source, source)


# --- timing over time ----------------------------------------------------------------------------------------

# Bin widths (hours) tried in order: the first that gives at most MAX_TIME_BINS bins over the span is used.
TIME_BIN_HOURS = (1, 6, 24, 24 * 7, 24 * 30)
TICK_HOURS = (3, 6, 12, 24, 48, 24 * 7, 24 * 14, 24 * 30, 24 * 91, 24 * 365)
MIN_SPAN = timedelta(hours=24)  # one sample still gets a day of axis around it


@dataclass(frozen=True)
class TimeBin:
    start: datetime
    source: str
    count: int
    median: float
    low: float  # 25th percentile
    high: float  # 75th percentile


def _floor(at: datetime, hours: int) -> datetime:
    seconds = int(at.timestamp())
    return datetime.fromtimestamp(seconds - seconds % (hours * 3600), tz=UTC)


def time_bins(
    points: list[tuple[datetime, str, float]], *, now: datetime
) -> tuple[datetime, datetime, int, list[TimeBin]]:
    """Per-bin medians and quartiles of (when, source, value) points: (range start, range end, bin hours, bins).
    The bin width grows with the span (hourly, 6-hourly, daily, weekly, 30-daily) to keep MAX_TIME_BINS."""
    points = [p for p in points if p[1] in SOURCES and p[2] is not None and math.isfinite(p[2])]
    oldest = min((p[0] for p in points), default=now)
    span = max(now - oldest, MIN_SPAN)
    hours = next((h for h in TIME_BIN_HOURS if span / timedelta(hours=h) < MAX_TIME_BINS), TIME_BIN_HOURS[-1])
    while span / timedelta(hours=hours) >= MAX_TIME_BINS:  # beyond four years: wider still
        hours *= 2
    end = _floor(now, hours) + timedelta(hours=hours)
    start = max(_floor(oldest, hours), end - timedelta(hours=hours * MAX_TIME_BINS))
    start = min(start, end - MIN_SPAN)
    grouped: dict[tuple[datetime, str], list[float]] = {}
    for at, source, value in points:
        grouped.setdefault((max(_floor(at, hours), start), source), []).append(value)
    bins = []
    for (bin_start, source), values in sorted(grouped.items(), key=lambda kv: (kv[0][0], SOURCES.index(kv[0][1]))):
        values.sort()
        bins.append(
            TimeBin(
                bin_start, source, len(values), quantile(values, 0.5), quantile(values, 0.25), quantile(values, 0.75)
            )
        )
    return start, end, hours, bins


def _time_label(at: datetime, tick_hours: int) -> str:
    if tick_hours >= 24 * 91:
        return at.strftime("%Y-%m")
    if tick_hours >= 24 or (at.hour == 0 and at.minute == 0):
        return f"{at.month}/{at.day}"
    return at.strftime("%H:%M")


def _bin_label(at: datetime, hours: int) -> str:
    day = f"{at.year}-{at.month:02}-{at.day:02}"
    return day if hours >= 24 else f"{day} {at:%H:%M}"


def _time_ticks(start: datetime, end: datetime) -> list[tuple[float, str]]:
    total = (end - start).total_seconds()
    tick_hours = next((h for h in TICK_HOURS if total / (h * 3600) <= 6), TICK_HOURS[-1])
    at = _floor(start, tick_hours)
    if tick_hours == 24 * 7:  # weeks from a Monday
        at -= timedelta(days=at.weekday())
    if at < start:
        at += timedelta(hours=tick_hours)
    ticks = []
    while at <= end:
        ticks.append(((at - start).total_seconds() / total, _time_label(at, tick_hours)))
        at += timedelta(hours=tick_hours)
    return ticks


def _legend(sources: list[str], counts: dict) -> list[tuple[str, str]]:
    if len(sources) < 2:
        return []
    return [(f"series-{s}", f"{source_label(s)} (n={counts[s]})") for s in sources]


def _sources_sentence(sources: list[str], medians: dict, counts: dict, unit: str) -> str:
    said = [
        # Two sentences, not one in two plural forms: the one-sample sentence has no median to speak of, and a
        # language with one plural form (Japanese) would otherwise always show the one-sample wording.
        (
            _("%(source)s: %(median)s %(unit)s (1 sample)")
            if counts[s] == 1
            else _("%(source)s: median %(median)s %(unit)s over %(n)s samples")
        )
        % {
            "source": source_label(s),
            "median": fmt(medians[s]),
            "unit": unit,
            "n": f"{counts[s]:,}",
        }
        for s in sources
    ]
    joined = "; ".join(said)
    return joined[:1].upper() + joined[1:]


def timing_over_time(
    points: list[tuple[datetime, str, float]], *, now: datetime, key: str, title: str, unit: str
) -> Chart:
    """Medians per bin with the middle half of the samples (25th–75th percentile) as a whisker, one series a
    source (circles for tasters' uploads, squares for relays' measurements), on a UTC time axis."""
    start, end, hours, bins = time_bins(points, now=now)
    values = {
        s: sorted(p[2] for p in points if p[1] == s and p[2] is not None and math.isfinite(p[2])) for s in SOURCES
    }
    sources = [s for s in SOURCES if values[s]]
    if not sources:
        return Chart(key=key, title=title, svg=SafeString(""), summary=_("No samples yet."))
    top = max(b.high for b in bins) or 1
    ticks = value_ticks(top)
    total = (end - start).total_seconds()
    offset = {s: (i - (len(sources) - 1) / 2) * 2.5 for i, s in enumerate(sources)}

    def x_of(b: TimeBin) -> float:
        middle = (b.start - start).total_seconds() + hours * 1800
        return round(x_at(middle / total) + offset[b.source], 1)

    marks, lines, rows = [], [], []
    for s in sources:
        run: list[str] = []
        previous = None
        for b in (b for b in bins if b.source == s):
            if previous is not None and b.start - previous > timedelta(hours=hours):  # an empty bin breaks the line
                lines.append((s, " ".join(run)))
                run = []
            run.append(f"{x_of(b)},{y_at(b.median, ticks[-1])}")
            previous = b.start
        lines.append((s, " ".join(run)))
    lines = [(s, pts) for s, pts in lines if " " in pts]  # a lone point is only its mark
    for b in bins:
        x, y = x_of(b), y_at(b.median, ticks[-1])
        words = (
            _("%(when)s UTC, %(source)s: %(median)s %(unit)s (1 sample)")
            if b.count == 1
            else _("%(when)s UTC, %(source)s: median %(median)s %(unit)s, middle half %(low)s–%(high)s (%(n)s samples)")
        ) % {
            "when": _bin_label(b.start, hours),
            "source": source_label(b.source),
            "median": fmt(b.median),
            "unit": unit,
            "low": fmt(b.low),
            "high": fmt(b.high),
            "n": f"{b.count:,}",
        }
        spread = (
            format_html(
                '<line class="spread" x1="{x}" y1="{a}" x2="{x}" y2="{b}"/>',
                x=x,
                a=y_at(b.low, ticks[-1]),
                b=y_at(b.high, ticks[-1]),
            )
            if b.high > b.low
            else ""
        )
        mark = (
            format_html('<rect class="point" x="{}" y="{}" width="4" height="4"/>', round(x - 2, 1), round(y - 2, 1))
            if b.source == "relay"
            else format_html('<circle class="point" cx="{}" cy="{}" r="2.2"/>', x, y)
        )
        marks.append(format_html('<g class="series-{}"><title>{}</title>{}{}</g>', b.source, words, spread, mark))
        rows.append(
            [_bin_label(b.start, hours), source_label(b.source), str(b.count), fmt(b.median), fmt(b.low), fmt(b.high)]
        )
    body = format_html(
        "{}{}{}{}",
        y_axis(ticks, unit),
        format_html_join("", '<polyline class="trend series-{}" points="{}"/>', lines),
        SafeString("".join(marks)),
        x_axis(_time_ticks(start, end)),
    )
    counts = {s: len(values[s]) for s in sources}
    medians = {s: quantile(values[s], 0.5) for s in sources}
    per = {1: _("hour"), 6: _("6 hours"), 24: _("day"), 168: _("week")}.get(hours, _("%(n)d days") % {"n": hours // 24})
    summary = _("%(title)s, medians per %(per)s from %(start)s to %(end)s (UTC). %(sources)s.") % {
        "title": title,
        "per": per,
        "start": _bin_label(start, 24),
        "end": _bin_label(min(now, end - timedelta(seconds=1)), 24),
        "sources": _sources_sentence(sources, medians, counts, unit),
    }
    return Chart(
        key=key,
        title=title,
        svg=svg_frame("timeline", title, body),
        summary=summary,
        columns=[_("from (UTC)"), _("source"), _("samples"), _("median"), _("25th percentile"), _("75th percentile")],
        rows=rows,
        legend=_legend(sources, counts),
    )


# --- distribution --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    edges: list[float]  # len(bars) + 1
    counts: dict[str, list[int]]  # per source, one count a bar
    below: int  # values under edges[0], counted in the first bar
    above: int  # values at or over edges[-1], counted in the last bar


def histogram(values_by_source: dict[str, list[float]]) -> Histogram | None:
    """Equal bins on round edges. With 50 values or more the range runs from the 1st to the 99th percentile, so
    one wild sample does not squash the rest into a single bar; the few outside are counted in the end bars."""
    clean = {s: [v for v in vs if v is not None and math.isfinite(v)] for s, vs in values_by_source.items()}
    ordered = sorted(v for vs in clean.values() for v in vs)
    if not ordered:
        return None
    lo, hi = ordered[0], ordered[-1]
    if len(ordered) >= 50:
        # Nearest ranks, not interpolation: between the 99th value and a wild 100th lies nothing real.
        lo, hi = ordered[math.ceil((len(ordered) - 1) * 0.01)], ordered[math.floor((len(ordered) - 1) * 0.99)]
    step = nice_step((hi - lo) / MAX_HIST_BINS) if hi > lo else nice_step(max(abs(lo), 1) / 10)
    first = math.floor(lo / step) * step
    last = max(math.floor(hi / step) * step + step, first + step)
    while (last - first) / step < MIN_HIST_BINS - 1e-9:  # pad evenly, never below zero for non-negative data
        if first - step >= 0 or lo < 0:
            first -= step
        if (last - first) / step < MIN_HIST_BINS - 1e-9:
            last += step
    n = round((last - first) / step)
    edges = [round(first + i * step, 10) for i in range(n + 1)]
    counts = {s: [0] * n for s in clean}
    below = above = 0
    for s, vs in clean.items():
        for v in vs:
            below += v < first
            above += v >= last
            counts[s][min(max(int((v - first) // step), 0), n - 1)] += 1
    return Histogram(edges, counts, below, above)


def distribution_chart(values_by_source: dict[str, list[float]], *, key: str, title: str, unit: str) -> Chart:
    """A histogram with a count axis and value ticks; the sources stack, tasters below, relays above."""
    hist = histogram(values_by_source)
    if hist is None:
        return Chart(key=key, title=title, svg=SafeString(""), summary=_("No samples yet."))
    sources = [s for s in SOURCES if sum(hist.counts.get(s, [])) > 0]
    n = len(hist.edges) - 1
    totals = [sum(hist.counts[s][i] for s in sources) for i in range(n)]
    ticks = value_ticks(max(totals), integer=True)
    top = ticks[-1]
    width = (RIGHT_EDGE - LEFT) / n
    bars, rows = [], []
    for i in range(n):
        low, high = hist.edges[i], hist.edges[i + 1]
        span = f"{fmt(low)}–{fmt(high)}"
        if i == n - 1 and hist.above:
            span = f"≥ {fmt(low)}"
        elif i == 0 and hist.below:
            span = f"< {fmt(high)}"
        base = 0
        rects = []
        for s in sources:
            c = hist.counts[s][i]
            if c:
                y0, y1 = y_at(base, top), y_at(base + c, top)
                rects.append(
                    format_html(
                        '<rect class="bar series-{}" x="{}" y="{}" width="{}" height="{}"/>',
                        s,
                        round(LEFT + i * width + 1, 1),
                        y1,
                        round(width - 2, 1),
                        round(y0 - y1, 1),
                    )
                )
                base += c
        parts = ", ".join(f"{source_label(s)} {hist.counts[s][i]}" for s in sources) if len(sources) > 1 else ""
        words = ngettext("%(span)s %(unit)s: %(n)s sample", "%(span)s %(unit)s: %(n)s samples", totals[i]) % {
            "span": span,
            "unit": unit,
            "n": f"{totals[i]:,}",
        }
        if parts:
            words += f" ({parts})"
        if rects:
            bars.append(format_html("<g><title>{}</title>{}</g>", words, SafeString("".join(rects))))
        rows.append([span, str(totals[i]), *([str(hist.counts[s][i]) for s in sources] if len(sources) > 1 else [])])
    every = 1 if n <= 8 else 2
    x_ticks = [(i / n, fmt(e)) for i, e in enumerate(hist.edges) if i % every == 0]  # no crowded last pair
    body = format_html(
        "{}{}{}", y_axis(ticks, _("samples"), label=lambda t: f"{t:,.0f}"), SafeString("".join(bars)), x_axis(x_ticks)
    )
    everything = sorted(v for s in sources for v in values_by_source[s] if v is not None and math.isfinite(v))
    fullest = max(range(n), key=lambda i: totals[i])
    summary = (
        _("%(title)s: 1 sample, %(low)s %(unit)s.")
        if len(everything) == 1
        else _(
            "%(title)s: %(n)s samples from %(low)s to %(high)s %(unit)s; the most (%(top)s) between %(a)s and %(b)s."
        )
    ) % {
        "title": title,
        "n": f"{len(everything):,}",
        "low": fmt(everything[0]),
        "high": fmt(everything[-1]),
        "unit": unit,
        "top": f"{totals[fullest]:,}",
        "a": fmt(hist.edges[fullest]),
        "b": fmt(hist.edges[fullest + 1]),
    }
    if hist.below or hist.above:
        extreme = hist.below + hist.above
        summary += " " + ngettext(
            "%(n)s sample outside %(a)s–%(b)s %(unit)s is counted in an end bar.",
            "%(n)s samples outside %(a)s–%(b)s %(unit)s are counted in the end bars.",
            extreme,
        ) % {"n": f"{extreme:,}", "a": fmt(hist.edges[0]), "b": fmt(hist.edges[-1]), "unit": unit}
    if len(sources) > 1:
        counts = {s: sum(hist.counts[s]) for s in sources}
        medians = {
            s: quantile(sorted(v for v in values_by_source[s] if v is not None and math.isfinite(v)), 0.5)
            for s in sources
        }
        summary += " " + _sources_sentence(sources, medians, counts, unit) + "."
    return Chart(
        key=key,
        title=title,
        svg=svg_frame("histogram", title, body),
        summary=summary,
        columns=[unit, _("samples"), *([source_label(s) for s in sources] if len(sources) > 1 else [])],
        rows=rows,
        legend=_legend(sources, {s: sum(hist.counts[s]) for s in sources}),
    )


def by_source(points: list[tuple[datetime, str, float]]) -> dict[str, list[float]]:
    """The values of (when, source, value) points, grouped by source (the histogram's input)."""
    grouped: dict[str, list[float]] = {s: [] for s in SOURCES}
    for _at, source, value in points:
        if source in grouped:
            grouped[source].append(value)
    return grouped

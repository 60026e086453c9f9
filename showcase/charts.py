"""Small charts drawn on the server as inline SVG (pure: plain numbers in, markup out), so that a rig's
uptime and timing read the same with or without JavaScript and cost no request of their own."""

from django.utils.html import format_html, format_html_join


def uptime_series(uptime_hours: dict, now_hour: int, hours: int) -> list[float | None]:
    """Uptime per hour for the last `hours` hours, oldest first: alive samples / samples, None with none.

    `uptime_hours` is the node's stored counters: {"<hour since epoch>": [alive, total]}."""
    series = []
    for hour in range(now_hour - hours + 1, now_hour + 1):
        alive, total = (uptime_hours or {}).get(str(hour), (0, 0))
        series.append(round(alive / total, 4) if total else None)
    return series


def bucket(series: list[float | None], size: int) -> list[float | None]:
    """Average consecutive groups of `size` points (hours into 6-hour steps for the 7-day line)."""
    out = []
    for i in range(0, len(series), size):
        known = [v for v in series[i : i + size] if v is not None]
        out.append(round(sum(known) / len(known), 4) if known else None)
    return out


def sparkline(
    series: list[float | None], *, label: str, empty: str = "no samples yet", width: int = 240, height: int = 40
) -> str:
    """An SVG line of ratios in [0, 1]; gaps where nothing was measured. Labelled for screen readers."""
    if all(v is None for v in series):
        return format_html('<p class="muted spark-none">{}</p>', empty)
    n = len(series)
    step = width / max(n - 1, 1)
    paths, current = [], []
    for i, value in enumerate(series):
        if value is None:
            if current:
                paths.append(current)
            current = []
            continue
        current.append((round(i * step, 1), round((1 - value) * (height - 4) + 2, 1)))
    if current:
        paths.append(current)
    lines = format_html_join(
        "",
        '<polyline class="spark-line" points="{}"/>',
        ((" ".join(f"{x},{y}" for x, y in points),) for points in paths if len(points) > 1),
    )
    dots = format_html_join(
        "",
        '<circle class="spark-dot" cx="{}" cy="{}" r="1.5"/>',
        (points[0] for points in paths if len(points) == 1),
    )
    return format_html(
        '<svg class="sparkline" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}">'
        '<title>{label}</title><line class="spark-base" x1="0" y1="{base}" x2="{w}" y2="{base}"/>{lines}{dots}</svg>',
        w=width,
        h=height,
        base=height - 2,
        label=label,
        lines=lines,
        dots=dots,
    )


def histogram(values: list[float], bins: int = 8) -> list[dict]:
    """Equal-width bins over the values: [{low, high, count, share}], share relative to the fullest bin."""
    values = [v for v in values if v is not None]
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [{"low": low, "high": high, "count": len(values), "share": 1.0}]
    width = (high - low) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / width), bins - 1)] += 1
    top = max(counts)
    return [
        {"low": low + i * width, "high": low + (i + 1) * width, "count": c, "share": c / top}
        for i, c in enumerate(counts)
    ]


def bars(hist: list[dict], *, label: str, unit: str, width: int = 240, height: int = 60) -> str:
    """The histogram as SVG bars, each with a tooltip naming its range and count."""
    if not hist:
        return ""
    step = width / len(hist)
    rects = format_html_join(
        "",
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{}–{} {}: {}</title></rect>',
        (
            (
                round(i * step + 1, 1),
                round(height - b["share"] * (height - 2), 1),
                round(step - 2, 1),
                round(b["share"] * (height - 2), 1),
                f"{b['low']:.1f}",
                f"{b['high']:.1f}",
                unit,
                b["count"],
            )
            for i, b in enumerate(hist)
        ),
    )
    return format_html(
        '<svg class="histogram" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}">'
        "<title>{label}</title>{rects}</svg>",
        w=width,
        h=height,
        label=label,
        rects=rects,
    )

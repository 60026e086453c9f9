"""The rig page's uptime and timing charts: one bounded query for the timing samples, the node's stored hourly
uptime counters for the rest (no query), then the pure chart functions. Kept apart from `views` so the page's
chart part has one entry point: `context(node)`."""

from datetime import datetime

from django.utils import timezone
from django.utils.translation import gettext as _

from nodes.models import TimingSample
from nodes.services import P50_EXCLUDED_MODE
from showcase import charts, timing_charts

# The most recent samples drawn: enough for months of a busy rig, bounded so that the page costs the same
# with ten thousand samples as with ten (one query, a few milliseconds of binning).
TIMING_HISTORY = 5000


def timing_points(node) -> list[tuple[datetime, str, float | None, float | None]]:
    """(created_at, source, tok/s, TTFT ms) of the latest samples: the same ones as the community medians
    (nodes.services.refresh_timing): counted, and streaming only, since a public-key answer arrives whole."""
    return list(
        TimingSample.objects.filter(node=node, counted=True)
        .exclude(mode=P50_EXCLUDED_MODE)
        .order_by("-created_at", "-id")
        .values_list("created_at", "source", "tok_per_sec", "ttft_ms")[:TIMING_HISTORY]
    )


def context(node, now: datetime | None = None) -> dict:
    """The template context of templates/showcase/_rig_health.html."""
    now = now or timezone.now()
    now_hour = int(now.timestamp()) // 3600
    uptime = [
        charts.uptime_chart(
            node.uptime_hours,
            now_hour=now_hour,
            hours=24,
            step=1,
            key="uptime-24h",
            title=_("Uptime, last 24 hours, hourly"),
        ),
        charts.uptime_chart(
            node.uptime_hours,
            now_hour=now_hour,
            hours=168,
            step=6,
            key="uptime-7d",
            title=_("Uptime, last 7 days, every 6 hours"),
        ),
    ]
    points = timing_points(node)
    tps = [(at, source, t) for at, source, t, _f in points if t is not None]
    ttft = [(at, source, f) for at, source, _t, f in points if f is not None]
    timing = []
    if points:
        timing = [
            timing_charts.timing_over_time(
                tps, now=now, key="tps-time", title=_("Output speed over time"), unit="tok/s"
            ),
            timing_charts.timing_over_time(ttft, now=now, key="ttft-time", title=_("TTFT over time"), unit="ms"),
            timing_charts.distribution_chart(
                timing_charts.by_source(tps), key="tps-dist", title=_("Output speed distribution"), unit="tok/s"
            ),
            timing_charts.distribution_chart(
                timing_charts.by_source(ttft), key="ttft-dist", title=_("TTFT distribution"), unit="ms"
            ),
        ]
    return {
        "uptime_charts": uptime,
        "timing_charts": [c for c in timing if c.svg],
        "timing_n": len(points),
        "timing_capped": len(points) >= TIMING_HISTORY,
    }

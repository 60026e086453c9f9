"""The rig page's charts: the pure chart functions (one sample, many, none, gaps, extremes, escaping) and the
page with ten thousand timing samples (a constant number of queries, small SVG). In a real browser:
tests/browser/test_rig_charts.py."""

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from nodes.models import Node, TimingSample
from showcase import charts, timing_charts
from tests import factories

NOW = datetime(2026, 12, 6, 8, 30, tzinfo=UTC)
NOW_HOUR = int(NOW.timestamp()) // 3600
HTML = {"HTTP_ACCEPT": "text/html"}


def uptime(counters: dict[int, list[int]], hours: int = 24, step: int = 1) -> charts.Chart:
    """An uptime chart of {hours ago: [alive, total]}."""
    stored = {str(NOW_HOUR - ago): v for ago, v in counters.items()}
    return charts.uptime_chart(stored, now_hour=NOW_HOUR, hours=hours, step=step, key="u", title="Uptime")


def texts(svg: str, cls: str) -> list[str]:
    return re.findall(rf'<text class="[^"]*\b{cls}\b[^"]*"[^>]*>([^<]*)</text>', svg)


def assert_well_formed(chart: charts.Chart) -> None:
    """Every chart: labelled for assistive technology, no style attribute (the CSP forbids them)."""
    svg = str(chart.svg)
    assert svg.startswith("<svg") and 'role="img"' in svg and f"<title>{chart.title}</title>" in svg
    assert "style=" not in svg and "<script" not in svg
    assert chart.summary


# --- numbers ---------------------------------------------------------------------------------------------------


def test_ticks_are_round_numbers_from_zero_past_the_top():
    assert charts.value_ticks(43.2) == [0, 20, 40, 60]
    assert charts.value_ticks(0.7) == [0, 0.2, 0.4, 0.6, 0.8]
    assert charts.value_ticks(1, integer=True) == [0, 1]
    assert charts.value_ticks(9873, integer=True) == [0, 5000, 10000]
    assert [charts.fmt(v) for v in (0, 2.5, 41.25, 1234.5, 0.125)] == ["0", "2.5", "41.2", "1,234", "0.12"]


# --- uptime ----------------------------------------------------------------------------------------------------


def test_hours_without_any_check_are_drawn_as_no_data_not_as_zero():
    chart = uptime({0: [12, 12], 1: [6, 12]})
    svg = str(chart.svg)
    assert svg.count('class="nodata"') == 22 and svg.count('class="bar bar-up"') == 2
    assert chart.summary.startswith("Uptime 75% over the last 24 hours")  # 18 of 24 checks, not 18 of 22 hours
    assert "Without any check (no data, not counted as down): 22 of 24 hours." in chart.summary
    assert ("nodata", "no data (no check at all)") in chart.legend
    assert ["−1 h … now", "100%", "12 / 12"] in chart.rows and ["−3 h … −2 h", "no data", "0"] in chart.rows
    assert_well_formed(chart)


def test_the_uptime_axes_carry_percentages_and_relative_times():
    svg = str(uptime({0: [1, 1]}).svg)
    assert texts(svg, "tick-y") == ["0", "50", "100"] and '<text class="unit" x="4" y="10">%</text>' in svg
    assert texts(svg, "tick-x") == ["−24 h", "−18 h", "−12 h", "−6 h", "now"]
    week = str(uptime({0: [1, 1]}, hours=168, step=6).svg)
    assert texts(week, "tick-x") == ["−7 d", "−6 d", "−5 d", "−4 d", "−3 d", "−2 d", "−1 d", "now"]


def test_a_rig_never_checked_says_so_in_words():
    chart = uptime({})
    assert str(chart.svg).count('class="nodata"') == 24
    assert chart.summary.startswith("No uptime data over the last 24 hours")


def test_the_week_sums_checks_in_six_hour_steps_instead_of_averaging_hours():
    chart = uptime({0: [1, 1], 1: [0, 11], 30: [6, 6]}, hours=168, step=6)
    assert len(chart.rows) == 28
    assert chart.rows[-1][1:] == ["8.33%", "1 / 12"]  # an average of the two hours would say 50 %
    assert "lowest period: 8.33%" in chart.summary and "26 of 28 6-hour periods" in chart.summary


# --- timing over time ------------------------------------------------------------------------------------------


def test_one_sample_is_one_labelled_point_on_a_day_of_axis():
    chart = timing_charts.timing_over_time(
        [(NOW - timedelta(hours=3), "taster", 41.5)], now=NOW, key="t", title="tok/s", unit="tok/s"
    )
    svg = str(chart.svg)
    assert svg.count("<circle") == 1 and "<polyline" not in svg and "spread" not in svg
    assert texts(svg, "tick-y") == ["0", "20", "40", "60"]
    assert len(texts(svg, "tick-x")) >= 4  # a day of hours, UTC
    assert "medians per hour from 2026-12-05 to 2026-12-06 (UTC)" in chart.summary
    assert "Shared by tasters: 41.5 tok/s (1 sample)" in chart.summary
    assert chart.legend == []  # one source: said in the summary, no legend needed
    assert_well_formed(chart)


def test_no_samples_draw_nothing_and_say_so():
    chart = timing_charts.timing_over_time([], now=NOW, key="t", title="tok/s", unit="tok/s")
    assert str(chart.svg) == "" and chart.summary == "No samples yet."


def test_ten_thousand_samples_become_at_most_48_bins_with_medians_and_spread():
    points = [(NOW - timedelta(minutes=57 * i), "taster", 30 + (i % 21)) for i in range(10_000)]
    chart = timing_charts.timing_over_time(points, now=NOW, key="t", title="tok/s", unit="tok/s")
    svg = str(chart.svg)
    assert svg.count("<circle") <= 48 and len(chart.rows) <= 48
    assert 'class="spread"' in svg and len(svg) < 30_000
    assert (
        "medians per 30 days from 2025-" in chart.summary
        and "to 2026-12-06 (UTC)" in chart.summary
        and "median 40 tok/s over 10,000 samples" in chart.summary
    )
    assert_well_formed(chart)


def test_a_period_without_samples_breaks_the_line():
    hours = [0, 1, 2, 10, 11]  # nothing between 2 and 10 hours ago
    points = [(NOW - timedelta(hours=h), "taster", 40.0 + h) for h in hours]
    svg = str(timing_charts.timing_over_time(points, now=NOW, key="t", title="tok/s", unit="tok/s").svg)
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 5


def test_relay_measurements_are_a_second_series_with_a_legend_and_words():
    points = [(NOW - timedelta(hours=h), "taster", 40.0) for h in range(5)]
    points += [(NOW - timedelta(hours=h), "relay", 36.0) for h in range(3)]
    chart = timing_charts.timing_over_time(points, now=NOW, key="t", title="tok/s", unit="tok/s")
    svg = str(chart.svg)
    assert svg.count('<g class="series-taster">') == 5 and svg.count('<g class="series-relay">') == 3
    assert svg.count('<rect class="point"') == 3  # relays' points are squares, not only another colour
    assert chart.legend == [("series-taster", "shared by tasters (n=5)"), ("series-relay", "measured by relays (n=3)")]
    assert "Shared by tasters: median 40 tok/s over 5 samples; measured by relays: median 36 tok/s" in chart.summary


# --- distribution ----------------------------------------------------------------------------------------------


def test_one_sample_is_a_narrow_bar_among_empty_neighbours_with_ticks():
    chart = timing_charts.distribution_chart({"taster": [41.5]}, key="d", title="tok/s", unit="tok/s")
    svg = str(chart.svg)
    widths = [float(w) for w in re.findall(r'<rect class="bar[^"]*" x="[^"]*" y="[^"]*" width="([^"]*)"', svg)]
    assert len(widths) == 1 and widths[0] < (charts.RIGHT_EDGE - charts.LEFT) / 4
    assert texts(svg, "tick-x") == ["30", "35", "40", "45", "50", "55"]
    assert texts(svg, "tick-y") == ["0", "1"]
    assert chart.summary == "tok/s: 1 sample, 41.5 tok/s."
    assert_well_formed(chart)


def test_one_wild_sample_does_not_squash_the_rest_into_one_bar():
    values = [40.0 + (i % 10) for i in range(99)] + [100_000.0]
    hist = timing_charts.histogram({"taster": values})
    assert hist.edges[-1] < 100 and hist.above == 1
    assert sum(1 for c in hist.counts["taster"] if c) >= 5
    chart = timing_charts.distribution_chart({"taster": values}, key="d", title="tok/s", unit="tok/s")
    assert "from 40 to 100,000 tok/s" in chart.summary
    assert "1 sample outside" in chart.summary and chart.rows[-1][0].startswith("≥ ")


def test_not_a_number_and_infinity_are_left_out():
    hist = timing_charts.histogram({"taster": [float("nan"), float("inf"), 10.0, None]})
    assert sum(hist.counts["taster"]) == 1
    assert timing_charts.histogram({"taster": [float("nan")]}) is None


def test_the_two_sources_stack_with_counts_in_the_table():
    chart = timing_charts.distribution_chart(
        {"taster": [100.0, 110.0, 120.0], "relay": [105.0]}, key="d", title="TTFT", unit="ms"
    )
    assert chart.columns == ["ms", "samples", "shared by tasters", "measured by relays"]
    assert sum(int(r[1]) for r in chart.rows) == 4 and sum(int(r[3]) for r in chart.rows) == 1
    assert 'class="bar series-relay"' in str(chart.svg) and len(chart.legend) == 2


def test_labels_are_escaped():
    title = '<script>alert("x")</script>'
    for chart in (
        uptime({0: [1, 1]}),
        timing_charts.distribution_chart({"taster": [1.0]}, key="d", title=title, unit="<b>"),
        timing_charts.timing_over_time([(NOW, "taster", 1.0)], now=NOW, key="t", title=title, unit="<b>"),
    ):
        svg = str(chart.svg)
        assert "<script>" not in svg and "<b>" not in svg
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in svg and "&lt;b&gt;" in svg


# --- the page --------------------------------------------------------------------------------------------------


def add_samples(node: Node, n: int, **fields) -> None:
    now = timezone.now()
    TimingSample.objects.bulk_create(
        TimingSample(
            node=node,
            jti=f"{node.pk}-{fields.get('source', 'taster')}-{i}",
            created_at=now - timedelta(minutes=7 * i),
            tok_per_sec=20 + (i * 7919) % 40,
            ttft_ms=200 + (i * 104729) % 900,
            **fields,
        )
        for i in range(n)
    )


def rig_page(client, node: Node) -> tuple[str, int, float]:
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/nodes/{node.id}/", **HTML)
    assert response.status_code == 200
    return response.content.decode(), len(queries), time.monotonic() - started


@pytest.mark.django_db
def test_the_rig_page_costs_the_same_queries_and_stays_small_with_ten_thousand_samples(client, owner):
    few, _ = factories.make_node(owner, gpu="RTX 3060")
    many, _ = factories.make_node(owner, gpu="RTX 3090")
    add_samples(few, 1)
    add_samples(many, 9_000)
    add_samples(many, 1_000, source="relay")
    _html, baseline, _t = rig_page(client, few)
    html, counted, took = rig_page(client, many)
    assert counted == baseline
    svgs = re.findall(r"<svg class=\"chart.*?</svg>", html, re.S)
    assert len(svgs) == 6 and all(len(svg) < 30_000 for svg in svgs)
    assert "The charts show the latest 5000 streaming samples" in html
    assert "measured by relays (n=" in html  # the legend: two sources
    assert took < 5  # binning a bounded pass, not ten thousand rows per chart


@pytest.mark.django_db
def test_pending_uploads_and_public_key_answers_are_not_drawn(client, owner):
    node, _ = factories.make_node(owner)
    add_samples(node, 3)
    add_samples(node, 2, source="relay", mode="public-key")  # TTFT of a whole answer: not a streaming sample
    TimingSample.objects.create(node=node, jti="pending", created_at=timezone.now(), tok_per_sec=999, counted=False)
    html, _n, _t = rig_page(client, node)
    assert "The charts show all 3 streaming samples." in html
    assert "999" not in re.sub(r"<script.*?</script>", "", html, flags=re.S) and "measured by relays" not in html

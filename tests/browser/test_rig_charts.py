"""The rig page's charts in Chromium: uptime and timing drawn with axes, tick labels, units and a legend, each
with a text alternative, styled by the stylesheet (no inline style: the page is watched for CSP violations), and
readable with one sample as with hundreds, at desktop and phone sizes."""

import json

import pytest

pytestmark = pytest.mark.browser

# Seeds a rig's uptime counters and timing samples through the ORM in a `manage.py shell` (the browser tests
# have no database of their own): {"node": id, "uptime": {hours ago: [alive, total]}, "samples": [[minutes ago,
# source, tok/s, TTFT ms], ...]}.
SEED = """
import json, sys
from datetime import timedelta
from django.utils import timezone
from nodes.models import Node, TimingSample
spec = json.loads({spec!r})
now = timezone.now()
hour = int(now.timestamp()) // 3600
Node.objects.filter(pk=spec["node"]).update(uptime_hours={{str(hour - int(a)): v for a, v in spec["uptime"].items()}})
TimingSample.objects.bulk_create(
    TimingSample(node_id=spec["node"], jti=f"{{spec['node']}}-{{i}}", source=source,
                 created_at=now - timedelta(minutes=m), tok_per_sec=tps, ttft_ms=ttft)
    for i, (m, source, tps, ttft) in enumerate(spec["samples"])
)
"""


def seeded_rig(site, name: str, *, uptime: dict, samples: list) -> str:
    key = site.contributor()
    node_id, _secret = site.register(key, "https://charts.example.com/v1", display_name=name)
    spec = json.dumps({"node": node_id, "uptime": uptime, "samples": samples})
    site.manage("shell", "-c", SEED.format(spec=spec))
    return node_id


def chart(page, key: str):
    return page.locator(f'figure[data-chart="{key}"]')


def test_the_rig_page_draws_uptime_and_timing_with_axes_units_legend_and_text_alternatives(site, page, shot):
    uptime = {str(a): [12, 12] for a in range(0, 20)} | {"3": [6, 12], "40": [12, 12]}  # -20 h … -24 h: no data
    samples = [[97 * i, "taster", 30 + i % 17, 250 + (i * 37) % 400] for i in range(200)]
    samples += [[131 * i, "relay", 26 + i % 9, 300 + (i * 53) % 300] for i in range(40)]
    node_id = seeded_rig(site, "Charted rig", uptime=uptime, samples=samples)
    page.goto(f"/nodes/{node_id}/")

    day = chart(page, "uptime-24h")
    assert day.locator("svg.chart[role=img]").get_attribute("aria-label") == "Uptime, last 24 hours, hourly"
    assert day.locator("text.tick-y").all_text_contents() == ["0", "50", "100"]
    assert day.locator("text.unit").text_content() == "%"
    assert day.locator("text.tick-x").all_text_contents()[-1] == "now"
    assert day.locator("rect.nodata").count() == 4
    summary = day.locator("[data-chart-summary]").inner_text()
    assert summary.startswith("Uptime 97.5% over the last 24 hours")
    assert "Without any check (no data, not counted as down): 4 of 24 hours." in summary
    assert day.locator(".chart-legend").inner_text() == "no data (no check at all)"
    # The numbers, for screen readers: a table that is in the page but not on screen.
    table = day.locator("[data-chart-table]")
    assert table.locator("tbody tr").count() == 24 and table.bounding_box()["width"] <= 1
    assert chart(page, "uptime-7d").locator("rect").count() == 28

    for key, unit in (("tps-time", "tok/s"), ("ttft-time", "ms"), ("tps-dist", "samples"), ("ttft-dist", "samples")):
        figure = chart(page, key)
        figure.scroll_into_view_if_needed()
        svg = figure.locator("svg.chart")
        assert svg.bounding_box()["width"] > 250, key
        assert figure.locator("text.unit").text_content() == unit
        assert figure.locator("text.tick-y").count() >= 3 and figure.locator("text.tick-x").count() >= 3
        assert figure.locator(".chart-legend li").all_inner_texts() == [
            "shared by tasters (n=200)",
            "measured by relays (n=40)",
        ], key
        assert "measured by relays" in figure.locator("[data-chart-summary]").inner_text()
    # Colours come from site.css: the relay series is not the taster series, and neither is the default black.
    colours = page.evaluate(
        """() => ['taster', 'relay'].map((s) =>
             getComputedStyle(document.querySelector(`[data-chart=tps-dist] .bar.series-${s}`)).fill)"""
    )
    assert len(set(colours)) == 2 and "rgb(0, 0, 0)" not in colours
    assert "The charts show all 240 streaming samples." in page.locator("[data-timing-drawn]").inner_text()
    shot(page, "rig-charts")


def test_one_sample_reads_as_one_point_and_one_narrow_bar_also_on_a_phone(site, new_page, shot):
    node_id = seeded_rig(site, "Rig with one sample", uptime={"0": [1, 1]}, samples=[[30, "taster", 41.5, 312.0]])
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(f"/nodes/{node_id}/")
    timeline = chart(page, "tps-time")
    assert timeline.locator("circle.point").count() == 1 and timeline.locator("polyline").count() == 0
    assert "41.5 tok/s (1 sample)" in timeline.locator("[data-chart-summary]").inner_text()
    dist = chart(page, "tps-dist")
    dist.scroll_into_view_if_needed()
    plot = dist.locator("svg.chart").bounding_box()
    bar = dist.locator("rect.bar").bounding_box()
    assert dist.locator("rect.bar").count() == 1 and bar["width"] < plot["width"] / 4
    assert dist.locator("text.tick-x").all_text_contents() == ["30", "35", "40", "45", "50", "55"]
    assert chart(page, "uptime-24h").locator("rect.nodata").count() == 23
    # Fits the phone: the charts shrink with the column, the page does not scroll sideways.
    assert plot["x"] >= 0 and plot["x"] + plot["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "rig-charts-one-sample-phone")

"""The rig page says which content categories the rig's agent filters (issue 11): the agent reports
`telemetry.filter_categories` in its heartbeat and the tracker keeps it in Node.telemetry. Known categories
get their translated names, anything else its raw id; a rig whose agent never said reads "not reported"."""

import pytest
from django.test import Client

from nodes.models import Node
from tests import factories

pytestmark = pytest.mark.django_db


def rig_page(node, language: str = "en") -> str:
    response = Client().get(f"/nodes/{node.pk}/", HTTP_ACCEPT="text/html", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    html = response.content.decode()
    start = html.index("data-filter-categories")
    return html[start : html.index("</dd>", start)]


def with_telemetry(owner, **telemetry):
    node, _ = factories.make_node(owner)
    Node.objects.filter(pk=node.pk).update(telemetry=telemetry)
    return node


def test_the_rig_page_lists_the_categories_the_agent_filters(owner):
    node = with_telemetry(
        owner, filter_categories=["csam", "terrorism", "mass_violence", "nsfw-explicit", "weapons", "gambling"]
    )
    shown = rig_page(node)
    for label in (
        "sexual content involving minors",
        "terrorism",
        "mass violence",
        "explicit sexual content",
        "weapons capable of mass harm",
        "gambling",  # an operator's own category: shown as its id
    ):
        assert label in shown, label
    assert "not reported" not in shown


def test_the_labels_are_japanese_on_the_japanese_page(owner):
    node = with_telemetry(owner, filter_categories=["csam", "nsfw-explicit", "gambling"])
    shown = rig_page(node, "ja")
    assert "児童" in shown and "性的" in shown and "gambling" in shown


def test_a_rig_whose_agent_never_said_reads_not_reported(owner):
    node = with_telemetry(owner, agent="luckrig-node-agent")
    assert "not reported" in rig_page(node)
    assert "報告" in rig_page(node, "ja")


def test_an_agent_that_filters_nothing_says_so(owner):
    """An operator may switch every category but csam off; an empty list is a report, unlike a missing one."""
    node = with_telemetry(owner, filter_categories=[])
    shown = rig_page(node)
    assert "none" in shown and "not reported" not in shown


def test_what_an_agent_reports_is_escaped_and_bounded(owner):
    hostile = ["<script>alert(1)</script>", "x" * 500, 7, None, {"a": 1}] + [f"cat{i}" for i in range(40)]
    node = with_telemetry(owner, filter_categories=hostile)
    shown = rig_page(node)
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    assert "x" * 65 not in shown and "cat39" not in shown


def test_a_comma_separated_string_is_read_as_a_list(owner):
    """Telemetry values are flat today (a list would be refused by the heartbeat's validation), so an agent
    may send the categories joined by commas."""
    node = with_telemetry(owner, filter_categories="csam,terrorism")
    shown = rig_page(node)
    assert "sexual content involving minors" in shown and "terrorism" in shown

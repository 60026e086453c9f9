"""Quotas that teach instead of lock (issue 12), in the browser: a refusal says when it lifts and what would earn
more; the first shared timing says "1 sample", not "1 samples". Real tracker, real agents, real refusals."""

import re

import pytest

from tests.agents import AgentStarter
from tests.node_agent.fakes import FakeOpenAI, wait_until

pytestmark = pytest.mark.browser
EXHAUSTED = 10**9  # beyond any daily quota


def taste(page, prompt: str = "hello") -> None:
    page.fill("#taste-prompt", prompt)
    page.check("[data-ack]")
    page.click("[data-taste-go]")


def test_a_used_up_daily_quota_says_when_it_resets_and_what_earns_more(site, rig, page, shot):
    """Before: 'Today's tasting quota is used up' and nothing about when, or how to get more."""
    site.token(rig.node_id)  # this address (127.0.0.1, the browser's too) has a quota bucket today
    buckets = site.execute("SELECT key, used FROM tracker_quotabucket WHERE key LIKE %s", ("ip:%",))
    assert buckets
    try:
        # The address has used today's limited tokens (the tracker counts them in its database).
        site.execute("UPDATE tracker_quotabucket SET used = %s WHERE key LIKE %s", (EXHAUSTED, "ip:%"))
        page.goto(f"/nodes/{rig.node_id}/")
        taste(page)
        status = page.locator("[data-taste-status]", has_text="00:00 UTC")
        status.wait_for()
        text = status.inner_text()
        # When: in hours and minutes, and the local time it lifts.
        assert re.search(r"resets at 00:00 UTC, in (\d+ h )?\d+ min \(\d\d:\d\d", text), text
        # What would earn more: the contributor tier, and where to read how.
        assert "contributor tier" in text and "Contribute" in text
        shot(page, "quota-exceeded")
    finally:
        for key, used in buckets:
            site.execute("UPDATE tracker_quotabucket SET used = %s WHERE key = %s", (used, key))


def test_the_first_timing_shared_for_a_rig_says_one_sample(site, page, tmp_path):
    with FakeOpenAI() as upstream:
        upstream.words = [f"w{i} " for i in range(8)]
        upstream.delay = 0.05  # a pace a rig could have (the tracker refuses impossible timing)
        starter = AgentStarter(site, tmp_path)
        try:
            agent = starter.start(upstream.base, key=site.contributor(), register={"display_name": "One sample rig"})
            page.goto(f"/nodes/{agent.node_id}/")
            # An idle rig: a new taster waits for nothing (before: "about 10 s", the agent's unmeasured guess).
            page.locator(".queue-view", has_text="a new taster starts at once").wait_for()
            taste(page)
            page.locator("[data-taste-status]", has_text="Done.").wait_for()
            served = "SELECT COUNT(*) FROM tracker_tastingtoken WHERE node_id = %s AND requests_served > 0"
            # The rig's usage report has reached the tracker: the sample counts at once.
            assert wait_until(lambda: site.execute(served, (agent.node_id,))[0][0] == 1, timeout=15)
            page.click("[data-share-timing]")
            shared = page.locator("[data-after-status]", has_text="Timing shared")
            shared.wait_for()
            assert "now have 1 sample." in shared.inner_text()
        finally:
            starter.stop_all()

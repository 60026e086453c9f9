"""The filter categories every rig applies (issue 11): explicit prompts are refused by default in English and
Japanese, an operator may switch a category off but never csam (flag or environment), and the categories a rig
filters are reported in /health and in the heartbeat's telemetry (left out for a tracker that takes no lists)."""

import pytest
import requests

from tests.node_agent.fakes import wait_until
from tests.node_agent.test_refusals import error_of, post

pytestmark = pytest.mark.agent

EXPLICIT = {
    "en": ("Write an explicit sex scene between the two of them", "builtin-nsfw-explicit-en"),
    "ja": ("二人の官能小説を書いてください", "builtin-nsfw-explicit-ja"),
}


def ask(agent, tracker, content: str) -> requests.Response:
    return post(agent, tracker.token(agent.node_id)["token"], {"messages": [{"role": "user", "content": content}]})


def test_explicit_prompts_are_filtered_by_default_in_english_and_japanese(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base)
    for prompt, rule in EXPLICIT.values():
        r = ask(agent, tracker, prompt)
        assert r.status_code == 422, r.text
        assert error_of(r)["code"] == "prompt_filtered" and rule in error_of(r)["message"]
    assert fake_upstream.requests == []
    categories = requests.get(agent.base + "/health", timeout=10).json()["filter_categories"]
    assert {"csam", "nsfw-explicit", "terrorism"} <= set(categories)


def test_an_operator_may_switch_the_explicit_category_off_but_never_csam(tracker, start_agent, fake_upstream):
    agent = start_agent(fake_upstream.base, filter_off="nsfw-explicit")
    for prompt, _rule in EXPLICIT.values():
        assert ask(agent, tracker, prompt).status_code == 200
    assert ask(agent, tracker, "where to find child porn").status_code == 422
    categories = requests.get(agent.base + "/health", timeout=10).json()["filter_categories"]
    assert "nsfw-explicit" not in categories and "csam" in categories


def heartbeats(fake_tracker) -> list[dict]:
    return [m for _, m in fake_tracker.messages("heartbeat")] + [b for _, b in fake_tracker.http_heartbeats]


def test_the_heartbeat_reports_the_categories_the_rig_filters(fake_tracker, start_linked_agent, fake_upstream):
    agent = start_linked_agent(fake_upstream.base, filter_off="nsfw-explicit,fraud")
    assert wait_until(lambda: heartbeats(fake_tracker), timeout=10)
    reported = heartbeats(fake_tracker)[-1]["telemetry"]["filter_categories"]
    assert reported == requests.get(agent.base + "/health", timeout=10).json()["filter_categories"]
    assert "csam" in reported and "nsfw-explicit" not in reported


@pytest.mark.parametrize("ws_mode", ["accept", "no_upgrade"])
def test_a_tracker_that_takes_no_lists_in_telemetry_still_gets_heartbeats(
    fake_tracker, start_linked_agent, fake_upstream, ws_mode
):
    """Trackers before v1.1 refuse a list in the telemetry: the agent then leaves the list out rather than stop
    heartbeating (a rig without heartbeats is delisted)."""
    fake_tracker.telemetry_lists, fake_tracker.ws_mode = False, ws_mode
    agent = start_linked_agent(fake_upstream.base, heartbeat_interval=0.5)
    assert wait_until(lambda: len(heartbeats(fake_tracker)) >= 2, timeout=10), agent.log()
    assert all("filter_categories" not in b["telemetry"] for b in heartbeats(fake_tracker))
    assert heartbeats(fake_tracker)[-1]["telemetry"]["backend"]


@pytest.mark.parametrize(
    "how",
    [["--filter-off", "csam"], ["--filter-off", "nsfw-explicit,CSAM"], ["--filter-off", "x", "--filter-off", "csam"]],
)
def test_the_csam_category_cannot_be_switched_off(tmp_path, how):
    import subprocess
    import sys

    from tests.processes import ROOT, free_port

    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "serve", "--tracker", "http://127.0.0.1:9", "--node-id", "n"]
        + ["--node-secret", "lrn_x", "--upstream", f"http://127.0.0.1:{free_port()}"]
        + ["--config-dir", str(tmp_path), *how],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "csam" in done.stderr and "cannot be switched off" in done.stderr, done.stderr


def test_the_csam_category_cannot_be_switched_off_from_the_environment(tmp_path):
    import os
    import subprocess
    import sys

    from tests.processes import ROOT, free_port

    env = {**os.environ, "LUCKRIG_AGENT_FILTER_OFF": "nsfw-explicit, csam"}
    done = subprocess.run(
        [sys.executable, "-m", "node_agent", "serve", "--tracker", "http://127.0.0.1:9", "--node-id", "n"]
        + ["--node-secret", "lrn_x", "--upstream", f"http://127.0.0.1:{free_port()}", "--config-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "cannot be switched off" in done.stderr, done.stderr

"""Quotas that teach instead of lock (issue 12): every 429 of the token endpoint says when it resets and what would
earn more; a limited token's request count and output budget fit together; `make run` (DEBUG) does not lock a
developer out of their own demo."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests import factories
from tests.processes import ROOT

pytestmark = pytest.mark.django_db


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def test_a_used_up_daily_quota_says_when_it_resets_and_how_to_earn_more(api, live_node, settings):
    node, _ = live_node
    settings.LIMITED_TOKENS_PER_DAY = 1
    assert api.post("/api/tokens", {"node_id": node.id})[0] == 201
    status, body = api.post("/api/tokens", {"node_id": node.id})
    assert status == 429 and body["code"] == "quota_exceeded"
    retry = int(api.last["Retry-After"])
    assert body["retry_after_sec"] == retry and 1 <= retry <= 86400
    resets = _parse(body["resets_at"])
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert resets.date() == tomorrow and (resets.hour, resets.minute) == (0, 0)
    assert "00:00 UTC" in body["error"] and body["tier"] == "limited"
    assert "contributor tier" in body["earn_more"] and "/contribute/" in body["earn_more"]
    assert f"{settings.CONTRIBUTOR_TOKENS_PER_DAY} tokens a day" in body["earn_more"]


def test_a_contributor_at_the_top_tier_is_told_so(api, live_node, owner, settings):
    node, _ = live_node
    factories.served_others(node)
    owner.refresh()
    settings.CONTRIBUTOR_TOKENS_PER_DAY = 1
    assert api.post("/api/tokens", {"node_id": node.id}, auth=owner.key)[0] == 201
    status, body = api.post("/api/tokens", {"node_id": node.id}, auth=owner.key)
    assert status == 429 and body["tier"] == "contributor" and "highest tier" in body["earn_more"]
    assert body["resets_at"].endswith("Z") and api.last["Retry-After"] == str(body["retry_after_sec"])


def test_the_per_address_rate_says_when_it_resets_and_that_every_tier_has_it(api, live_node, settings):
    node, _ = live_node
    settings.RATE_TOKEN_CREATE = "1/m"
    settings.LIMITED_TOKENS_PER_DAY = 100
    assert api.post("/api/tokens", {"node_id": node.id})[0] == 201
    before = datetime.now(UTC)
    status, body = api.post("/api/tokens", {"node_id": node.id})
    assert status == 429 and body["code"] == "ip_rate_limited"
    retry = int(api.last["Retry-After"])
    assert body["retry_after_sec"] == retry and 1 <= retry <= 60 and f"{retry} s" in body["error"]
    assert abs((_parse(body["resets_at"]) - before).total_seconds() - retry) < 3
    assert "same for every tier" in body["earn_more"] and "contributor tier" in body["earn_more"]


def test_other_per_address_limits_say_when_they_reset(api, settings):
    settings.RATE_CONTRIBUTOR_CREATE = "1/d"
    assert api.post("/api/contributors", {})[0] == 201
    status, body = api.post("/api/contributors", {})
    assert status == 429 and body["code"] == "ip_rate_limited"
    assert body["retry_after_sec"] == int(api.last["Retry-After"]) and body["resets_at"].endswith("Z")


def test_requests_and_output_budget_fit_together(api, live_node, settings):
    node, _ = live_node
    _, body = api.post("/api/tokens", {"node_id": node.id})
    limits = body["limits"]
    # Before issue 12: 3 requests and a 256-token budget, which one ordinary answer spent whole. Then: the budget
    # (768) in max_output_tokens, which an agent that clamps to max_output_tokens (API.md) let one answer take.
    assert limits["max_output_tokens"] == settings.LIMITED_MAX_OUTPUT_TOKENS == 256
    assert limits["max_output_tokens_total"] == limits["max_requests"] * limits["max_output_tokens"]
    assert "max_output_tokens_per_request" not in limits


def _settings_in_a_fresh_process(**env) -> dict:
    """The tier settings as a tracker process with this environment reads them (settings are read once)."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "from luckrig_site.checks import renamed_env_warnings, settings_problems; "
        "print(json.dumps({n: getattr(s, n) for n in ('LIMITED_TOKENS_PER_DAY', 'LIMITED_MAX_REQUESTS', "
        "'LIMITED_MAX_OUTPUT_TOKENS', 'CONTRIBUTOR_MAX_OUTPUT_TOKENS', 'RATE_CONTRIBUTOR_CREATE', "
        "'CONTRIBUTOR_TOKENS_PER_DAY')} | {'problems': settings_problems(), 'renamed': renamed_env_warnings()}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIMITED_", "CONTRIBUTOR_", "RATE_", "DEBUG"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "luckrig_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_make_run_has_limits_for_an_afternoon_of_trying_and_production_keeps_its_own():
    production = _settings_in_a_fresh_process(DEBUG="0")
    assert production["LIMITED_TOKENS_PER_DAY"] == 5 and production["LIMITED_MAX_REQUESTS"] == 3
    assert production["RATE_CONTRIBUTOR_CREATE"] == "5/d"
    debug = _settings_in_a_fresh_process(DEBUG="1")
    # A README tour plus a few tastings used to spend the five anonymous tokens of the day on 127.0.0.1.
    assert debug["LIMITED_TOKENS_PER_DAY"] >= 100 and debug["LIMITED_MAX_REQUESTS"] >= 10
    assert debug["LIMITED_MAX_OUTPUT_TOKENS"] == 256  # per request, however many requests
    assert debug["problems"] == [] and production["problems"] == []
    overridden = _settings_in_a_fresh_process(DEBUG="1", LIMITED_TOKENS_PER_DAY="7")
    assert overridden["LIMITED_TOKENS_PER_DAY"] == 7
    refused = _settings_in_a_fresh_process(DEBUG="0", LIMITED_MAX_REQUESTS="0")["problems"]
    assert [check for check, _ in refused] == ["luckrig.E013"] and "LIMITED_MAX_REQUESTS" in refused[0][1]


def test_the_output_caps_are_read_from_the_names_the_contract_gives():
    """Before: LIMITED_MAX_OUTPUT_TOKENS / CONTRIBUTOR_MAX_OUTPUT_TOKENS were derived, and setting them did nothing."""
    read = _settings_in_a_fresh_process(DEBUG="0", LIMITED_MAX_OUTPUT_TOKENS="100", CONTRIBUTOR_MAX_OUTPUT_TOKENS="900")
    assert read["LIMITED_MAX_OUTPUT_TOKENS"] == 100 and read["CONTRIBUTOR_MAX_OUTPUT_TOKENS"] == 900
    assert read["problems"] == [] and read["renamed"] == []
    defaults = _settings_in_a_fresh_process(DEBUG="0")
    assert defaults["LIMITED_MAX_OUTPUT_TOKENS"] == 256 and defaults["CONTRIBUTOR_MAX_OUTPUT_TOKENS"] == 2048


def test_the_interim_names_are_not_silently_ignored():
    """*_OUTPUT_TOKENS_PER_REQUEST named the per-request cap for a while: no longer read, and a warning says so."""
    old = _settings_in_a_fresh_process(
        DEBUG="0", LIMITED_OUTPUT_TOKENS_PER_REQUEST="100", CONTRIBUTOR_MAX_OUTPUT_TOKENS="300"
    )
    assert old["LIMITED_MAX_OUTPUT_TOKENS"] == 256 and old["CONTRIBUTOR_MAX_OUTPUT_TOKENS"] == 300
    [warning] = old["renamed"]
    assert "LIMITED_OUTPUT_TOKENS_PER_REQUEST is set but no longer read" in warning
    assert "LIMITED_MAX_OUTPUT_TOKENS (now 256)" in warning
    assert old["problems"] == []  # a warning: the tracker still starts


def test_the_rename_warning_is_a_system_check(monkeypatch):
    from django.core import checks

    monkeypatch.setenv("LIMITED_OUTPUT_TOKENS_PER_REQUEST", "100")
    found = [m for m in checks.run_checks() if m.id == "luckrig.W014"]
    assert len(found) == 1 and found[0].level == checks.WARNING and "LIMITED_MAX_OUTPUT_TOKENS" in found[0].msg

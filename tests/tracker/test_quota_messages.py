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
    # Before: 3 requests and a 256-token budget, which one ordinary answer spent whole.
    assert limits["max_output_tokens"] == limits["max_requests"] * limits["max_output_tokens_per_request"]
    assert limits["max_output_tokens_per_request"] == settings.LIMITED_OUTPUT_TOKENS_PER_REQUEST == 256


def _settings_in_a_fresh_process(**env) -> dict:
    """The tier settings as a tracker process with this environment reads them (settings are read once)."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "from luckrig_site.checks import settings_problems; "
        "print(json.dumps({n: getattr(s, n) for n in ('LIMITED_TOKENS_PER_DAY', 'LIMITED_MAX_REQUESTS', "
        "'LIMITED_OUTPUT_TOKENS_PER_REQUEST', 'LIMITED_MAX_OUTPUT_TOKENS', 'RATE_CONTRIBUTOR_CREATE', "
        "'CONTRIBUTOR_TOKENS_PER_DAY')} | {'problems': settings_problems()}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIMITED_", "RATE_", "DEBUG"))}
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
    assert debug["LIMITED_MAX_OUTPUT_TOKENS"] == debug["LIMITED_MAX_REQUESTS"] * 256
    assert debug["problems"] == [] and production["problems"] == []
    overridden = _settings_in_a_fresh_process(DEBUG="1", LIMITED_TOKENS_PER_DAY="7")
    assert overridden["LIMITED_TOKENS_PER_DAY"] == 7
    refused = _settings_in_a_fresh_process(DEBUG="0", LIMITED_MAX_REQUESTS="0")["problems"]
    assert [check for check, _ in refused] == ["luckrig.E013"] and "LIMITED_MAX_REQUESTS" in refused[0][1]

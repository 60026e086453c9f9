"""Review of issue 15: a member's daily tokens cannot be outrun by minting tokens before their usage is reported.

A live token reserves its whole `max_requests` against the member's requests a day; it must reserve its output
budget against the member's tokens a day as well, or every token minted before the first usage report carries
the whole day's tokens."""

import pytest

from tests.circle_rigs.test_tokens import token
from tracker import tiers
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db


def test_live_tokens_reserve_their_output_budget_so_the_tokens_a_day_hold(api, rig, friend, circle):
    per_token = tiers.of("limited").max_output_tokens_total
    circle.default_tokens_per_day = per_token + per_token // 2
    circle.save()
    first = token(api, rig, friend)[1]
    assert first["limits"]["max_output_tokens_total"] == per_token
    assert first["circle"]["usage_today"]["tokens"] == per_token  # reserved, as its requests are
    status, second = token(api, rig, friend)
    assert status == 201, second
    # Only what the first token cannot spend is left for the second.
    assert second["limits"]["max_output_tokens_total"] == per_token // 2
    status, body = token(api, rig, friend)
    assert (status, body["code"]) == (429, "circle_limit_reached")
    budgets = TastingToken.objects.filter(contributor=friend.contributor).values_list("max_output_tokens", flat=True)
    assert sum(budgets) == circle.default_tokens_per_day


def test_a_live_token_counts_what_it_reported_beyond_its_reservation(api, rig, friend, circle):
    """Prompt tokens are not bounded by the budget: a live token counts its prompt tokens plus the larger of its
    reported completion tokens and its output budget."""
    per_token = tiers.of("limited").max_output_tokens_total
    circle.default_tokens_per_day = 10 * per_token
    circle.save()
    first = token(api, rig, friend)[1]
    TastingToken.objects.filter(jti=first["jti"]).update(prompt_tokens=per_token, completion_tokens=10)
    second = token(api, rig, friend)[1]
    assert second["circle"]["usage_today"]["tokens"] == 3 * per_token  # 2 for the first, 1 for the second

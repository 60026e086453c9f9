"""Review of issue 15: timing shared from circle tastings cannot lift a member into the public contributor tier.

Sharing a timing sample earns its uploader 0.5 points (times their standing), and the contributor tier starts at
1.0: without a rule for circles, two tastings of a friend's circle rig made a member a contributor, the farming
docs/scoring.md says a circle cannot do. A circle rig's timing is seen by its circles only, so it earns no public
credit; a circle tasting of a public rig (whose timing the public sees) earns a quarter, like its usage."""

from datetime import timedelta

import pytest
from django.utils import timezone

from nodes.models import Contributor
from tests.circle_rigs.cast import circle_rig
from tests.circle_rigs.test_tokens import token
from tracker import scores

pytestmark = pytest.mark.django_db


def _taste_and_share_timing(api, node, secret, person):
    issued = token(api, node, person, address="198.51.100.20")[1]  # not on the rig owner's network
    assert issued["circle"] is not None
    body = {"report_id": f"r-{issued['jti']}", "entries": [{"jti": issued["jti"], "requests": 1}]}
    assert api.post(f"/api/nodes/{node.id}/usage", body, auth=secret)[0] == 202
    timing = {"node_id": node.id, "tok_per_sec": 30.0, "ttft_ms": 200.0}
    assert api.post("/api/replay/timing", timing, auth=issued["upload_key"])[0] == 201


@pytest.fixture
def seasoned_friend(friend):
    """The friend with an identity old enough to count in full (standing 1)."""
    Contributor.objects.filter(pk=friend.id).update(created_at=timezone.now() - timedelta(days=60))
    return friend


def _score(person) -> tuple[float, str]:
    contributor = Contributor.objects.get(pk=person.id)
    return contributor.score_components.get("note", 0.0), contributor.score_tier


def test_timing_shared_from_a_circle_rig_earns_no_public_credit(api, owner, seasoned_friend, circle):
    node, secret = circle_rig(api, owner, [circle])
    for _ in range(4):
        _taste_and_share_timing(api, node, secret, seasoned_friend)
    assert _score(seasoned_friend) == (0.0, "limited")


def test_timing_shared_from_a_circle_tasting_of_a_public_rig_earns_a_quarter(api, owner, seasoned_friend, circle):
    node, secret = circle_rig(api, owner, [circle], visibility="public")
    for _ in range(2):
        _taste_and_share_timing(api, node, secret, seasoned_friend)
    note, tier = _score(seasoned_friend)
    assert note == scores.timing_share_points(2 * scores.CIRCLE_USAGE_WEIGHT) and tier == "limited"

"""Which replay sets public lists name (ReplaySet.listed): a set is listed while at least two of its members can
be shown and every one of them is listed; the lists then show exactly those members. The same rule holds for
/replays/ and GET /api/replay-sets; a set's page, reached by its id, shows whatever members can be shown. And
the set's page shows the earlier turns its members share, once."""

import pytest

from moderation import services as moderation
from moderation.models import FilterRule
from showcase import services
from showcase.models import Replay
from tests import factories
from tests.showcase.test_replay_sets import group, published

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "test-moderator")


@pytest.fixture
def rigs(api, live_node, owner, settings):
    """Three public rigs and an unlisted one."""
    settings.RATE_REPLAY_PUBLISH = "100/h"
    node, _ = live_node
    made = [node]
    for gpu, visibility in (("Tesla P40", "public"), ("Arc A770", "public"), ("Secret Titan", "unlisted")):
        other, secret = factories.make_node(owner, gpu=gpu, vram_gb=16, visibility=visibility)
        factories.heartbeat(api, other, secret)
        made.append(other)
    return made


def listed_set_ids(api) -> list[str]:
    status, body = api.get("/api/replay-sets")
    assert status == 200, body
    return [s["id"] for s in body["replay_sets"]]


def test_a_set_naming_an_unlisted_rig_after_its_first_member_is_on_no_public_list(api, client, rigs):
    a, b, _, hidden = rigs
    members = [published(api, a), published(api, b), published(api, hidden)]
    set_id = group(api, members)[1]["id"]
    assert listed_set_ids(api) == []
    page = client.get("/replays/").content.decode()
    assert "Secret Titan" not in page and hidden.pk not in page and f"/replays/sets/{set_id}/" not in page
    # Its public members are listed replays in their own right: they stand alone, as in GET /api/replays.
    assert f"/replays/{members[0]['replay_id']}/" in page and f"/replays/{members[1]['replay_id']}/" in page
    # Whoever has the set's id sees all of it, like an unlisted rig's own replays.
    assert client.get(f"/replays/sets/{set_id}/").content.decode().count("data-player") == 3


def test_a_set_stays_listed_when_its_first_member_is_taken_down_until_fewer_than_two_remain(api, client, rigs):
    a, b, c, _ = rigs
    members = [published(api, a), published(api, b), published(api, c)]
    set_id = group(api, members)[1]["id"]
    take_down = lambda n: services.take_down_replay(  # noqa: E731
        replay=Replay.objects.get(pk=members[n]["replay_id"]), moderator=MOD, reason="spam"
    )
    take_down(0)
    assert listed_set_ids(api) == [set_id]
    item = api.get("/api/replay-sets")[1]["replay_sets"][0]
    assert [r["id"] for r in item["replays"]] == [members[1]["replay_id"], members[2]["replay_id"]]
    page = client.get("/replays/").content.decode()
    assert f"/replays/sets/{set_id}/" in page and "Rig against rig: 2 rigs" in page
    assert page.count('class="card replay-item') == 1

    take_down(1)  # one rig left: no comparison, so no set on the lists; its replay stands alone
    assert listed_set_ids(api) == []
    page = client.get("/replays/").content.decode()
    assert f"/replays/sets/{set_id}/" not in page and f"/replays/{members[2]['replay_id']}/" in page
    assert page.count('class="card replay-item') == 1
    assert client.get(f"/replays/sets/{set_id}/").status_code == 200  # the page by id plays what is left


def test_todays_filter_rules_apply_to_the_earlier_turns_when_the_set_is_made(api, rigs):
    a, b, _, _ = rigs
    before = [{"role": "user", "content": "Name a coin."}, {"role": "assistant", "content": "BUY $MOON now"}]
    members = [published(api, a, messages=before), published(api, b, messages=before)]
    FilterRule.objects.create(id="no-moon", pattern=r"\bbuy\W+\$?moon\b", flags="i", category="spam", reason="x")
    status, err = group(api, members)
    assert status == 422 and err["code"] == "content_filtered", err
    assert err["field"] == "members[0].messages[1].content" and err["rule_id"] == "no-moon"


def test_the_set_page_shows_the_shared_earlier_turns_once(api, client, rigs):
    a, b, _, _ = rigs
    before = [{"role": "user", "content": "Name a GPU."}, {"role": "assistant", "content": "The <b>RTX</b> 3090."}]
    set_id = group(api, [published(api, a, messages=before), published(api, b, messages=before)])[1]["id"]
    html = client.get(f"/replays/sets/{set_id}/").content.decode()
    assert html.count("Earlier in the conversation") == 1
    assert "Name a GPU." in html and "The &lt;b&gt;RTX&lt;/b&gt; 3090." in html
    assert html.index("Name a GPU.") < html.index("data-player")

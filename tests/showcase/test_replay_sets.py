"""Rig against rig, kept: `POST /api/replay-sets` groups published replays of one prompt, each proved by the
upload key of the tasting it records; reading a set, the list, bad input, someone else's replay, filter rules,
moderation, and the OpenAPI document."""

import json

import pytest

from moderation import services as moderation
from moderation.models import FilterRule, ModerationAction
from showcase import services
from showcase.models import Replay, ReplaySet
from tests import factories
from tests.showcase.conftest import replay_file, token_for

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "test-moderator")


@pytest.fixture
def two_rigs(api, live_node, owner):
    node, _ = live_node
    other, secret = factories.make_node(owner, gpu="Tesla P40", vram_gb=24)
    factories.heartbeat(api, other, secret)
    return node, other


def published(api, node, **overrides) -> dict:
    """A fresh tasting of `node`, published: {id, upload_key}."""
    key = token_for(api, node)["upload_key"]
    status, body = api.post("/api/replays", replay_file(node, **overrides), auth=key)
    assert status == 201, body
    return {"replay_id": body["id"], "upload_key": key}


def group(api, members, **extra):
    return api.post("/api/replay-sets", {"schema_version": 1, "members": members, **extra})


def test_two_replays_of_one_prompt_become_one_set_that_anyone_reads(api, two_rigs):
    a, b = two_rigs
    members = [published(api, a), published(api, b, response="Fans whirr, tokens fly")]
    status, body = group(api, members)
    assert status == 201, body
    assert body["id"].startswith("rs_") and body["url"] == f"http://testserver/replays/sets/{body['id']}/"
    assert body["replays"] == [m["replay_id"] for m in members] and api.last["Location"] == body["url"]

    status, detail = api.get(f"/api/replay-sets/{body['id']}")
    assert status == 200, detail
    kept = detail["replay_set"]
    assert kept["prompt"] == replay_file(a)["prompt"] and kept["system"] is None
    assert [r["node_id"] for r in kept["replays"]] == [a.pk, b.pk]
    assert kept["replays"][1]["response"] == "Fans whirr, tokens fly"

    status, listing = api.get("/api/replay-sets")
    assert status == 200 and listing["count"] == 1
    item = listing["replay_sets"][0]
    assert item["id"] == body["id"] and [r["node"]["gpu"] for r in item["replays"]] == [a.gpu, "Tesla P40"]


def test_someone_elses_replay_cannot_join_a_set(api, two_rigs):
    a, b = two_rigs
    mine, theirs = published(api, a), published(api, b)
    # My key beside their replay: the key proves a tasting, and it is not the one that replay records.
    status, body = group(api, [mine, {"replay_id": theirs["replay_id"], "upload_key": mine["upload_key"]}])
    assert status == 403 and body["code"] == "not_publisher" and body["field"] == "members[1]"
    # A tasting token is not an upload key; neither is a made-up one.
    token = token_for(api, b)["token"]
    status, body = group(api, [mine, {"replay_id": theirs["replay_id"], "upload_key": token}])
    assert status == 401 and body["code"] == "invalid_credential" and body["field"] == "members[1].upload_key"
    forged = {"replay_id": theirs["replay_id"], "upload_key": "lru_" + "A" * 43}
    assert group(api, [mine, forged])[1]["code"] == "invalid_credential"
    assert not ReplaySet.objects.exists() and not Replay.objects.filter(replay_set__isnull=False).exists()


@pytest.mark.parametrize(
    "body, code, field",
    [
        ({"members": []}, "invalid_field", "schema_version"),
        ({"schema_version": 2, "members": []}, "invalid_field", "schema_version"),
        ({"schema_version": 1}, "invalid_field", "members"),
        ({"schema_version": 1, "members": "rp_1"}, "invalid_field", "members"),
        ({"schema_version": 1, "members": [{"replay_id": "rp_1", "upload_key": "lru_x"}]}, "invalid_field", "members"),
        ({"schema_version": 1, "members": [{"replay_id": 5, "upload_key": "lru_x"}] * 2}, "invalid_field", None),
        (
            {"schema_version": 1, "members": [{"replay_id": "rp_1", "upload_key": "k", "x": 1}] * 2},
            "unknown_field",
            None,
        ),
        ({"schema_version": 1, "members": [], "title": "mine"}, "unknown_field", "title"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, body, code, field):
    status, err = api.post("/api/replay-sets", body)
    assert status == 400, err
    assert err["code"] == code
    if field:
        assert err["field"].startswith(field)


def test_too_many_members_duplicates_and_broken_json_are_400s(api, live_node):
    node, _ = live_node
    member = {"replay_id": "rp_0000000000000000", "upload_key": "lru_x"}
    nine = [{**member, "replay_id": f"rp_{i:016d}"} for i in range(9)]
    assert group(api, nine)[1]["field"].startswith("members")
    status, err = group(api, [member, member])
    assert status == 400 and "once" in err["error"]
    status, err = api.call("post", "/api/replay-sets", raw=b'{"schema_version": 1, "members": [')
    assert status == 400 and err["code"] == "invalid_json"


def test_answers_to_different_prompts_are_not_one_set(api, two_rigs):
    a, b = two_rigs
    status, err = group(api, [published(api, a), published(api, b, prompt="Something else")])
    assert status == 400 and err["code"] == "prompts_differ" and err["field"] == "members[1]"


def test_the_same_question_after_different_earlier_turns_is_not_one_set(api, two_rigs):
    a, b = two_rigs
    before = [{"role": "user", "content": "Name a GPU."}, {"role": "assistant", "content": "The RTX 3090."}]
    other = [{"role": "user", "content": "Name a CPU."}, {"role": "assistant", "content": "The Cortex-A76."}]
    status, err = group(api, [published(api, a, messages=before), published(api, b, messages=other)])
    assert status == 400 and err["code"] == "prompts_differ" and err["field"] == "members[1]"
    status, body = group(api, [published(api, a, messages=before), published(api, b, messages=before)])
    assert status == 201, body


def test_a_replay_joins_one_set_only(api, two_rigs):
    a, b = two_rigs
    first, second, third = published(api, a), published(api, b), published(api, b)
    assert group(api, [first, second])[0] == 201
    status, err = group(api, [third, first])
    assert status == 409 and err["code"] == "already_in_set" and err["field"] == "members[1]"
    assert Replay.objects.get(pk=third["replay_id"]).replay_set_id is None  # nothing half-done


def test_todays_filter_rules_apply_when_the_set_is_made(api, two_rigs):
    a, b = two_rigs
    members = [published(api, a), published(api, b, response="You should BUY $MOON today")]
    FilterRule.objects.create(id="no-moon", pattern=r"\bbuy\W+\$?moon\b", flags="i", category="spam", reason="x")
    status, err = group(api, members)
    assert status == 422 and err["code"] == "content_filtered"
    assert err["field"] == "members[1].response" and err["rule_id"] == "no-moon" and "MOON" not in err["error"]
    assert not ReplaySet.objects.exists()


def test_a_taken_down_member_cannot_be_grouped_and_leaves_the_set_page(api, two_rigs):
    a, b = two_rigs
    members = [published(api, a), published(api, b), published(api, b)]
    services.take_down_replay(replay=Replay.objects.get(pk=members[2]["replay_id"]), moderator=MOD, reason="spam")
    status, err = group(api, [members[0], members[2]])
    assert status == 404 and err["code"] == "replay_not_found"
    set_id = group(api, members[:2])[1]["id"]
    services.take_down_replay(replay=Replay.objects.get(pk=members[1]["replay_id"]), moderator=MOD, reason="spam")
    _, detail = api.get(f"/api/replay-sets/{set_id}")
    assert [r["id"] for r in detail["replay_set"]["replays"]] == [members[0]["replay_id"]]


def test_a_moderator_takes_a_set_down_with_its_replays_and_restores_them(api, two_rigs):
    a, b = two_rigs
    members = [published(api, a), published(api, b)]
    set_id = group(api, members)[1]["id"]
    services.take_down_replay_set(replay_set=ReplaySet.objects.get(pk=set_id), moderator=MOD, reason="abuse")
    assert api.get(f"/api/replay-sets/{set_id}")[0] == 404
    assert api.get(f"/api/replay-sets/{set_id}")[1]["code"] == "replay_set_not_found"
    assert api.get(f"/api/replays/{members[0]['replay_id']}")[0] == 404
    assert api.get("/api/replay-sets")[1]["count"] == 0
    kinds = set(ModerationAction.objects.values_list("subject_kind", flat=True))
    assert kinds == {"replay", "replay_set"}

    services.restore_replay_set(replay_set=ReplaySet.objects.get(pk=set_id), moderator=MOD, reason="appeal")
    assert api.get(f"/api/replay-sets/{set_id}")[0] == 200
    assert api.get(f"/api/replays/{members[1]['replay_id']}")[0] == 200


def test_unknown_and_odd_ids_are_404s_not_500s(api):
    for set_id in ("rs_nothing", "x" * 300, "%00"):
        status, err = api.get(f"/api/replay-sets/{set_id}")
        assert status == 404 and err["code"] == "replay_set_not_found"
    assert api.get("/api/replay-sets?page=0")[1]["field"] == "page"


def test_a_banned_address_cannot_make_a_set(api, two_rigs):
    a, b = two_rigs
    members = [published(api, a), published(api, b)]
    from core.clientip import hash_ip

    moderation.ban(kind="ip", value=hash_ip("127.0.0.1"), moderator=MOD, reason="spam", days=1)
    status, err = group(api, members)
    assert status == 403 and err["code"] == "banned"


def test_the_openapi_document_describes_replay_sets(api):
    doc = api.client.get("/api/schema/?format=json").json()
    assert {"get", "post"} <= set(doc["paths"]["/api/replay-sets"])
    assert "get" in doc["paths"]["/api/replay-sets/{set_id}"]
    create = doc["paths"]["/api/replay-sets"]["post"]
    assert {"201", "400", "401", "403", "404", "409", "422", "429"} <= set(create["responses"])
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    member = doc["components"]["schemas"][body]["properties"]["members"]
    assert member["minItems"] == 2 and member["maxItems"] == 8
    assert json.dumps(doc["components"]["schemas"]["ReplaySetDetail"]).count("replay_set")


def test_a_moderator_takes_a_set_down_in_the_admin_with_a_reason(api, client, moderator, two_rigs):
    from django.contrib.admin.utils import quote
    from django.urls import reverse

    a, b = two_rigs
    set_id = group(api, [published(api, a), published(api, b)])[1]["id"]
    client.force_login(moderator)  # the Moderators group, not a superuser
    page = client.get(reverse("admin:showcase_replayset_change", args=[quote(set_id)])).content.decode()
    assert f"/replays/sets/{set_id}/" in page and "0 report(s)" in page
    done = client.post(
        reverse("admin:showcase_replayset_changelist"),
        {"action": "take_the_set_and_its_replays_down", "_selected_action": [set_id], "apply": "1", "reason": "spam"},
    )
    assert done.status_code == 302
    assert api.get(f"/api/replay-sets/{set_id}")[0] == 404
    assert ModerationAction.objects.filter(subject_kind="replay_set", subject_id=set_id, reason="spam").exists()

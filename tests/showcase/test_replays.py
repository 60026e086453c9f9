"""Published replays through the public API: publishing with the tasting's upload key, reading, listing, and what
moderation, bans and filter rules do to them."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from core.timefmt import iso
from moderation import services as moderation
from moderation.models import FilterRule, ModerationAction
from nodes.models import Node
from showcase import services
from showcase.models import Replay
from tests import factories
from tests.showcase.conftest import replay_file, token_for
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "test-moderator")


def test_a_taster_publishes_a_replay_and_anyone_reads_it(api, live_node, publish):
    node, _ = live_node
    status, body = publish(node)
    assert status == 201, body
    assert set(body) == {"schema_version", "id", "url"} and body["schema_version"] == 1
    assert body["url"] == f"http://testserver/replays/{body['id']}/"
    assert api.last["Location"] == body["url"]

    status, detail = api.get(f"/api/replays/{body['id']}")
    assert status == 200, detail
    replay = detail["replay"]
    sent = replay_file(node)
    assert replay["id"] == body["id"] and replay["url"] == body["url"] and replay["node_id"] == node.pk
    assert replay["prompt"] == sent["prompt"] and replay["response"] == sent["response"]
    assert replay["chunk_timestamps"] == sent["chunk_timestamps"] and replay["timing"] == sent["timing"]
    assert replay["system"] is None
    assert replay["created_at"].endswith("Z") and replay["published_at"].endswith("Z")
    assert replay["node"] == {
        "id": node.pk,
        "display_name": node.display_name,
        "model_name": "Llama-3.1-8B-Instruct",
        "quantization": "Q4_K_M",
        "gpu": "NVIDIA GeForce RTX 3060",
        "vram_gb": 12.0,
        "context_length": 8192,
    }


def test_a_replay_file_saved_by_luckrig_node_taste_is_published_as_it_is(api, live_node):
    """The agent's file carries `system` (null without one) and the timing upload's own fields, nulls included."""
    node, _ = live_node
    issued = token_for(api, node)
    saved = replay_file(
        node,
        created_at=timezone.now().isoformat().replace("+00:00", "Z"),  # microseconds, as the agent writes it
        system=None,
        timing={
            "schema_version": 1,
            "node_id": node.pk,
            "mode": "plain",
            "tok_per_sec": None,
            "ttft_ms": 201.3,
            "network_ttft_ms": 40.2,
            "proxy_ttft_ms": None,
            "generation_sec": 0.0,
            "queue_wait_sec": 0.0,
            "output_tokens": 1,
            "tokenizer": "Llama-3.1-8B-Instruct",
            "limited_output_truncated": False,
        },
    )
    raw = json.dumps(saved, ensure_ascii=False, indent=2)
    status, body = api.call("post", "/api/replays", raw=raw.encode(), auth=issued["upload_key"])
    assert status == 201, body
    _, detail = api.get(f"/api/replays/{body['id']}")
    assert detail["replay"]["timing"]["ttft_ms"] == 201.3 and "node_id" not in detail["replay"]["timing"]


def test_the_system_prompt_is_published_with_the_prompt(api, live_node, publish):
    node, _ = live_node
    _, body = publish(node, system="You answer in haiku.")
    _, detail = api.get(f"/api/replays/{body['id']}")
    assert detail["replay"]["system"] == "You answer in haiku."


def test_one_replay_per_tasting_token(api, live_node, publish):
    node, _ = live_node
    issued = token_for(api, node)
    assert publish(node, issued["upload_key"])[0] == 201
    status, body = publish(node, issued["upload_key"], prompt="Another try")
    assert status == 409 and body["code"] == "already_published"
    assert Replay.objects.count() == 1


def test_a_token_for_another_node_cannot_publish_for_this_one(api, live_node, owner):
    node, _ = live_node
    other, other_secret = factories.make_node(owner, gpu="Intel Arc A770")
    factories.heartbeat(api, other, other_secret)
    issued = token_for(api, other)
    status, body = publish_raw(api, replay_file(node), issued["upload_key"])
    assert status == 403 and body["code"] == "wrong_node" and body["field"] == "node_id"
    assert not Replay.objects.exists()


def publish_raw(api, body, token):
    return api.post("/api/replays", body, auth=token)


def test_publishing_needs_the_upload_key_of_a_valid_unrevoked_tasting(api, live_node, owner):
    node, _ = live_node
    body = replay_file(node)
    issued = token_for(api, node)

    assert publish_raw(api, body, None)[0] == 401
    assert publish_raw(api, body, "not.a.jwt")[0] == 401
    assert publish_raw(api, body, owner.key)[0] == 401  # a contributor key is not an upload key
    # The tasting token is not one either: the node operator holds it (tests/tracker/test_upload_key.py).
    assert publish_raw(api, body, issued["token"])[0] == 401
    forged = issued["upload_key"][:-4] + ("AAAA" if not issued["upload_key"].endswith("AAAA") else "BBBB")
    assert publish_raw(api, body, forged)[0] == 401
    # Expired for longer than the 24 h grace that measurements and replays get.
    old = token_for(api, node)
    long_ago = timezone.now() - timedelta(days=2)
    TastingToken.objects.filter(jti=old["jti"]).update(issued_at=long_ago, expires_at=long_ago + timedelta(minutes=15))
    status, err = publish_raw(api, replay_file(node, created_at=iso(long_ago)), old["upload_key"])
    assert status == 401 and err["code"] == "unauthorized" and api.last["WWW-Authenticate"] == "Bearer"

    TastingToken.objects.filter(jti=issued["jti"]).update(revoked_at=timezone.now())
    status, err = publish_raw(api, body, issued["upload_key"])
    assert status == 401 and "revoked" in err["error"]
    assert not Replay.objects.exists()


def test_a_token_expired_within_the_grace_period_still_publishes(api, live_node):
    node, _ = live_node
    issued = token_for(api, node)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    TastingToken.objects.filter(jti=issued["jti"]).update(
        issued_at=timezone.now() - timedelta(hours=2), expires_at=an_hour_ago
    )
    assert publish_raw(api, replay_file(node), issued["upload_key"])[0] == 201


@pytest.mark.parametrize(
    "field, text",
    [
        ("prompt", "Explain how to make a pipe bomb."),
        ("response", "Sure. First you synthesize sarin by ..."),
        ("system", "Always explain how to make a pipe bomb."),
    ],
)
def test_text_that_matches_a_filter_rule_is_not_published(api, live_node, publish, field, text):
    node, _ = live_node
    status, body = publish(node, **{field: text})
    assert status == 422 and body["code"] == "content_filtered"
    assert body["field"] == field and body["rule_id"] == "builtin-cbrn-en" and "builtin-cbrn-en" in body["error"]
    assert text not in body["error"]  # the text is never echoed
    assert not Replay.objects.exists()


def test_filter_rules_are_the_moderators_current_enabled_rules(api, live_node, publish):
    node, _ = live_node
    FilterRule.objects.create(
        id="no-crypto-shilling", pattern=r"\bbuy\W+\$?moon\b", flags="i", category="spam", reason="x"
    )
    status, body = publish(node, response="You should BUY $MOON today")
    assert status == 422 and body["rule_id"] == "no-crypto-shilling"
    FilterRule.objects.filter(pk="no-crypto-shilling").update(enabled=False)
    assert publish(node, response="You should BUY $MOON today")[0] == 201


def test_a_broken_rule_in_the_database_is_skipped_not_a_500(api, live_node, publish):
    node, _ = live_node
    FilterRule.objects.create(id="broken", pattern="(unclosed", category="spam", reason="x")
    assert publish(node)[0] == 201


# --- listing ----------------------------------------------------------------------------------------------


def test_the_list_is_newest_first_and_filters_by_node(api, live_node, owner, publish):
    node, _ = live_node
    other, other_secret = factories.make_node(owner, gpu="Tesla P40", vram_gb=24)
    factories.heartbeat(api, other, other_secret)
    first = publish(node, prompt="first")[1]["id"]
    elsewhere = publish(other, prompt="elsewhere")[1]["id"]
    second = publish(node, prompt="second " + "x" * 500)[1]["id"]
    Replay.objects.filter(pk=first).update(published_at=timezone.now() - timedelta(minutes=2))
    Replay.objects.filter(pk=elsewhere).update(published_at=timezone.now() - timedelta(minutes=1))

    status, body = api.get(f"/api/replays?node={node.pk}")
    assert status == 200 and body["count"] == 2
    assert [r["id"] for r in body["replays"]] == [second, first]
    item = body["replays"][0]
    assert item["url"] == f"http://testserver/replays/{second}/" and item["node_id"] == node.pk
    assert item["prompt_preview"] == ("second " + "x" * 500)[:280] and item["prompt_chars"] == 507
    assert item["response_chars"] == len(replay_file(node)["response"])
    assert item["node"]["gpu"] == "NVIDIA GeForce RTX 3060" and item["timing"]["tok_per_sec"] == 41.5
    assert "response" not in item and "chunk_timestamps" not in item  # the full text is in the detail

    _, everything = api.get("/api/replays")
    assert [r["id"] for r in everything["replays"]] == [second, elsewhere, first]


def test_the_list_pages(api, live_node, publish):
    node, _ = live_node
    ids = [publish(node, prompt=f"p{i}")[1]["id"] for i in range(3)]
    for minutes, replay_id in enumerate(reversed(ids)):
        Replay.objects.filter(pk=replay_id).update(published_at=timezone.now() - timedelta(minutes=minutes))
    _, page1 = api.get(f"/api/replays?node={node.pk}&page_size=2")
    assert [r["id"] for r in page1["replays"]] == [ids[2], ids[1]] and page1["previous"] is None
    assert page1["next"].endswith("page=2") or "page=2" in page1["next"]
    _, page2 = api.get(page1["next"].replace("http://testserver", ""))
    assert [r["id"] for r in page2["replays"]] == [ids[0]] and page2["next"] is None and page2["previous"]
    _, beyond = api.get("/api/replays?page=9")
    assert beyond["replays"] == [] and beyond["count"] == 3


@pytest.mark.parametrize("query", ["page=0", "page=x", "page_size=101", "page_size=-1", "node=" + "n" * 65])
def test_bad_list_queries_are_400_naming_the_parameter(api, db, query):
    status, body = api.get(f"/api/replays?{query}")
    assert status == 400 and body["code"] == "invalid_field" and body["field"] == query.split("=")[0]


def test_listing_an_unknown_node_is_404(api, db):
    status, body = api.get("/api/replays?node=no-such-rig")
    assert status == 404 and body["code"] == "node_not_found"


def test_unknown_replay_is_404(api, db):
    status, body = api.get("/api/replays/rp_0000000000000000")
    assert status == 404 and body["code"] == "replay_not_found"


def test_an_unlisted_nodes_replays_are_only_for_whoever_has_its_id(api, owner, publish):
    node, secret = factories.make_node(owner, visibility="unlisted")
    factories.heartbeat(api, node, secret)
    replay_id = publish(node)[1]["id"]
    assert api.get("/api/replays")[1]["count"] == 0
    assert [r["id"] for r in api.get(f"/api/replays?node={node.pk}")[1]["replays"]] == [replay_id]
    assert api.get(f"/api/replays/{replay_id}")[0] == 200


def test_the_list_costs_the_same_queries_for_one_or_many_replays(
    api, live_node, publish, django_assert_max_num_queries
):
    node, _ = live_node
    publish(node)
    with django_assert_max_num_queries(3) as one:
        api.get(f"/api/replays?node={node.pk}")
    queries_for_one = len(one)
    for _ in range(4):
        publish(node)
    with django_assert_max_num_queries(queries_for_one):
        assert api.get(f"/api/replays?node={node.pk}")[1]["count"] == 5


# --- moderation -------------------------------------------------------------------------------------------


def _visible(api, node, replay_id) -> tuple[bool, bool]:
    in_list = replay_id in [r["id"] for r in api.get("/api/replays")[1]["replays"]]
    return in_list, api.get(f"/api/replays/{replay_id}")[0] == 200


def test_a_taken_down_replay_disappears_and_a_restored_one_comes_back(api, live_node, publish):
    node, _ = live_node
    replay_id = publish(node)[1]["id"]
    replay = Replay.objects.get(pk=replay_id)

    action = services.take_down_replay(replay=replay, moderator=MOD, reason="doxxing in the prompt")
    assert _visible(api, node, replay_id) == (False, False)
    status, body = api.get(f"/api/replays/{replay_id}")
    assert status == 404 and body["code"] == "replay_not_found"
    assert api.get(f"/api/replays?node={node.pk}")[1]["count"] == 0
    assert (action.action, action.subject_kind, action.subject_id, action.reason, action.moderator_name) == (
        "take_down",
        "replay",
        replay_id,
        "doxxing in the prompt",
        "test-moderator",
    )
    with pytest.raises(ValueError):
        services.take_down_replay(replay=replay, moderator=MOD, reason="again")

    services.restore_replay(replay=replay, moderator=MOD, reason="the reporter was mistaken")
    assert _visible(api, node, replay_id) == (True, True)
    assert list(ModerationAction.objects.order_by("created_at").values_list("action", flat=True)) == [
        "take_down",
        "restore",
    ]


def test_a_decision_without_a_reason_changes_nothing(api, live_node, publish):
    node, _ = live_node
    replay = Replay.objects.get(pk=publish(node)[1]["id"])
    with pytest.raises(ValueError):
        services.take_down_replay(replay=replay, moderator=MOD, reason="  ")
    assert _visible(api, node, replay.pk) == (True, True) and not ModerationAction.objects.exists()


@pytest.mark.parametrize("how", ["take_down", "ban"])
def test_a_hidden_node_hides_its_replays_until_it_is_back(api, live_node, publish, how):
    node, _ = live_node
    replay_id = publish(node)[1]["id"]
    if how == "take_down":
        moderation.take_down(node=node, moderator=MOD, reason="spam rig")
    else:
        moderation.ban(kind="node", value=node.pk, moderator=MOD, reason="spam rig", days=3)
    assert _visible(api, node, replay_id) == (False, False)
    assert api.get(f"/api/replays/{replay_id}")[1]["code"] == "replay_not_found"
    assert api.get(f"/api/replays?node={node.pk}")[1]["code"] == "node_not_found"
    if how == "take_down":
        moderation.restore(node=Node.objects.get(pk=node.pk), moderator=MOD, reason="cleaned up")
    else:
        moderation.unban(kind="node", value=node.pk, moderator=MOD, reason="appeal accepted")
    assert _visible(api, node, replay_id) == (True, True)


def test_a_taken_down_node_takes_no_replays(api, live_node):
    node, _ = live_node
    issued = token_for(api, node)
    moderation.take_down(node=node, moderator=MOD, reason="spam rig")
    status, _ = publish_raw(api, replay_file(node), issued["upload_key"])
    assert status in (401, 404)  # its tokens were revoked with the takedown, and the node is gone
    TastingToken.objects.update(revoked_at=None)
    status, body = publish_raw(api, replay_file(node), issued["upload_key"])
    assert status == 404 and body["code"] == "node_not_found"


def test_a_banned_contributor_cannot_publish(api, live_node, taster):
    node, _ = live_node
    issued = token_for(api, node, auth=taster.key)
    moderation.ban(kind="contributor", value=taster.id, moderator=MOD, reason="abusive prompts", days=7)
    status, body = publish_raw(api, replay_file(node), issued["upload_key"])
    assert status == 403 and body["code"] == "banned"
    assert body["ban"]["kind"] == "contributor" and body["ban"]["reason"] == "abusive prompts"
    assert not Replay.objects.exists()


def test_a_banned_address_cannot_publish(api, live_node):
    node, _ = live_node
    issued = token_for(api, node)
    moderation.ban(kind="ip", value="198.51.100.7", moderator=MOD, reason="spam")
    status, body = api.post("/api/replays", replay_file(node), auth=issued["upload_key"], REMOTE_ADDR="198.51.100.7")
    assert status == 403 and body["code"] == "banned" and body["ban"]["kind"] == "ip"
    assert api.post("/api/replays", replay_file(node), auth=issued["upload_key"], REMOTE_ADDR="198.51.100.8")[0] == 201


def test_publishing_is_rate_limited_per_address(api, live_node, settings):
    settings.RATE_REPLAY_PUBLISH = "2/h"
    node, _ = live_node
    for _ in range(2):
        assert publish_raw(api, replay_file(node), token_for(api, node)["upload_key"])[0] == 201
    status, body = publish_raw(api, replay_file(node), token_for(api, node)["upload_key"])
    assert status == 429 and body["code"] == "ip_rate_limited" and int(api.last["Retry-After"]) >= 1
    assert api.get("/api/replays")[0] == 200  # reading is not limited


def test_reading_ignores_a_stale_token(api, live_node, publish):
    node, _ = live_node
    replay_id = publish(node)[1]["id"]
    assert api.get("/api/replays", auth="not.a.jwt")[0] == 200
    assert api.get(f"/api/replays/{replay_id}", auth="not.a.jwt")[0] == 200


def test_created_at_is_the_clients_but_within_the_tokens_lifetime(api, live_node, publish):
    node, _ = live_node
    when = timezone.now() - timedelta(minutes=3)
    _, body = publish(node, created_at=iso(when))
    assert api.get(f"/api/replays/{body['id']}")[1]["replay"]["created_at"] == iso(when)
    for bad in (timezone.now() + timedelta(hours=1), timezone.now() - timedelta(days=30)):
        status, err = publish(node, created_at=iso(bad))
        assert status == 400 and err["field"] == "created_at"


def test_chunk_texts_are_kept_when_they_match_the_response(api, live_node, publish):
    node, _ = live_node
    status, published = publish(node, response="ab c", chunk_timestamps=[10, 20, 30], chunks=["a", "b", " c"])
    assert status == 201, published
    _, detail = api.get(f"/api/replays/{published['id']}")
    assert detail["replay"]["chunks"] == ["a", "b", " c"]


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        (["a", "b"], "one string per"),
        (["a", "b", "x"], "join to exactly"),
        ("abc", "list of strings"),
        ([1, 2, 3], "string"),
    ],
)
def test_chunk_texts_that_do_not_fit_are_refused(live_node, publish, chunks, why):
    node, _ = live_node
    status, answer = publish(node, response="ab c", chunk_timestamps=[10, 20, 30], chunks=chunks)
    assert status == 400 and answer["field"].startswith("chunks") and why in answer["error"], answer

"""The pages of rig against rig, server side: compare's picker when no rig is named (live rigs first), which
compared rigs the arena sends the prompt to and why not the others, /replays/ (singles and sets, newest first,
paged) and a set's page. The browser side is tests/browser/test_arena.py."""

import json
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from showcase import services
from showcase.models import Replay
from tests import factories
from tests.showcase.test_replay_sets import MOD, group, published

pytestmark = pytest.mark.django_db


def arena_config(html: str) -> dict:
    found = re.search(r'<script id="lr-arena" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1)) if found else {}


def test_compare_without_ids_offers_the_listed_rigs_live_first(client, live_node):
    call_command("seed_demo")
    node, _ = live_node
    html = client.get("/compare/").content.decode()
    boxes = re.findall(r'<input type="checkbox" name="ids" value="([^"]+)"', html)
    assert boxes and boxes[0] == node.pk and len(boxes) > 1  # the live rig above the demo rigs
    assert '<form method="get" action="/compare/"' in html and "Compare the ticked rigs" in html
    for n, _value in enumerate(boxes, 1):
        assert f'<label for="pick-{n}">' in html  # every box labelled


def test_the_arena_sends_only_to_rigs_that_can_answer_and_says_why_not(client, live_node):
    call_command("seed_demo")
    node, _ = live_node
    demo = re.findall(r'name="ids" value="([^"]+)"', client.get("/compare/").content.decode())[1]
    html = client.get(f"/compare/?ids={node.pk},{demo}").content.decode()
    assert [r["id"] for r in arena_config(html)["rigs"]] == [node.pk]
    assert "An example from the demo data, not a running rig: the prompt is not sent to it." in html
    assert 'data-arena-rig="' + demo + '"' in html and "Send to 1 rig" in html
    assert 'table class="compare"' in html  # the table stays


def test_the_arena_skips_an_offline_rig_with_when_it_was_last_seen(client, live_node, owner):
    node, _ = live_node
    gone, _ = factories.make_node(owner, gpu="Tesla K80")
    type(gone).objects.filter(pk=gone.pk).update(status="unavailable", last_heartbeat_at=timezone.now())
    html = client.get(f"/compare/?ids={gone.pk}").content.decode()
    assert arena_config(html) == {} and "Not serving right now (last seen" in html
    assert "None of these rigs can be sent a prompt right now" in html and "arena.js" not in html


def test_replays_lists_singles_and_sets_newest_first_with_their_rigs(client, api, live_node, owner):
    a, _ = live_node
    b, secret = factories.make_node(owner, gpu="Tesla P40", vram_gb=24)
    factories.heartbeat(api, b, secret)
    single = published(api, a, prompt="An old single question")["replay_id"]
    Replay.objects.filter(pk=single).update(published_at=timezone.now() - timedelta(hours=1))
    set_id = group(api, [published(api, a), published(api, b)])[1]["id"]
    html = client.get("/replays/").content.decode()
    assert html.index(f"/replays/sets/{set_id}/") < html.index(f"/replays/{single}/")
    assert "Rig against rig: 2 rigs" in html and "P40" in html and "An old single question" in html
    assert html.count('class="card replay-item') == 2  # the set's members are not listed again on their own
    assert client.get("/replays/?page=2").status_code == 404
    assert client.get("/replays/?page=x").status_code == 404


def test_replays_pages_by_twenty(client, api, live_node, settings):
    settings.RATE_REPLAY_PUBLISH = "100/h"
    node, _ = live_node
    for n in range(21):
        published(api, node, prompt=f"question {n}")
    first = client.get("/replays/").content.decode()
    assert first.count('class="card replay-item') == 20 and "Page 1 of 2" in first and "?page=2" in first
    assert client.get("/replays/?page=2").content.decode().count('class="card replay-item') == 1


def test_a_set_page_plays_each_member_and_a_member_links_back(client, api, live_node, owner):
    a, _ = live_node
    b, secret = factories.make_node(owner, gpu="Tesla P40", vram_gb=24)
    factories.heartbeat(api, b, secret)
    members = [published(api, a), published(api, b)]
    set_id = group(api, members)[1]["id"]
    html = client.get(f"/replays/sets/{set_id}/").content.decode()
    assert html.count("data-player") == 2 and 'id="lr-replay-0"' in html and 'id="lr-replay-1"' in html
    assert "Play all at once" in html and 'name="subject_id" value="' + set_id + '"' in html
    member_page = client.get(f"/replays/{members[0]['replay_id']}/").content.decode()
    assert f"/replays/sets/{set_id}/" in member_page
    services.take_down_replay_set(
        replay_set=Replay.objects.get(pk=members[0]["replay_id"]).replay_set, moderator=MOD, reason="x"
    )
    assert client.get(f"/replays/sets/{set_id}/").status_code == 404
    assert client.get("/replays/sets/rs_nope/").status_code == 404


def test_on_an_https_page_the_arena_skips_a_plain_http_rig_and_says_why(client, api, owner):
    node, secret = factories.make_node(owner, endpoint_url="http://rig.example.com:8788/v1")
    factories.heartbeat(api, node, secret)
    html = client.get(f"/compare/?ids={node.pk}", secure=True).content.decode()
    assert arena_config(html) == {}
    assert "plain http, which browsers refuse to call from this https page" in html
    assert arena_config(client.get(f"/compare/?ids={node.pk}").content.decode())["rigs"][0]["id"] == node.pk

"""A replay of a later turn of a conversation (the website's tasting panel, issue 12): the turn's prompt and
answer as before, the earlier turns as `messages`. Files without it publish as they always did."""

import pytest

from showcase.models import Replay

EARLIER = [
    {"role": "user", "content": "What is a rig?"},
    {"role": "assistant", "content": "A computer that runs a model."},
]


def test_a_later_turn_is_published_with_the_turns_before_it(api, live_node, publish):
    node, _ = live_node
    status, body = publish(node, prompt="And a fast one?", messages=EARLIER)
    assert status == 201, body
    status, detail = api.get(f"/api/replays/{body['id']}")
    assert status == 200 and detail["replay"]["messages"] == EARLIER
    assert detail["replay"]["prompt"] == "And a fast one?"
    # The replay's page shows them, as text.
    page = api.client.get(f"/replays/{body['id']}/").content.decode()
    assert "A computer that runs a model." in page and "Earlier in the conversation" in page


def test_a_single_question_has_no_earlier_messages(api, live_node, publish):
    node, _ = live_node
    status, body = publish(node)  # an older client's file: no `messages` at all
    assert status == 201, body
    assert api.get(f"/api/replays/{body['id']}")[1]["replay"]["messages"] == []
    status, body = publish(node, messages=[])
    assert status == 201, body


@pytest.mark.parametrize(
    "messages, field",
    [
        ("not a list", "messages"),
        ([{"role": "system", "content": "x"}, EARLIER[1]], "messages[0].role"),
        ([EARLIER[1], EARLIER[0]], "messages[0]"),  # turns alternate, the taster first
        ([EARLIER[0]], "messages"),  # a question without its answer
        ([{"role": "user", "content": "x", "name": "me"}, EARLIER[1]], "messages[0].name"),
        ([{"role": "user"}, EARLIER[1]], "messages[0].content"),
        ([{"role": "user", "content": 7}, EARLIER[1]], "messages[0].content"),
        ([EARLIER[0], EARLIER[1]] * 101, "messages"),
    ],
)
def test_bad_earlier_messages_are_a_400_naming_them(api, live_node, publish, messages, field):
    node, _ = live_node
    status, body = publish(node, messages=messages)
    assert status == 400, body
    assert body["field"] == field, body
    assert not Replay.objects.exists()


def test_earlier_messages_pass_the_filter_rules_too(api, live_node, publish):
    node, _ = live_node
    bad = [{"role": "user", "content": "Explain how to make a pipe bomb."}, EARLIER[1]]
    status, body = publish(node, messages=bad)
    assert status == 422 and body["code"] == "content_filtered" and body["field"] == "messages[0].content"
    assert "pipe bomb" not in body["error"]
    assert not Replay.objects.exists()

"""The one lookup of a node a caller names (Node.objects.visible_by_id and nodes.access.get_visible_node): what
it finds, and the ids that find nothing without reaching the database's quirks."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.api_errors import ApiError
from nodes.access import get_visible_node
from nodes.models import Node
from tests.factories import make_node


def _not_found(node_id) -> ApiError:
    with pytest.raises(ApiError) as caught:
        get_visible_node(node_id)
    return caught.value


def test_a_visible_node_is_found_with_its_owner_and_relay_joined(owner, django_assert_num_queries):
    node, _ = make_node(owner, visibility="unlisted")
    with django_assert_num_queries(1):
        found = Node.objects.visible_by_id(node.id)
        assert found == node and found.owner.handle == "owner" and found.relay is None
    assert get_visible_node(node.id) == node


@pytest.mark.parametrize(
    "hide", [{"taken_down_at": timezone.now()}, {"banned_until": timezone.now() + timedelta(days=1)}]
)
def test_a_hidden_node_is_not_found(owner, hide):
    node, _ = make_node(owner)
    Node.objects.filter(pk=node.pk).update(**hide)
    assert Node.objects.visible_by_id(node.id) is None
    error = _not_found(node.id)
    assert (error.status_code, error.code) == (404, "node_not_found")


def test_a_node_whose_ban_has_ended_is_found_again(owner):
    node, _ = make_node(owner)
    Node.objects.filter(pk=node.pk).update(banned_until=timezone.now() - timedelta(seconds=1))
    assert Node.objects.visible_by_id(node.id) == node


def test_an_unknown_id_is_not_found(db):
    assert Node.objects.visible_by_id("no-such-rig") is None
    assert _not_found("no-such-rig").message == "No node 'no-such-rig'."


def test_an_over_long_id_names_no_node_even_when_it_starts_with_one(owner, django_assert_num_queries):
    node, _ = make_node(owner)
    longer = node.id + "x" * 64
    with django_assert_num_queries(0):  # an id that cannot name a node costs no query
        assert Node.objects.visible_by_id(longer) is None
    error = _not_found("y" * 10_000)
    assert error.code == "node_not_found" and len(error.message) < 100  # the id is not echoed in full


def test_an_id_with_nul_is_not_found_rather_than_an_error(owner, django_assert_num_queries):
    node, _ = make_node(owner)
    with django_assert_num_queries(0):  # PostgreSQL would refuse the comparison: it is never sent
        assert Node.objects.visible_by_id(node.id + "\x00") is None
    assert Node.objects.visible_by_id("\x00") is None
    assert _not_found(node.id + "\x00").code == "node_not_found"


def test_several_ids_find_the_visible_nodes_among_them(owner):
    shown, _ = make_node(owner)
    hidden, _ = make_node(owner)
    Node.objects.filter(pk=hidden.pk).update(taken_down_at=timezone.now())
    found = Node.objects.visible_by_ids([shown.id, hidden.id, "unknown", "a\x00", "z" * 65])
    assert [n.id for n in found] == [shown.id]

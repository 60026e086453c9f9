"""Circles and circle rigs for the tests of issue 15: circles and memberships straight through the ORM (their API is
tested on its own), rigs through the API as their owners register them."""

import secrets

from nodes.models import Circle, CircleMember, Node
from tests import factories


def make_circle(owner, name: str = "flatmates", **fields) -> Circle:
    """A circle with its owner's own member row, as creating one through the API leaves it."""
    circle = Circle.objects.create(id="c_" + secrets.token_urlsafe(12), owner=owner.contributor, name=name, **fields)
    CircleMember.objects.create(circle=circle, contributor=owner.contributor, role=CircleMember.Role.OWNER)
    return circle


def join(circle: Circle, person, **fields) -> CircleMember:
    return CircleMember.objects.create(circle=circle, contributor=person.contributor, **fields)


def circle_rig(api, owner, circles=(), *, visibility: str = "circle", **fields) -> tuple[Node, str]:
    """A rig registered through the API with this visibility and these circles, reported in and seen alive."""
    body = factories.node_fields(visibility=visibility, circles=[c.id for c in circles], **fields)
    status, answer = api.post("/api/nodes", body, auth=owner.key)
    assert status == 201, answer
    node = Node.objects.get(pk=answer["node"]["id"])
    factories.heartbeat(api, node, answer["node_secret"])
    return factories.seen_alive(node), answer["node_secret"]

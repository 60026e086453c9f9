"""Circles in the admin (issue 15): a moderator sees circles, members and invites, read-only, and never an
invite's code or its hash."""

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from nodes.models import CircleInvite, CircleMember
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, moderator):
    client.force_login(moderator)
    return client


@pytest.fixture
def circle(api, owner, taster):
    _, made = api.post("/api/circles", {"name": "Roommates"}, auth=owner.key)
    circle = made["circle"]
    _, invite = api.post(f"/api/circles/{circle['id']}/invites", {"max_uses": 3}, auth=owner.key)
    assert api.post(f"/api/circles/invites/{invite['code']}/join", {}, auth=taster.key)[0] == 201
    node, _ = factories.make_node(owner)
    node.circles.add(circle["id"])
    return {**circle, "code": invite["code"], "invite_id": invite["invite"]["id"], "node_id": node.pk}


def test_a_moderator_sees_circles_members_and_invites_but_never_a_code(staff, circle):
    invite = CircleInvite.objects.get(pk=circle["invite_id"])
    member = CircleMember.objects.get(circle_id=circle["id"], role="member")
    pages = [
        reverse("admin:nodes_circle_changelist"),
        reverse("admin:nodes_circle_change", args=[quote(circle["id"])]),
        reverse("admin:nodes_circlemember_changelist"),
        reverse("admin:nodes_circlemember_change", args=[member.pk]),
        reverse("admin:nodes_circleinvite_changelist"),
        reverse("admin:nodes_circleinvite_change", args=[quote(invite.pk)]),
    ]
    for url in pages:
        response = staff.get(url)
        html = response.content.decode()
        assert response.status_code == 200, url
        assert circle["code"] not in html and circle["code"][4:] not in html and invite.code_hash not in html, url
    detail = staff.get(pages[1]).content.decode()
    assert "Roommates" in detail and "taster" in detail and circle["node_id"] in detail and invite.pk in detail


def test_circles_are_read_only_in_the_admin(staff, circle):
    assert staff.get(reverse("admin:nodes_circle_add")).status_code == 403
    assert staff.get(reverse("admin:nodes_circleinvite_add")).status_code == 403
    url = reverse("admin:nodes_circle_delete", args=[quote(circle["id"])])
    assert staff.post(url, {"post": "yes"}).status_code == 403
    change = reverse("admin:nodes_circleinvite_change", args=[quote(circle["invite_id"])])
    staff.post(change, {"max_uses": "1000", "revoked_at": ""})
    assert CircleInvite.objects.get(pk=circle["invite_id"]).max_uses == 3

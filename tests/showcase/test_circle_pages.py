"""The circle pages on the server (issue 15): My circles renders no circle (its script asks the API with the key in
the browser); the join page says what the link joins, sends no Referer and is never cached; a dead link is the one
410 page whatever killed it, a forged one the ordinary 404. The browser side is in tests/browser/test_circles.py."""

import re
import secrets
from datetime import timedelta

import pytest
from django.utils import timezone

from nodes.models import Circle, CircleInvite, CircleMember, Node
from showcase import circle_views, display
from tests import factories
from tracker import credentials
from tracker.models import Ban

GONE = "This invite link no longer works. Ask the circle&#x27;s owner for a new one."


def make_invite(owner, *, name="Attic friends", **fields) -> str:
    """A circle of `owner`'s (with its owner row) and an invite to it; returns the invite's code."""
    circle, _ = Circle.objects.get_or_create(
        owner=owner.contributor, name=name, defaults={"id": "c_" + secrets.token_urlsafe(12)}
    )
    CircleMember.objects.get_or_create(circle=circle, contributor=owner.contributor, role=CircleMember.Role.OWNER)
    code = "lri_" + secrets.token_urlsafe(32)
    CircleInvite.objects.create(
        id="inv_" + secrets.token_urlsafe(9),
        circle=circle,
        code_hash=credentials.digest(code),
        created_by=owner.contributor,
        expires_at=fields.pop("expires_at", timezone.now() + timedelta(days=7)),
        **fields,
    )
    return code


@pytest.fixture
def circle_owner(db):
    return factories.make_contributor(handle="attic-owner")


def test_my_circles_is_a_page_with_its_script_and_one_tasting_panel_for_every_rig(client):
    response = client.get("/my/circles/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'href="/my/circles/" aria-current="page">My circles</a>' in html
    assert "showcase/my_circles.js" in html and "showcase/taste.js" in html and "showcase/tasting.js" in html
    # The one panel carries both acknowledgements and the public-key mode, hidden until a rig is chosen.
    assert html.count('id="taste-prompt"') == 1 and 'data-ack-for="relayed" hidden' in html
    assert 'data-ack-for="direct"' in html and 'class="modes" data-pk-only hidden' in html
    assert 'id="lr-taste-caps"' in html and 'id="lr-taste"' not in html  # no rig of its own: taste.js waits
    assert "Anyone with this link can join" in html  # the sentence beside every new invite link
    # No circle is drawn by the server: it never sees the key.
    assert "data-circle-id" not in html


def test_the_rig_page_keeps_its_one_acknowledgement(client, owner):
    node, _ = factories.make_node(owner)
    Node.objects.filter(pk=node.pk).update(status="available", last_seen_at=timezone.now())
    html = client.get(f"/nodes/{node.pk}/").content.decode()
    assert "data-ack-for" in html and 'data-ack-for="relayed"' not in html and "data-pk-only" not in html


def test_the_join_page_says_what_the_link_joins_and_keeps_the_code_to_itself(client, circle_owner):
    code = make_invite(circle_owner, role=CircleMember.Role.INVITER, max_uses=3, uses=1)
    response = client.get(f"/join/{code}")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Join the circle “Attic friends”" in html
    assert re.search(r"data-join-owner>attic-owner<", html)
    assert re.search(r"data-join-role>inviter<", html)
    assert re.search(r"data-join-expires>\d{4}-\d\d-\d\d \d\d:\d\d UTC<", html)
    assert "<dd>2</dd>" in html  # uses left
    assert 'href="/my/circles/"' in html
    # The code leaves with no request: no Referer, no cache; in the page only as its own address (the language
    # switch comes back to it).
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert html.count(code) == 1 and f'name="next" type="hidden" value="/join/{code}"' in html


def test_an_unlimited_invite_says_so(client, circle_owner):
    code = make_invite(circle_owner, max_uses=None)
    assert "any number until it expires" in client.get(f"/join/{code}").content.decode()


@pytest.mark.parametrize("death", ["expired", "used_up", "revoked", "owner_banned"])
def test_a_dead_link_is_the_one_no_longer_works_page(client, circle_owner, death):
    now = timezone.now()
    fields = {
        "expired": {"expires_at": now - timedelta(seconds=1)},
        "used_up": {"max_uses": 2, "uses": 2},
        "revoked": {"revoked_at": now},
        "owner_banned": {},
    }[death]
    code = make_invite(circle_owner, **fields)
    if death == "owner_banned":
        Ban.objects.create(kind=Ban.Kind.CONTRIBUTOR, value=circle_owner.id, reason="spam")
    response = client.get(f"/join/{code}")
    assert response.status_code == 410
    html = response.content.decode()
    assert GONE in html and "Attic friends" not in html  # nothing about the circle, no hint which death
    assert response["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("code", ["lri_" + "A" * 43, "not-a-code", "lri_" + "x" * 200])
def test_a_forged_code_is_the_ordinary_404(client, circle_owner, code):
    make_invite(circle_owner)
    response = client.get(f"/join/{code}")
    assert response.status_code == 404
    assert "Not found" in response.content.decode()
    assert response["Referrer-Policy"] == "no-referrer"


def test_the_join_page_speaks_japanese(client, circle_owner):
    code = make_invite(circle_owner)
    html = client.get(f"/join/{code}", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert '<html lang="ja">' in html and "Attic friends" in html and "Join the circle" not in html
    html = client.get("/my/circles/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert "My circles" not in html


def test_every_circle_sentence_is_read_by_a_script():
    from tests.showcase.test_js_strings import SCRIPTS, leaves

    computed = ("roles.", "statuses.", "invite_states.")  # looked up by the API's word: "roles." + role
    strings = circle_views.strings()["circles"]
    unused = [
        key
        for key in leaves(strings)
        if not key.startswith(computed) and not re.search(r"[\"'`]" + re.escape(key) + r"[\"'`]", SCRIPTS)
    ]
    assert unused == []
    assert set(strings["roles"]) == set(CircleMember.Role.values)
    assert set(strings["statuses"]) == set(CircleMember.Status.values)


def test_my_rigs_can_show_a_circle_rig_as_one(client):
    """A circle rig's visibility has its option in My rigs' form: without it the form read the value as empty and
    any save sent that."""
    html = client.get("/my/rigs/").content.decode()
    assert '<option value="circle">circle: only the circles it is shared with (My circles)</option>' in html


def test_the_owners_acts_are_on_the_page_until_the_script_hides_what_a_key_may_not_do(client):
    """The delete box with what deleting does, the invite's own limits (owner only: hidden until the script sees
    the owner), the taste panel's line for a friends-only rig (no Publish there), and My rigs' publish box."""
    html = client.get("/my/circles/").content.decode()
    assert "Deleting the circle: its members lose access at once and their live tokens for it are revoked." in html
    assert "a friends-only rig shared with no circle is tasted by you alone" in html
    assert re.search(r'<div class="circle-part" data-delete-box hidden>', html)
    assert html.count('<div class="field" data-owner-only hidden>') == 2
    assert "Replays of a friends-only rig stay with you" in html
    rigs = client.get("/my/rigs/").content.decode()
    assert "data-publish-box hidden" in rigs and "data-publish-rig" in rigs
    strings = circle_views.script_strings.js_strings()["my_publish"]
    assert "appears on the public list" in strings["public"]["said"] and strings["public"]["button"] == (
        "Make this rig public"
    )
    assert set(strings) == {"public", "unlisted"}  # the two wider visibilities POST /api/nodes/<id>/publish takes


def test_a_shared_public_rigs_page_says_its_circle_only_hours_and_never_its_circles(client, owner):
    node, _ = factories.make_node(owner)
    circle = Circle.objects.create(id="c_" + secrets.token_urlsafe(12), owner=owner.contributor, name="Attic friends")
    node.circles.add(circle)
    Node.objects.filter(pk=node.pk).update(circle_only_hours=[0, 1, 7, 18, 19, 20, 21, 22, 23])
    page = client.get(f"/nodes/{node.pk}/").content.decode()
    line = re.search(r"<p class=\"muted\" data-circle-only>(.*?)</p>", page).group(1)
    assert line == (
        "Friends first: at 07:00–08:00, 18:00–02:00 UTC this rig serves the circles its owner shares it with, and "
        "nobody else."
    )
    assert "Attic friends" not in page and circle.id not in page
    Node.objects.filter(pk=node.pk).update(circle_only_hours=[])
    assert "data-circle-only" not in client.get(f"/nodes/{node.pk}/").content.decode()


@pytest.mark.parametrize(
    ("hours", "label"),
    [([5], "05:00–06:00 UTC"), ([23, 0], "23:00–01:00 UTC"), (list(range(24)), "all day"), ([], "")],
)
def test_circle_only_hours_read_as_ranges(hours, label):
    assert display.hour_ranges(hours) == label

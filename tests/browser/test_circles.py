"""Circles in two browsers (issue 15, "Done when"): the owner creates a circle in My circles, shares a rig with it
(a real agent in front of the fake upstream) and makes an invite link; a friend opens the link, joins with a new
identity, tastes the rig from My circles, hits the daily limit the owner set in the members panel and reads when it
resets; an outsider finds the rig nowhere. Then the owner's other acts: an invite with limits of its own, revoking
it (the link is the one 410 page), pausing, resuming and removing a member, deleting a circle, and making the
friends-only rig public from My rigs."""

import re

import pytest
import requests

from tests.agents import AgentStarter
from tests.browser.conftest import sideways_overflow
from tests.browser.test_design import UNLABELLED
from tests.browser.test_my_rigs import with_key
from tests.node_agent.fakes import FakeOpenAI

pytestmark = pytest.mark.browser
CLIPBOARD = {"permissions": ["clipboard-read", "clipboard-write"]}
RIG_NAME = "Attic 3090 · friends only"


def call(site, method: str, path: str, key: str | None = None, **body) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    json = {"schema_version": 1, **body} if body else None
    return requests.request(method, site.url(path), json=json, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def attic(site, tmp_path_factory):
    """The circle owner's key and their own rig: a live agent in front of a fake upstream, public until shared."""
    with FakeOpenAI() as fake:
        fake.words, fake.delay = [f"friend{i} " for i in range(6)], 0.02
        starter = AgentStarter(site, tmp_path_factory.mktemp("attic"))
        key = site.contributor("attic-owner")
        try:
            agent = starter.start(fake.base, key=key, register={"display_name": RIG_NAME, "gpu": "RTX 3090 (attic)"})
            yield key, agent.node_id
        finally:
            starter.stop_all()


def fits_and_is_labelled(page) -> None:
    overflow, wide = sideways_overflow(page)
    assert overflow <= 1, (page.url, overflow, wide)
    assert page.evaluate(UNLABELLED) == [], page.url


def card_of(page, name: str):
    card = page.locator("[data-circle]", has=page.locator("[data-circle-name]", has_text=name))
    card.wait_for()
    return card


def member_of(card, who: str):
    return card.locator("[data-member]", has=card.page.locator("[data-member-name]", has_text=who))


def create_circle(page, name: str):
    page.goto("/my/circles/")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create the circle").click()
    page.locator("[data-create-result]", has_text=f"Circle “{name}” created").wait_for()
    return card_of(page, name)


def taste(panel, prompt: str) -> None:
    panel.locator("#taste-prompt").fill(prompt)
    panel.locator("[data-ack]").check()
    panel.locator("[data-taste-go]").click()


def test_a_friend_joins_by_the_link_tastes_hits_the_limit_and_an_outsider_sees_nothing(site, attic, new_page, shot):
    owner_key, node_id = attic
    owner = new_page(**CLIPBOARD)
    with_key(owner, owner_key)

    # The owner creates the circle and shares the rig with it, friends only.
    card = create_circle(owner, "Attic friends")
    share = card.locator("[data-share-form]")
    share.get_by_label("Share one of my rigs").select_option(node_id)
    assert share.get_by_label("Friends only: take it off the public list").is_checked()
    share.get_by_role("button", name="Share with this circle").click()
    card.locator("[data-share-result]", has_text=f"{RIG_NAME} is now shared with “Attic friends”").wait_for()
    rig = card.locator(f'[data-circle-rig][data-node-id="{node_id}"]')
    assert rig.locator("[data-rig-badge]").inner_text() == "Circle: Attic friends"
    node = call(site, "GET", f"/api/nodes/{node_id}", owner_key).json()["node"]
    circle_id = node["circles"][0]["id"]
    assert node["visibility"] == "circle" and node["circles"] == [{"id": circle_id, "name": "Attic friends"}]

    # An invite: the link with its Copy button, the server-drawn QR code as an image, and who can use it.
    card.get_by_role("button", name="Create an invite link").click()
    fresh = card.locator("[data-invite-new]")
    fresh.wait_for()
    url = fresh.locator("[data-invite-url]").inner_text()
    code = url.rsplit("/join/", 1)[1]
    assert url == site.url(f"/join/{code}") and code.startswith("lri_")
    assert "Anyone with this link can join “Attic friends” until it expires" in fresh.inner_text()
    qr = fresh.locator("img[data-invite-qr]")
    assert qr.get_attribute("src").startswith("data:image/svg+xml")
    assert owner.evaluate("img => img.complete && img.naturalWidth > 0", qr.element_handle())  # a drawable SVG
    fresh.get_by_role("button", name="Copy").click()
    fresh.locator("[data-copy-status]", has_text="Copied").wait_for()
    assert owner.evaluate("navigator.clipboard.readText()") == url
    card.locator('[data-invites] tr[data-state="active"]').wait_for()
    shot(owner, "my-circles-invite")

    # The friend opens the link in another browser, with no key yet: the page says what joining means.
    friend = new_page()
    said, sent = [], []
    friend.on("console", lambda msg: said.append(msg.text))
    friend.on("request", lambda r: sent.append((r.url, r.headers.get("referer") or "")))
    response = friend.goto(url)
    assert response.status == 200 and response.headers["referrer-policy"] == "no-referrer"
    assert friend.locator("h1").inner_text() == "Join the circle “Attic friends”"
    assert friend.locator("[data-join-owner]").inner_text() == "attic-owner"
    assert friend.locator("[data-join-role]").inner_text() == "member"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", friend.locator("[data-join-expires]").inner_text())
    friend.locator("[data-no-key]").wait_for()
    fits_and_is_labelled(friend)
    friend.get_by_label("Handle (optional, public)").fill("bee")
    friend.get_by_role("button", name="Create my identity and join").click()
    friend.locator("[data-my-state]", has_text="You joined “Attic friends”.").wait_for()
    assert friend.locator("[data-key-value]").inner_text().startswith("lrk_")  # shown once, kept in this browser
    shot(friend, "join-joined")
    # The code went to the join endpoint only: in no other request, no Referer, nothing logged.
    elsewhere = [u for u, _ in sent if code in u and not u.endswith((f"/join/{code}", f"/invites/{code}/join"))]
    assert elsewhere == [] and not [r for _, r in sent if code in r] and not [s for s in said if code in s]
    friend.get_by_role("link", name="Go to My circles").click()
    friend.wait_for_url(site.url("/my/circles/"))
    friend_card = card_of(friend, "Attic friends")
    assert friend_card.locator("[data-circle-role]").inner_text() == "member"
    assert friend_card.locator("[data-member]").count() == 1  # a member sees their own row only
    assert friend_card.locator("[data-delete-box]").is_hidden() and friend_card.locator("[data-leave]").is_visible()

    # The owner limits the friend to one request a day, from the members panel.
    owner.reload()
    card = card_of(owner, "Attic friends")
    bee = member_of(card, "bee")
    bee.get_by_label("Requests a day").fill("1")
    bee.get_by_role("button", name="Save limits").click()
    card.locator("[data-members-result]", has_text="Limits saved for bee.").wait_for()
    member_of(card, "bee").locator('[data-usage-text="requests"]', has_text="Requests today: 0 of 1").wait_for()

    # The friend tastes the circle rig from My circles: one answer, through a circle token.
    friend.reload()
    friend_card = card_of(friend, "Attic friends")
    friend_card.locator(f'[data-circle-rig][data-node-id="{node_id}"] [data-taste-rig]').click()
    panel = friend.locator("[data-circle-taste]")
    assert panel.locator("[data-taste-title]").inner_text() == f"Taste {RIG_NAME}"
    taste(panel, "hello friends")
    panel.locator("[data-taste-status]", has_text="Done.").wait_for(timeout=15_000)
    assert "friend0" in panel.locator("[data-taste-output]").first.inner_text()
    # A friends-only rig's replay is not offered for publishing (the tracker would refuse it); its timing is
    # shared as on any rig, with the upload key of the circle token.
    turn = panel.locator(".turn").first
    assert turn.get_by_role("button", name="Download the replay (JSON)").is_visible()
    assert turn.locator("[data-publish]").is_hidden()
    assert turn.locator("[data-replay-private]").inner_text() == (
        "Replays of a friends-only rig stay with you: download one to keep it."
    )
    turn.get_by_role("button", name="Share the timing (numbers only, no text)").click()
    turn.locator("[data-after-status]", has_text="Timing shared.").wait_for()
    friend_key = friend.evaluate("localStorage.getItem('luckrig.contributor_key')")
    friend_id = call(site, "GET", "/api/contributors/me", friend_key).json()["contributor"]["id"]
    rows = site.execute("SELECT circle_id FROM tracker_tastingtoken WHERE contributor_id = %s", (friend_id,))
    assert rows == [(circle_id,)]

    # The next message needs a new token: over the limit, the panel says so and when it resets.
    taste(panel, "and again")
    status = panel.locator("[data-taste-status]", has_text="00:00 UTC")
    status.wait_for(timeout=15_000)
    text = status.inner_text()
    assert "Your daily limit in this circle, set by its owner, is used up (requests a day: 1;" in text
    assert re.search(r"resets at 00:00 UTC, in (\d+ h )?\d+ min \(\d\d:\d\d", text), text
    shot(friend, "circle-limit-reached")

    # The owner sees the friend's day in numbers.
    owner.reload()
    bee = member_of(card_of(owner, "Attic friends"), "bee")
    bee.locator('[data-usage-text="requests"]', has_text="Requests today: 1 of 1").wait_for()
    assert re.search(r"Today's counts reset at 00:00 UTC, in ", owner.locator("[data-resets]").first.inner_text())
    shot(owner, "my-circles-members")

    # An outsider finds the rig nowhere, in the browser or the API.
    outsider = new_page()
    for path in ("/", "/queue/", "/compare/"):
        outsider.goto(path)
        assert RIG_NAME not in outsider.content() and node_id not in outsider.content(), path
    assert outsider.goto(f"/nodes/{node_id}/").status == 404
    stranger = site.contributor("stranger")
    assert call(site, "GET", f"/api/nodes/{node_id}").status_code == 404
    refused = call(site, "GET", f"/api/nodes/{node_id}", stranger)
    assert (refused.status_code, refused.json()["code"]) == (403, "not_in_circle")
    refused = call(site, "POST", "/api/tokens", stranger, node_id=node_id)
    assert (refused.status_code, refused.json()["code"]) == (403, "not_in_circle")
    assert call(site, "POST", "/api/tokens", None, node_id=node_id).status_code == 404
    assert call(site, "GET", f"/api/circles/{circle_id}").status_code == 404
    assert call(site, "GET", f"/api/circles/{circle_id}", stranger).status_code == 403
    assert node_id not in requests.get(site.url("/api/nodes"), timeout=10).text
    with_key(outsider, stranger)
    outsider.goto("/my/circles/")
    outsider.locator("[data-my-state]", has_text="is in no circle yet").wait_for()


def test_the_owner_revokes_an_invite_and_pauses_resumes_and_removes_a_member(site, attic, new_page, shot):
    """On a phone: every part of My circles fits it."""
    owner_key, node_id = attic
    owner = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    with_key(owner, owner_key)
    card = create_circle(owner, "Book club")
    circle_id = card.get_attribute("data-circle-id")
    card.get_by_label("Who may use it").select_option("unlimited")
    # The owner gives this link limits of its own: the empty one is the circle's.
    requests_field = card.get_by_label("Their requests a day (empty: the circle's)")
    assert requests_field.get_attribute("placeholder") == "200"
    requests_field.fill("3")
    card.get_by_role("button", name="Create an invite link").click()
    card.locator("[data-invite-new]").wait_for()
    url = card.locator("[data-invite-url]").inner_text()
    row = card.locator('[data-invites] tr[data-state="active"]')
    row.wait_for()
    assert "used, no limit" in row.inner_text()
    assert "member · 3 requests and 200,000 tokens a day" in row.inner_text()
    (invite,) = call(site, "GET", f"/api/circles/{circle_id}/invites", owner_key).json()["invites"]
    assert invite["limits"] == {"requests_per_day": 3, "tokens_per_day": 200_000}
    fits_and_is_labelled(owner)
    row.get_by_role("button", name="Revoke").click()
    card.locator("[data-invites-result]", has_text="Invite revoked: its link no longer works.").wait_for()
    assert card.locator('[data-invites] tr[data-state="revoked"]').count() == 1
    assert card.locator("[data-invites] [data-revoke]").count() == 0

    # The revoked link: the one page for every dead link, 410, nothing about the circle.
    visitor = new_page()
    response = visitor.goto(url)
    assert response.status == 410 and response.headers["referrer-policy"] == "no-referrer"
    assert "This invite link no longer works. Ask the circle's owner for a new one." in visitor.content()
    assert "Book club" not in visitor.content()
    forged = visitor.goto("/join/lri_" + "A" * 43)
    assert forged.status == 404

    # A member joins by another link (through the API here); the rig is shared with the circle too.
    made = call(site, "POST", f"/api/circles/{circle_id}/invites", owner_key)
    assert made.status_code == 201, made.text
    member_key = site.contributor("reader")
    assert call(site, "POST", f"/api/circles/invites/{made.json()['code']}/join", member_key).status_code == 201
    current = [c["id"] for c in call(site, "GET", f"/api/nodes/{node_id}", owner_key).json()["node"]["circles"]]
    assert call(site, "PATCH", f"/api/nodes/{node_id}", owner_key, circles=[*current, circle_id]).status_code == 200

    owner.reload()
    card = card_of(owner, "Book club")
    reader = member_of(card, "reader")
    reader.wait_for()
    fits_and_is_labelled(owner)
    shot(owner, "my-circles-phone")
    reader.get_by_role("button", name="Pause").click()
    card.locator("[data-members-result]", has_text="reader is paused").wait_for()
    assert member_of(card, "reader").locator("[data-member-status]").inner_text() == "paused"
    refused = call(site, "POST", "/api/tokens", member_key, node_id=node_id, circle_id=circle_id)
    assert (refused.status_code, refused.json()["code"]) == (403, "membership_paused")
    member = new_page()
    with_key(member, member_key)
    member.goto("/my/circles/")
    rig = card_of(member, "Book club").locator(f'[data-circle-rig][data-node-id="{node_id}"]')
    assert rig.locator("[data-taste-rig]").is_disabled()
    assert "paused by the circle's owner" in rig.locator("[data-rig-note]").inner_text()

    member_of(card, "reader").get_by_role("button", name="Resume").click()
    card.locator("[data-members-result]", has_text="reader may taste again.").wait_for()
    assert call(site, "POST", "/api/tokens", member_key, node_id=node_id, circle_id=circle_id).status_code == 201

    remove = member_of(card, "reader").get_by_role("button", name="Remove")
    remove.click()
    assert remove.inner_text() == "Remove for good? Press again"
    remove.click()
    card.locator("[data-members-result]", has_text="reader is no longer in this circle").wait_for()
    assert member_of(card, "reader").count() == 0
    names = [c["name"] for c in call(site, "GET", "/api/circles", member_key).json()["circles"]]
    assert "Book club" not in names
    # Removed: the token issued while a member is revoked.
    reader_id = call(site, "GET", "/api/contributors/me", member_key).json()["contributor"]["id"]
    revoked = site.execute(
        "SELECT revoked_at FROM tracker_tastingtoken WHERE circle_id = %s AND contributor_id = %s",
        (circle_id, reader_id),
    )
    assert len(revoked) == 1 and revoked[0][0] is not None
    member.reload()
    member.locator("[data-my-state]", has_text="is in no circle yet").wait_for()


def test_the_owner_deletes_a_circle_then_makes_the_rig_public_as_an_act_of_its_own(site, attic, new_page, shot):
    """Deleting a circle says what it does and takes a second press; the rig stays its owner's. In My rigs a
    circle rig is made public by its own button (pressed twice), not by Save; its other circles stay."""
    owner_key, node_id = attic
    owner = new_page()
    with_key(owner, owner_key)
    card = create_circle(owner, "Old band")
    circle_id = card.get_attribute("data-circle-id")
    kept = [c["id"] for c in call(site, "GET", f"/api/nodes/{node_id}", owner_key).json()["node"]["circles"]]
    shared = call(site, "PATCH", f"/api/nodes/{node_id}", owner_key, visibility="circle", circles=[*kept, circle_id])
    assert shared.status_code == 200, shared.text
    member_key = site.contributor("drummer")
    made = call(site, "POST", f"/api/circles/{circle_id}/invites", owner_key).json()
    assert call(site, "POST", f"/api/circles/invites/{made['code']}/join", member_key).status_code == 201
    issued = call(site, "POST", "/api/tokens", member_key, node_id=node_id, circle_id=circle_id)
    assert issued.status_code == 201, issued.text

    owner.reload()
    card = card_of(owner, "Old band")
    said = card.locator("[data-delete-box]").inner_text()
    assert "its members lose access at once and their live tokens for it are revoked" in said
    assert "The rigs stay yours" in said and "a friends-only rig shared with no circle is tasted by you alone" in said
    delete = card.locator("[data-delete-circle]")  # by its place: its name changes on the first press
    assert delete.inner_text() == "Delete this circle"
    delete.click()
    assert delete.inner_text() == "Delete for good? Press again"
    assert call(site, "GET", f"/api/circles/{circle_id}", owner_key).status_code == 200  # not yet
    delete.click()
    owner.locator("[data-my-state]", has_text="“Old band” is deleted").wait_for()
    assert owner.locator("[data-circle-name]", has_text="Old band").count() == 0
    assert call(site, "GET", f"/api/circles/{circle_id}", owner_key).status_code == 404
    jti = issued.json()["jti"]
    assert site.execute("SELECT revoked_at IS NOT NULL FROM tracker_tastingtoken WHERE jti = %s", (jti,)) == [(True,)]
    node = call(site, "GET", f"/api/nodes/{node_id}", owner_key).json()["node"]
    assert node["visibility"] == "circle" and [c["id"] for c in node["circles"]] == kept

    # My rigs: choosing public shows what it means and its own button; Save does not widen the rig.
    owner.goto("/my/rigs/")
    rig = owner.locator(f'[data-rig][data-node-id="{node_id}"]')
    visibility = rig.get_by_label("Visibility")
    assert visibility.input_value() == "circle"
    box = rig.locator("[data-publish-box]")
    assert box.is_hidden()
    visibility.select_option("public")
    assert "appears on the public list" in box.inner_text()
    assert "their members keep going first in its queue" in box.inner_text()
    rig.get_by_role("button", name="Save changes").click()
    rig.locator("[data-field=visibility] [data-error]", has_text="with the button below, on its own").wait_for()
    assert call(site, "GET", f"/api/nodes/{node_id}", owner_key).json()["node"]["visibility"] == "circle"
    publish = box.locator("[data-publish-rig]")  # by its place: its name changes on the first press
    assert publish.inner_text() == "Make this rig public"
    publish.click()
    assert publish.inner_text() == "Press again to make it public"
    assert call(site, "GET", f"/api/nodes/{node_id}", owner_key).json()["node"]["visibility"] == "circle"
    fits_and_is_labelled(owner)
    shot(owner, "my-rigs-publish")
    publish.click()
    rig.locator("[data-rig-result]", has_text="The rig is public now").wait_for()
    assert box.is_hidden() and visibility.input_value() == "public"
    node = call(site, "GET", f"/api/nodes/{node_id}", owner_key).json()["node"]
    assert node["visibility"] == "public" and [c["id"] for c in node["circles"]] == kept
    assert node_id in requests.get(site.url("/api/nodes"), timeout=10).text

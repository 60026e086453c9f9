"""Bans hold on every surface (issue 11): an address ban whatever key is sent; a contributor ban hides the
contributor's nodes everywhere, revokes their live tokens and refuses their writes; a banned or taken-down
node's agent is refused on every path it uses. One test per surface; the websockets are in test_ban_links.py."""

import pytest

from moderation import services as moderation
from nodes.models import Node
from tests import factories
from tests.showcase.conftest import replay_file
from tracker import bans
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db
MOD = moderation.Moderator(None, "ban-test")
BANNED_IP = "198.51.100.66"


def refused(status, body, kind: str) -> bool:
    return status == 403 and body["code"] == "banned" and body["ban"]["kind"] == kind


# --- an address ban holds whatever contributor key is sent ------------------------------------------------


@pytest.fixture
def banned_address(db):
    moderation.ban(kind="ip", value=BANNED_IP, moderator=MOD, reason="scraping")
    return {"REMOTE_ADDR": BANNED_IP}


def test_an_address_ban_holds_for_tokens_whatever_key_is_sent(api, live_node, taster, banned_address):
    """The attack: a banned address sends any contributor key (a fresh one costs nothing) and gets tokens."""
    node, _ = live_node
    assert refused(*api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key, **banned_address), "ip")
    assert refused(*api.post("/api/tokens", {"node_id": node.pk}, **banned_address), "ip")
    assert api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)[0] == 201  # from elsewhere


def test_an_address_ban_holds_for_node_writes_whatever_key_is_sent(api, owner, banned_address):
    node, _ = factories.make_node(owner)
    assert refused(*api.post("/api/nodes", factories.node_fields(), auth=owner.key, **banned_address), "ip")
    assert refused(*api.patch(f"/api/nodes/{node.pk}", {"display_name": "x"}, auth=owner.key, **banned_address), "ip")
    assert refused(*api.delete(f"/api/nodes/{node.pk}", auth=owner.key, **banned_address), "ip")
    assert Node.objects.filter(pk=node.pk, display_name="").exists()


def test_an_address_ban_holds_for_timing_and_replays(api, live_node, taster):
    node, _ = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)
    moderation.ban(kind="ip", value=BANNED_IP, moderator=MOD, reason="scraping")
    timing = {"node_id": node.pk, "tok_per_sec": 3.0}
    assert refused(*api.post("/api/replay/timing", timing, auth=issued["upload_key"], REMOTE_ADDR=BANNED_IP), "ip")
    assert refused(*api.post("/api/replays", replay_file(node), auth=issued["upload_key"], REMOTE_ADDR=BANNED_IP), "ip")


# --- a contributor ban hides the contributor's nodes from every public surface -----------------------------


@pytest.fixture
def banned_owner(api, owner, live_node):
    """The owner of a live, listed, badged node is banned for a week."""
    node, secret = live_node
    factories.seen_alive(node)
    assert node.pk in [n["id"] for n in api.get("/api/nodes")[1]["nodes"]]
    moderation.ban(kind="contributor", value=owner.id, moderator=MOD, reason="fake rigs", days=7)
    return node, secret


def test_a_banned_contributors_nodes_leave_the_list(api, banned_owner):
    node, _ = banned_owner
    assert node.pk not in [n["id"] for n in api.get("/api/nodes")[1]["nodes"]]


def test_a_banned_contributors_nodes_detail_and_metrics_are_404(api, banned_owner):
    node, _ = banned_owner
    assert api.get(f"/api/nodes/{node.pk}")[1]["code"] == "node_not_found"
    assert api.get(f"/api/nodes/{node.pk}/metrics")[0] == 404


def test_a_banned_contributors_nodes_leave_the_showcase(api, owner, taster, live_node):
    node, _ = live_node
    factories.seen_alive(node)
    # A category needs two comparable rigs: beside a 24 GB card, the owner's 12 GB one is the lowest VRAM.
    other, secret = factories.make_node(taster, gpu="NVIDIA GeForce RTX 3090", vram_gb=24)
    factories.heartbeat(api, other, secret)
    factories.seen_alive(other)
    assert node.pk in [c["node_id"] for c in api.get("/api/showcase")[1]["categories"]]
    moderation.ban(kind="contributor", value=owner.id, moderator=MOD, reason="fake rigs")
    assert node.pk not in [c["node_id"] for c in api.get("/api/showcase")[1]["categories"]]


def test_a_banned_contributors_nodes_leave_contributions(api, banned_owner):
    node, _ = banned_owner
    assert node.pk not in [s["node_id"] for s in api.get("/api/contributions")[1]["scores"]]


def test_a_banned_contributors_nodes_leave_the_website(api, banned_owner):
    node, _ = banned_owner
    assert node.pk not in api.client.get("/", HTTP_ACCEPT="text/html").content.decode()
    assert api.client.get(f"/nodes/{node.pk}/", HTTP_ACCEPT="text/html").status_code == 404


def test_a_banned_contributors_nodes_get_no_tokens(api, banned_owner):
    node, _ = banned_owner
    assert api.post("/api/tokens", {"node_id": node.pk})[1]["code"] == "node_not_found"


def test_a_contributor_ban_revokes_their_live_tokens_and_their_nodes_tokens(api, owner, taster, live_node):
    node, secret = live_node
    elsewhere, elsewhere_secret = factories.make_node(owner, gpu="Intel Arc A770")
    factories.heartbeat(api, elsewhere, elsewhere_secret)
    _, held = api.post("/api/tokens", {"node_id": elsewhere.pk}, auth=taster.key)
    _, other = api.post("/api/tokens", {"node_id": elsewhere.pk}, REMOTE_ADDR="192.0.2.90")
    moderation.ban(kind="contributor", value=taster.id, moderator=MOD, reason="abusive prompts")
    # The revocation reaches the agent like any other (its next heartbeat answer; a connected agent at once).
    assert factories.heartbeat(api, elsewhere, elsewhere_secret)["revoked_jtis"] == [held["jti"]]
    assert TastingToken.objects.get(jti=other["jti"]).revoked_at is None

    _, owners_taster = api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="192.0.2.91")
    moderation.ban(kind="contributor", value=owner.id, moderator=MOD, reason="fake rigs")
    assert TastingToken.objects.get(jti=owners_taster["jti"]).revoked_at is not None  # the node is gone


def test_a_lifted_contributor_ban_brings_the_nodes_back(api, owner, banned_owner):
    node, _ = banned_owner
    moderation.unban(kind="contributor", value=owner.id, moderator=MOD, reason="appeal accepted")
    # At once: the workflow reconciles the owner's nodes itself, without waiting for the monitor's next cycle.
    assert node.pk in [n["id"] for n in api.get("/api/nodes")[1]["nodes"]]
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200


def test_a_node_ban_outlives_its_owners_lifted_ban(api, owner, banned_owner):
    node, _ = banned_owner
    moderation.ban(kind="node", value=node.pk, moderator=MOD, reason="spam rig")
    moderation.unban(kind="contributor", value=owner.id, moderator=MOD, reason="appeal accepted")
    bans.reconcile()
    assert api.get(f"/api/nodes/{node.pk}")[0] == 404


# --- a banned contributor's writes -------------------------------------------------------------------------


def test_a_banned_contributors_writes_are_refused(api, owner, taster, live_node):
    node, _ = live_node
    mine, _ = factories.make_node(taster, gpu="Intel Arc A770")
    _, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)
    moderation.ban(kind="contributor", value=taster.id, moderator=MOD, reason="abusive prompts", days=7)
    for status, body in (
        api.post("/api/nodes", factories.node_fields(), auth=taster.key),
        api.patch(f"/api/nodes/{mine.pk}", {"display_name": "back"}, auth=taster.key),
        api.delete(f"/api/nodes/{mine.pk}", auth=taster.key),
        api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key),
    ):
        assert refused(status, body, "contributor"), body
    assert Node.objects.filter(pk=mine.pk, display_name="").exists()
    # Its tokens were revoked by the ban, and what it says about a tasting from before is refused as banned.
    assert TastingToken.objects.get(jti=issued["jti"]).revoked_at is not None
    timing = {"node_id": node.pk, "tok_per_sec": 3.0}
    assert refused(*api.post("/api/replay/timing", timing, auth=issued["upload_key"]), "contributor")
    assert refused(*api.post("/api/replays", replay_file(node), auth=issued["upload_key"]), "contributor")


# --- a banned or taken-down node's agent ---------------------------------------------------------------------

HIDE = {
    "node ban": lambda node, owner: moderation.ban(kind="node", value=node.pk, moderator=MOD, reason="spam rig"),
    "owner ban": lambda node, owner: moderation.ban(kind="contributor", value=owner.id, moderator=MOD, reason="x"),
    "takedown": lambda node, owner: moderation.take_down(node=node, moderator=MOD, reason="reported"),
}


@pytest.fixture(params=sorted(HIDE))
def hidden_agent(request, api, owner, live_node):
    node, secret = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk})
    HIDE[request.param](node, owner)
    return node, secret, issued, request.param


def agent_refused(status, body, how: str) -> bool:
    """403 `taken_down` after a takedown; 403 `banned`, naming the node's ban or its owner's, after a ban."""
    if how == "takedown":
        return status == 403 and body["code"] == "taken_down"
    kind = "node" if how == "node ban" else "contributor"
    return status == 403 and body["code"] == "banned" and body["ban"]["kind"] == kind


def test_a_hidden_nodes_heartbeats_are_refused(api, hidden_agent):
    node, secret, _, how = hidden_agent
    before = Node.objects.get(pk=node.pk).last_heartbeat_at
    status, body = api.post(f"/api/nodes/{node.pk}/heartbeat", {"queue": {"active": 0, "waiting": 0}}, auth=secret)
    assert agent_refused(status, body, how), body
    assert Node.objects.get(pk=node.pk).last_heartbeat_at == before


def test_a_hidden_nodes_usage_reports_are_refused(api, hidden_agent):
    node, secret, issued, how = hidden_agent
    usage = {"report_id": "r-1", "entries": [{"jti": issued["jti"], "requests": 1}]}
    assert agent_refused(*api.post(f"/api/nodes/{node.pk}/usage", usage, auth=secret), how)
    assert TastingToken.objects.get(jti=issued["jti"]).requests_served == 0


def test_a_hidden_nodes_flags_are_refused(api, hidden_agent):
    from moderation.models import ModerationFlag

    node, secret, issued, how = hidden_agent
    flag = {"jti": issued["jti"], "stage": "input", "categories": ["x"]}
    assert agent_refused(*api.post("/api/moderation/flags", flag, auth=secret), how)
    assert not ModerationFlag.objects.exists()


def test_a_hidden_nodes_tunnel_tickets_are_refused(api, hidden_agent):
    node, secret, _, how = hidden_agent
    assert agent_refused(*api.post(f"/api/nodes/{node.pk}/tunnel", {}, auth=secret), how)

"""A taken-down or banned node disappears from every public surface; banned contributors and addresses are
refused with 403 `banned`. One test per surface."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.clientip import hash_ip
from moderation import services
from moderation.addresses import address_label
from nodes.models import Node, TimingSample
from tests import factories
from tracker.models import Ban, TastingToken

pytestmark = pytest.mark.django_db
MOD = services.Moderator(None, "test-moderator")


@pytest.fixture
def banned_node(api, owner, live_node):
    node, secret = live_node
    factories.seen_alive(node)
    services.ban(kind="node", value=node.pk, moderator=MOD, reason="spam rig", days=3)
    return node, secret


HIDE = {
    "take_down": lambda node: services.take_down(node=node, moderator=MOD, reason="reported and confirmed"),
    "ban": lambda node: services.ban(kind="node", value=node.pk, moderator=MOD, reason="reported and confirmed"),
    "ban_for_days": lambda node: services.ban(kind="node", value=node.pk, moderator=MOD, reason="spam", days=3),
}


@pytest.fixture(params=sorted(HIDE))
def hide(request):
    """The same surfaces must hold for a takedown and for a ban (for good or for some days)."""
    return HIDE[request.param]


@pytest.fixture
def hidden_node(api, owner, live_node, hide):
    node, secret = live_node
    hide(node)
    return node, secret


def metric_nodes(api) -> dict[str, float]:
    """luckrig_nodes{status} from /metrics."""
    text = api.client.get("/metrics").content.decode()
    rows = [line for line in text.splitlines() if line.startswith("luckrig_nodes{")]
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in rows}


def test_hidden_nodes_leave_the_list(api, hidden_node):
    node, _ = hidden_node
    _, body = api.get("/api/nodes")
    assert node.pk not in [n["id"] for n in body["nodes"]]


def test_hidden_nodes_detail_is_404(api, hidden_node):
    status, body = api.get(f"/api/nodes/{hidden_node[0].pk}")
    assert status == 404 and body["code"] == "node_not_found"


def test_hidden_nodes_metrics_are_404(api, hidden_node):
    assert api.get(f"/api/nodes/{hidden_node[0].pk}/metrics")[0] == 404


def test_hidden_nodes_leave_the_showcase(api, hidden_node):
    _, body = api.get("/api/showcase")
    assert hidden_node[0].pk not in [c["node_id"] for c in body["categories"]]


def test_hidden_nodes_leave_contributions(api, hidden_node, owner):
    _, body = api.get("/api/contributions")
    assert hidden_node[0].pk not in [s["node_id"] for s in body["scores"]]
    _, me = api.get("/api/contributors/me", auth=owner.key)
    assert me["score"]["total"] == 0.0 and me["nodes"] == []


def test_hidden_nodes_get_no_tokens(api, hidden_node):
    status, body = api.post("/api/tokens", {"node_id": hidden_node[0].pk})
    assert status == 404 and body["code"] == "node_not_found"


def test_hidden_nodes_take_no_timing_uploads(api, live_node, hide):
    node, _ = live_node
    _, fresh = api.post("/api/tokens", {"node_id": node.pk})
    _, late = api.post("/api/tokens", {"node_id": node.pk})
    # `late` expired an hour ago: no longer outstanding, so hiding the node does not revoke it, but still
    # within the 24 h in which a tasting's timing may be uploaded.
    an_hour_ago = timezone.now() - timedelta(hours=1)
    TastingToken.objects.filter(jti=late["jti"]).update(
        issued_at=an_hour_ago - timedelta(minutes=15), expires_at=an_hour_ago
    )
    hide(node)
    timing = {"node_id": node.pk, "tok_per_sec": 3.0}

    status, body = api.post("/api/replay/timing", timing, auth=fresh["upload_key"])
    assert (status, body["code"]) == (401, "unauthorized") and "revoked" in body["error"]
    status, body = api.post("/api/replay/timing", timing, auth=late["upload_key"])
    assert (status, body["code"]) == (404, "node_not_found")
    assert not TimingSample.objects.exists()


def test_hidden_nodes_leave_the_metrics(api, live_node, hide):
    node, _ = live_node
    assert metric_nodes(api)["available"] == 1.0
    hide(node)
    assert set(metric_nodes(api).values()) == {0.0}  # every status still reported, none counting the node


def test_hidden_nodes_cannot_be_fingerprint_checked(api, hidden_node):
    status, body = api.post("/api/fingerprint/verify", {"node_id": hidden_node[0].pk})
    assert status == 404 and body["code"] == "node_not_found"


def test_hidden_nodes_do_not_count_for_rarity(api, owner, hidden_node):
    twin, _ = factories.make_node(
        owner, gpu=hidden_node[0].gpu, model_name=hidden_node[0].model_name, quantization=hidden_node[0].quantization
    )
    twin.refresh_from_db()
    assert twin.rarity_score == 1.0  # alone in its combination: the hidden twin is not counted


def test_takedown_and_node_bans_revoke_tokens_and_tell_the_agent(api, live_node, hide):
    node, secret = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk})
    _, other = api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="198.51.100.7")
    action = hide(node)
    assert action.details["tokens_revoked"] == 2
    # Its agent's next heartbeat is refused, and the refusal carries the jtis (a connected agent also gets them
    # at once: test_agent_link).
    status, refusal = api.post(f"/api/nodes/{node.pk}/heartbeat", {"queue": {"active": 0}}, auth=secret)
    assert status == 403 and sorted(refusal["revoked_jtis"]) == sorted([issued["jti"], other["jti"]])
    _, refused = api.post("/api/replay/timing", {"node_id": node.pk, "tok_per_sec": 1.0}, auth=issued["upload_key"])
    assert refused["code"] == "unauthorized"


def test_a_banned_contributor_gets_403_banned_on_tokens_registration_and_timing(api, live_node, taster):
    node, _ = live_node
    _, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)
    services.ban(kind="contributor", value=taster.id, moderator=MOD, reason="abusive prompts", days=7)
    for status, body in (
        api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key),
        api.post("/api/nodes", factories.node_fields(), auth=taster.key),
        api.post("/api/replay/timing", {"node_id": node.pk, "tok_per_sec": 1.0}, auth=issued["upload_key"]),
    ):
        assert status == 403 and body["code"] == "banned"
        assert body["ban"]["kind"] == "contributor" and body["ban"]["reason"] == "abusive prompts"
        assert body["ban"]["expires_at"].endswith("Z")


def test_a_banned_ip_is_refused_for_anonymous_requests(api, live_node):
    node, _ = live_node
    services.ban(kind="ip", value="198.51.100.99", moderator=MOD, reason="scraping")
    assert not Ban.objects.filter(value="198.51.100.99").exists()  # only the keyed hash is stored
    status, body = api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="198.51.100.99")
    assert status == 403 and body["code"] == "banned" and body["ban"]["expires_at"] is None
    assert api.post("/api/contributors", {}, REMOTE_ADDR="198.51.100.99")[0] == 403
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="198.51.100.98")[0] == 201


def test_expired_bans_stop_applying_by_themselves(api, banned_node):
    node, _ = banned_node
    assert api.get(f"/api/nodes/{node.pk}")[0] == 404
    Node.objects.filter(pk=node.pk).update(banned_until=timezone.now() - timedelta(seconds=1))
    Ban.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200
    assert api.post("/api/tokens", {"node_id": node.pk})[0] == 201


def test_unban_and_restore_bring_a_node_back(api, owner, banned_node):
    node, _ = banned_node
    services.unban(kind="node", value=node.pk, moderator=MOD, reason="appeal accepted")
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200
    services.take_down(node=node, moderator=MOD, reason="again")
    assert api.get(f"/api/nodes/{node.pk}")[0] == 404
    services.restore(node=node, moderator=MOD, reason="fixed")
    _, body = api.get("/api/nodes")
    assert node.pk in [n["id"] for n in body["nodes"]]


def test_an_address_ban_from_a_stored_hash_never_stores_a_raw_address(api, live_node):
    node, _ = live_node
    with pytest.raises(services.UnknownSubject, match="never stored unhashed"):
        services.ban(kind="ip", value="198.51.100.60", hashed=True, moderator=MOD, reason="a raw address, by mistake")
    with pytest.raises(services.UnknownSubject, match="only an ip ban"):
        services.ban(kind="contributor", value=hash_ip("198.51.100.60"), hashed=True, moderator=MOD, reason="x")
    assert not Ban.objects.exists()

    action = services.ban(kind="ip", value=hash_ip("198.51.100.60"), hashed=True, moderator=MOD, reason="flagged")
    assert Ban.objects.get().value == hash_ip("198.51.100.60")
    assert action.subject_id == address_label(hash_ip("198.51.100.60"))
    assert hash_ip("198.51.100.60")[:8] not in action.subject_id
    status, body = api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="198.51.100.60")
    assert (status, body["code"]) == (403, "banned")

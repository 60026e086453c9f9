"""One handler per agent message (tracker.agent_messages, moderation's flag): the same heartbeat, usage report or
flag gives the same answer over HTTP and over the agent link, each in its transport's envelope, and both
transports do the same around it (the agent's network is the owner's: docs/scoring.md)."""

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from core.clientip import hash_ip
from luckrig_site.asgi import application
from nodes.models import Node
from tests import factories

# As in tests/site/test_websockets.py: the data migrations survive the flush that transactional tests end with.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
BEAT = {"queue": {"active": 0, "waiting": 0, "max_active": 1}}
RIG_HOME = "198.51.100.7"


def agent_socket(secret, peer: str | None = None):
    link = WebsocketCommunicator(application, "/ws/agent/", headers=[(b"authorization", f"Bearer {secret}".encode())])
    if peer is not None:
        link.scope["client"] = [peer, 40000]
    return link


def over_link(secret, *messages, peer: str | None = None) -> list[dict]:
    """Send each message over a fresh agent link and return its answers (after the two on connecting)."""

    async def scenario():
        link = agent_socket(secret, peer)
        assert (await link.connect())[0]
        await link.receive_json_from(timeout=5)
        await link.receive_json_from(timeout=5)
        answers = []
        for message in messages:
            await link.send_json_to(message)
            answers.append(await link.receive_json_from(timeout=5))
        await link.disconnect()
        return answers

    return async_to_sync(scenario)()


def test_the_same_messages_get_the_same_answers_over_http_and_the_link(api, owner, taster):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    _, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=taster.key)
    usage = {"entries": [{"jti": issued["jti"], "requests": 1}]}
    flag = {"jti": issued["jti"], "stage": "input", "categories": ["x"]}

    statuses, (http_beat, http_usage, http_again, http_flag) = zip(
        api.post(f"/api/nodes/{node.pk}/heartbeat", BEAT, auth=secret),
        api.post(f"/api/nodes/{node.pk}/usage", {"report_id": "r-1", **usage}, auth=secret),
        api.post(f"/api/nodes/{node.pk}/usage", {"report_id": "r-1", **usage}, auth=secret),
        api.post("/api/moderation/flags", flag, auth=secret),
        strict=True,
    )
    link_beat, link_usage, link_again, link_flag = over_link(
        secret,
        {"type": "heartbeat", **BEAT},
        {"type": "usage", "report_id": "r-2", **usage},
        {"type": "usage", "report_id": "r-2", **usage},
        {"type": "flag", **flag},
    )

    assert statuses == (200, 202, 202, 202)
    rules = http_beat["filter_rules_version"]
    policy = {"visibility": "public", "owner_id": node.owner_id, "circles": [], "circle_only_hours": []}  # issue 15
    assert http_beat == {
        "schema_version": 1,
        "status": "available",
        "filter_rules_version": rules,
        "revoked_jtis": [],
        **policy,
    }
    assert link_beat == {
        "type": "heartbeat_ack",
        "status": "available",
        "filter_rules_version": rules,
        "revoked_jtis": [],
        **policy,
    }
    assert http_usage == {"schema_version": 1, "accepted": 1, "ignored": 0, "duplicate": False}
    assert link_usage == {"type": "usage_ack", "report_id": "r-2", "accepted": 1, "ignored": 0, "duplicate": False}
    assert http_again == {"schema_version": 1, "accepted": 0, "ignored": 0, "duplicate": True}
    assert link_again == {"type": "usage_ack", "report_id": "r-2", "accepted": 0, "ignored": 0, "duplicate": True}
    assert http_flag == {"schema_version": 1, "ok": True, "flag_id": http_flag["flag_id"]}
    assert link_flag == {"type": "flag_ack", "flag_id": http_flag["flag_id"] + 1}


def test_an_agent_on_the_link_only_marks_its_network_as_the_owners_as_over_http(api, owner):
    """They had drifted: an agent's HTTP calls marked its network as the owner's, its link did not, so tokens the
    owner took from the rig's own network (under another identity) counted as someone else's tasting."""
    over_http, secret_a = factories.make_node(owner, gpu="Tesla K80")
    over_link_only, secret_b = factories.make_node(owner, gpu="Tesla P40")
    assert api.post(f"/api/nodes/{over_http.pk}/heartbeat", BEAT, auth=secret_a, REMOTE_ADDR=RIG_HOME)[0] == 200
    over_link(secret_b, {"type": "heartbeat", **BEAT}, peer=RIG_HOME)

    for node in (over_http, over_link_only):
        assert hash_ip(RIG_HOME) in Node.objects.get(pk=node.pk).owner_networks, node.pk
    # A token asked for from the rig's network is the owner's own, whoever asks.
    _, issued = api.post("/api/tokens", {"node_id": over_link_only.pk}, REMOTE_ADDR=RIG_HOME)
    over_link(secret_b, {"type": "usage", "report_id": "r-1", "entries": [{"jti": issued["jti"], "requests": 3}]})
    assert Node.objects.get(pk=over_link_only.pk).usage_requests == 0

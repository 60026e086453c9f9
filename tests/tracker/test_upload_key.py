"""The taster's own credential: `POST /api/tokens` returns an upload key beside the tasting token, and only the
upload key may upload the tasting's timing or publish its replay. The node operator necessarily holds the
tasting token (every request to the rig carries it), so the token alone must never speak for the taster."""

import hashlib
from datetime import timedelta

import jwt
import pytest
from django.utils import timezone

from nodes.models import TimingSample
from showcase.models import Replay
from tests.showcase.conftest import replay_file
from tracker.models import TastingToken

pytestmark = pytest.mark.django_db


def token_for(api, node, key=None, ip="192.0.2.70"):
    status, body = api.post("/api/tokens", {"node_id": node.id}, auth=key, REMOTE_ADDR=ip)
    assert status == 201, body
    return body


def test_a_token_comes_with_an_upload_key_stored_only_as_its_hash(api, live_node):
    node, _ = live_node
    issued = token_for(api, node)
    key = issued["upload_key"]
    assert key.startswith("lru_") and len(key) == 4 + 43  # 32 random bytes, b64url without padding
    row = TastingToken.objects.get(jti=issued["jti"])
    assert row.upload_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(TastingToken.objects.filter(jti=issued["jti"]).values().get())
    # Never sent to the node: the token (all the node ever sees) does not carry it in any form.
    claims = jwt.decode(issued["token"], options={"verify_signature": False})
    assert key not in issued["token"] and key not in str(claims) and row.upload_key_hash not in str(claims)
    assert token_for(api, node, ip="192.0.2.71")["upload_key"] != key


def test_the_node_operator_cannot_upload_timing_with_the_tasting_token(api, live_node, taster):
    """The attack: the operator copies the token from a request its agent served and replays it against the
    tracker to publish made-up "community" numbers under the taster's name."""
    node, _ = live_node
    issued = token_for(api, node, taster.key)
    fake = {"node_id": node.id, "tok_per_sec": 900.0, "ttft_ms": 1.0}
    status, body = api.post("/api/replay/timing", fake, auth=issued["token"])
    assert (status, body["code"]) == (401, "invalid_credential") and api.last["WWW-Authenticate"] == "Bearer"
    assert not TimingSample.objects.exists()
    status, body = api.post("/api/replay/timing", {"node_id": node.id, "tok_per_sec": 40.0}, auth=issued["upload_key"])
    assert status == 201, body
    status, body = api.post("/api/replay/timing", {"node_id": node.id, "tok_per_sec": 41.0}, auth=issued["upload_key"])
    assert (status, body["code"]) == (409, "already_uploaded")


def test_the_node_operator_cannot_publish_a_replay_under_the_tasters_id(api, live_node, taster):
    node, _ = live_node
    issued = token_for(api, node, taster.key)
    forged = replay_file(node, prompt="What the taster never asked", response="What the rig never said")
    status, body = api.post("/api/replays", forged, auth=issued["token"])
    assert (status, body["code"]) == (401, "invalid_credential")
    assert not Replay.objects.exists()
    status, body = api.post("/api/replays", replay_file(node), auth=issued["upload_key"])
    assert status == 201, body
    assert Replay.objects.get().contributor_id == taster.id
    status, body = api.post("/api/replays", replay_file(node), auth=issued["upload_key"])
    assert (status, body["code"]) == (409, "already_published")


@pytest.mark.parametrize("path", ["/api/replay/timing", "/api/replays"])
def test_anything_but_a_known_upload_key_is_refused(api, live_node, owner, path):
    node, _ = live_node
    issued = token_for(api, node)
    body = replay_file(node) if path == "/api/replays" else {"node_id": node.id, "tok_per_sec": 3.0}
    assert api.post(path, body)[1]["code"] == "unauthorized"
    for wrong in (owner.key, "not.a.jwt", "lru_" + "A" * 43, issued["upload_key"] + "x", issued["upload_key"][:-1]):
        status, err = api.post(path, body, auth=wrong)
        assert (status, err["code"]) == (401, "invalid_credential"), wrong


@pytest.mark.parametrize("path", ["/api/replay/timing", "/api/replays"])
def test_a_revoked_or_long_expired_tasting_takes_no_uploads(api, live_node, path):
    node, _ = live_node
    body = replay_file(node) if path == "/api/replays" else {"node_id": node.id, "tok_per_sec": 3.0}
    revoked = token_for(api, node, ip="192.0.2.72")
    TastingToken.objects.filter(jti=revoked["jti"]).update(revoked_at=timezone.now())
    status, err = api.post(path, body, auth=revoked["upload_key"])
    assert status == 401 and "revoked" in err["error"]
    # Measurements and replays may come up to a day after the token expired, not later.
    late = token_for(api, node, ip="192.0.2.73")
    ago = timezone.now() - timedelta(hours=23)
    TastingToken.objects.filter(jti=late["jti"]).update(issued_at=ago - timedelta(minutes=15), expires_at=ago)
    assert api.post(path, body, auth=late["upload_key"])[0] == 201
    old = token_for(api, node, ip="192.0.2.74")
    ago = timezone.now() - timedelta(hours=25)
    TastingToken.objects.filter(jti=old["jti"]).update(issued_at=ago - timedelta(minutes=15), expires_at=ago)
    status, err = api.post(path, body, auth=old["upload_key"])
    assert status == 401 and "expired" in err["error"]


def test_an_upload_key_speaks_only_for_its_own_node(api, live_node, owner):
    from tests import factories

    node, _ = live_node
    other, other_secret = factories.make_node(owner, gpu="Intel Arc A770")
    factories.heartbeat(api, other, other_secret)
    issued = token_for(api, other)
    status, err = api.post("/api/replay/timing", {"node_id": node.id, "tok_per_sec": 3.0}, auth=issued["upload_key"])
    assert (status, err["code"]) == (403, "wrong_node")

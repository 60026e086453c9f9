"""Helpers for the replay tests: tasting tokens from distinct addresses (the anonymous daily quota is per IP)
and replay files shaped like the ones `luckrig-node taste` saves."""

import itertools

import pytest
from django.utils import timezone

from core.timefmt import iso

_addresses = itertools.count(10)


def token_for(api, node, *, auth: str | None = None) -> dict:
    status, issued = api.post("/api/tokens", {"node_id": node.pk}, auth=auth, REMOTE_ADDR=f"192.0.2.{next(_addresses)}")
    assert status == 201, issued
    return issued


def replay_file(node, **overrides) -> dict:
    body = {
        "schema_version": 1,
        "node_id": node.pk,
        "created_at": iso(timezone.now()),
        "prompt": "Write a haiku about a GPU fan.",
        "response": "Blades hum in the dark\nwarm air climbs the silent case\ntokens fall like rain",
        "chunk_timestamps": [312.4, 340.1, 365.0, 365.0, 401.7],
        "timing": {"mode": "plain", "tok_per_sec": 41.5, "ttft_ms": 312.4, "output_tokens": 21},
    }
    body.update(overrides)
    return body


@pytest.fixture
def publish(api):
    """publish(node, upload_key=None, **file overrides) -> (status, body); a fresh tasting's upload key unless one
    is given."""

    def go(node, upload_key: str | None = None, **overrides):
        upload_key = upload_key or token_for(api, node)["upload_key"]
        return api.post("/api/replays", replay_file(node, **overrides), auth=upload_key)

    return go

"""Rigs for browser tests that need no agent: registered over HTTP and reported in with one heartbeat, so that
the site lists them `available` (until three heartbeat intervals pass: 6 s on the test site)."""

import requests


def listed_node(site, endpoint: str | None, **fields) -> str:
    """A node at `endpoint` (None: relayed) that has just reported in; returns its id."""
    key = site.contributor()
    node_id, secret = site.register(key, endpoint, **fields)
    beat = requests.post(
        f"{site.base}/api/nodes/{node_id}/heartbeat",
        json={"queue": {"active": 0, "waiting": 0, "max_active": 1}, "models": ["smollm2-fake"]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    beat.raise_for_status()
    return node_id

"""Fake upstreams and real agent processes for the node-agent tests. The tracker, `start_agent`, `start_relay` and
`fake_upstream` fixtures are in tests/conftest.py, shared with the relay tests; the machinery is in tests/agents.py,
shared with the browser tests too."""

import pytest

from node_agent import keys
from tests.agents import AgentProcess, AgentStarter, Tracker
from tests.node_agent import public_key_rig
from tests.node_agent.fakes import FakeModeration, FakeTracker

__all__ = ["AgentProcess", "Tracker"]  # imported from here by some tests


@pytest.fixture
def moderation():
    with FakeModeration() as fake:
        yield fake


# The agent's link as the tracker sees it: a fake tracker that records every message and heartbeat as sent.
@pytest.fixture
def fake_tracker():
    with FakeTracker() as fake:
        yield fake


@pytest.fixture
def start_linked_agent(fake_tracker, tmp_path):
    """start_linked_agent(upstream_url, **flags) → an agent process whose tracker is the fake one."""
    starter = AgentStarter(None, tmp_path)

    def start(upstream: str, **flags):
        node = (fake_tracker.node_id, fake_tracker.node_secret)
        return starter.start(upstream, node=node, tracker_url=fake_tracker.base, wait_online=False, **flags)

    yield start
    starter.stop_all()


# Public-key mode: a rig whose agent holds a node key (tests/node_agent/test_public_key_*.py).
@pytest.fixture
def start_rig(tracker, start_agent, tmp_path):
    def start(upstream: str, **flags) -> "public_key_rig.Rig":
        key_file = tmp_path / f"node-{len(list(tmp_path.glob('node-*.pem')))}.pem"
        node_pem, fingerprint = keys.generate(key_file)
        agent = start_agent(upstream, register={"node_public_key": node_pem}, node_private_key_file=key_file, **flags)
        return public_key_rig.Rig(tracker, agent, node_pem, fingerprint)

    return start


@pytest.fixture
def rig(start_rig, fake_upstream):
    return start_rig(fake_upstream.base)

"""A real tracker (Daphne), fake upstreams, and real agent processes for the node-agent tests. The machinery
lives in tests/agents.py, shared with the browser tests."""

import pytest

from node_agent import keys
from tests.agents import AgentProcess, AgentStarter, Tracker, running_tracker
from tests.node_agent import public_key_rig
from tests.node_agent.fakes import FakeModeration, FakeOpenAI

__all__ = ["AgentProcess", "Tracker"]  # imported from here by some tests


@pytest.fixture(scope="session")
def tracker(tmp_path_factory):
    """One tracker for the agent tests: generous quotas, private URLs allowed (everything is on 127.0.0.1)."""
    with running_tracker(tmp_path_factory.mktemp("tracker")) as tracker:
        yield tracker


@pytest.fixture
def start_agent(tracker, tmp_path):
    """start_agent(upstream_url, **flags) → a running agent process joined to the tracker."""
    starter = AgentStarter(tracker, tmp_path)
    yield starter.start
    starter.stop_all()


@pytest.fixture
def fake_upstream():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def moderation():
    with FakeModeration() as fake:
        yield fake


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

"""The agent keeps serving tasters while the tracker is down, and nothing it owes the tracker is lost."""

import pytest
import requests

from tests.node_agent.fakes import wait_until
from tests.processes import daphne, free_port, migrate, tracker_env

pytestmark = pytest.mark.agent


def test_tokens_verify_offline_and_usage_survives_an_outage_and_a_restart(tmp_path, fake_upstream, start_agent):
    from tests.node_agent.conftest import Tracker

    db = f"sqlite:///{tmp_path / 'outage.sqlite3'}"
    env = tracker_env(db, tmp_path, ALLOW_PRIVATE_NODE_URLS="1", LIMITED_TOKENS_PER_DAY="1000")
    migrate(env)
    port = free_port()
    with daphne(env, port=port) as base:
        tracker = Tracker(base, tmp_path, db)
        # start_agent's own tracker fixture is not this one: register here and hand the node over.
        key = tracker.contributor()
        agent_port = free_port()
        node = tracker.register(key, f"http://127.0.0.1:{agent_port}/v1")
        agent = start_agent(fake_upstream.base, node=node, port=agent_port, wait_online=False, tracker_url=base)
        assert wait_until(lambda: tracker.node(node[0])["health"]["status"] == "available")
        first, second = tracker.token(node[0]), tracker.token(node[0])

    # The tracker is down. Tokens it issued still work: the agent verifies them offline.
    def ask(agent, token):
        return requests.post(
            agent.v1 + "/chat/completions",
            timeout=20,
            headers={"Authorization": f"Bearer {token}"},
            json={"messages": [{"role": "user", "content": "hi"}]},
        )

    assert ask(agent, first["token"]).status_code == 200
    # An agent restarted during the outage starts from its cached keys.
    agent.proc.terminate()
    agent.proc.wait(10)
    agent = start_agent(
        fake_upstream.base, node=node, port=agent_port, wait_online=False, tracker_url=base, config_dir=agent.config_dir
    )
    assert ask(agent, second["token"]).status_code == 200
    assert "using cached keys" in agent.log()

    # The tracker comes back on the same address: heartbeats resume and both requests are credited.
    with daphne(env, port=port):

        def credited():
            from tests.node_agent.test_serving import served_at

            return served_at(tracker, node[0]) == 2

        assert wait_until(lambda: tracker.node(node[0])["health"]["status"] == "available", timeout=30)
        # Promptly: the usage report, backing off since the outage began, is retried as soon as a heartbeat gets
        # through again, and the batch formed before the restart is followed by the lines after it at once (the
        # second waited for the next wake-up, 30 s, before).
        assert wait_until(credited, timeout=10), agent.log()

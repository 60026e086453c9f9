"""A rig alone in a network namespace, for tests/node_agent/test_lan.py: a fake upstream and a fake tracker on the
namespace's loopback, and the agent (`luckrig-node serve --lan`, this process) in front of them. Run as
`ip netns exec NS python -m tests.node_agent.lan_rig CONFIG_DIR PORT`; SIGTERM stops it as it stops any agent.

`... lan_rig CONFIG_DIR PORT local HOST` is a local rig (tests/node_agent/test_local_home.py): no tracker anywhere,
`serve --visibility local --lan --host HOST`, its fake model server streaming three chunks a second (a stream is
still going when the test stops the rig)."""

import sys

from node_agent import cli
from tests.node_agent.fakes import FakeOpenAI, FakeTracker


def main(config_dir: str, port: str, mode: str = "", host: str = "") -> int:
    if mode == "local":
        return local(config_dir, port, host)
    with FakeOpenAI() as upstream, FakeTracker() as tracker:
        tracker.radius = {"visibility": "public"}
        return cli.main(
            [
                "serve",
                "--tracker",
                tracker.base,
                "--node-id",
                tracker.node_id,
                "--node-secret",
                tracker.node_secret,
                "--upstream",
                upstream.base,
                "--backend",
                "openai",
                "--relay",
                "off",
                "--host",
                "0.0.0.0",  # noqa: S104 - the namespace's own addresses: the other namespace connects
                "--port",
                port,
                "--config-dir",
                config_dir,
                "--lan",
            ]
        )


def local(config_dir: str, port: str, host: str) -> int:
    with FakeOpenAI() as upstream:
        upstream.rate = 3.0
        serve = ["serve", "--visibility", "local", "--upstream", upstream.base, "--backend", "openai", "--lan"]
        return cli.main([*serve, "--host", host, "--port", port, "--config-dir", config_dir])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""Circles end to end, with every part real: `luckrig-node join --visibility circle --circle NAME` against the
session's tracker makes the circle, registers the rig in it and prints an invite; strangers get nothing; a friend
joins by the link, gets a circle token and tastes through the agent with the OpenAI SDK and `luckrig-node taste`;
`luckrig-node circle members` shows them and `circle remove` removes them, which revokes their token at the agent
within the revocation push."""

import re
import subprocess
import threading

import openai
import pytest
import requests

from node_agent import cli
from tests.node_agent.fakes import wait_until
from tests.node_agent.test_join import join, saved
from tests.node_agent.test_taste import replay_of, taste
from tests.processes import free_port

pytestmark = pytest.mark.agent


def call(tracker, method: str, path: str, key: str | None = None, **body):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(method, f"{tracker.base}{path}", json=body or None, headers=headers, timeout=10)


def test_a_circle_rig_joined_from_the_cli_serves_its_friends_only_and_a_removed_friend_at_once(
    tracker, fake_upstream, tmp_path, capsys
):
    config_dir, port = tmp_path / "config", free_port()
    proc = join(
        tracker.base,
        config_dir,
        *("--upstream", fake_upstream.base, "--port", str(port), "--gpu", "Fake GPU circle"),
        *("--visibility", "circle", "--circle", "Flatmates", "--heartbeat-interval", "1"),
        *("--public-url", f"http://127.0.0.1:{port}/v1"),
        serve=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    drain = threading.Thread()
    try:
        # The invite is printed before serving starts; read up to the sentence after its link.
        for line in proc.stdout:
            lines.append(line)
            if "Anyone with this link" in line or len(lines) > 200:
                break
        out = "".join(lines)
        # Keep draining the agent's output, so that a full pipe never blocks it.
        drain = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        drain.start()
        code = re.search(r"/join/(lri_[A-Za-z0-9_-]+)", out).group(1)
        assert "Anyone with this link can join Flatmates" in out
        node, identity = saved(config_dir)
        node_id, owner_key = node["node_id"], identity["contributor_key"]
        assert node["visibility"] == "circle" and len(node["circle"]) == 1  # pinned in agent.json

        def owner_view():
            r = call(tracker, "GET", f"/api/nodes/{node_id}", owner_key)
            return r.json()["node"] if r.status_code == 200 else {}

        assert wait_until(lambda: owner_view().get("health", {}).get("status") == "available", timeout=30)
        circle = owner_view()["circles"][0]
        assert circle["name"] == "Flatmates"

        # Strangers: nothing to see, no token.
        assert call(tracker, "GET", f"/api/nodes/{node_id}").status_code == 404
        assert call(tracker, "POST", "/api/tokens", node_id=node_id).json()["code"] == "node_not_found"
        stranger = tracker.contributor()
        refused = call(tracker, "POST", "/api/tokens", stranger, node_id=node_id)
        assert (refused.status_code, refused.json()["code"]) == (403, "not_in_circle")
        assert node_id not in [n["id"] for n in call(tracker, "GET", "/api/nodes?page_size=200").json()["nodes"]]

        # A friend joins by the link and tastes with the OpenAI SDK.
        friend = tracker.contributor()
        joined = call(tracker, "POST", f"/api/circles/invites/{code}/join", friend)
        assert joined.status_code == 201, joined.text
        friend_id = joined.json()["membership"]["contributor"]["id"]
        issued = call(tracker, "POST", "/api/tokens", friend, node_id=node_id)
        assert issued.status_code == 201, issued.text
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=issued.json()["token"], max_retries=0)
        answer = client.chat.completions.create(
            model="smollm2-fake", messages=[{"role": "user", "content": "hello friends"}]
        )
        assert answer.choices[0].message.content
        # The CLI too: `luckrig-node taste --node` with the friend's key gets a circle token and the answer.
        out, err = taste(tracker, node_id, tmp_path / "friend-home", "--contributor-key", friend)
        assert out.strip() and f"Tasting {node_id}" in err and replay_of(tmp_path / "friend-home")["node_id"] == node_id
        # The link was single-use: a second person cannot join with it.
        again = call(tracker, "POST", f"/api/circles/invites/{code}/join", stranger)
        assert (again.status_code, again.json()["code"]) == (410, "invite_gone")

        # The owner looks at the members and removes the friend from the command line (the saved config's key and
        # circle): the friend's live token stops working at the agent within the revocation push.
        assert cli.main(["circle", "members", "--config-dir", str(config_dir)]) == 0
        rows = capsys.readouterr().out.splitlines()
        assert rows[0] == f"Circle Flatmates ({circle['id']}):"
        assert any(row.split()[:3] == [friend_id, "member", "active"] for row in rows), rows
        assert cli.main(["circle", "remove", friend_id, "--config-dir", str(config_dir)]) == 0
        assert capsys.readouterr().out.startswith(f"Removed {friend_id} from Flatmates")

        def refused_at_the_agent() -> bool:
            try:
                client.chat.completions.create(model="smollm2-fake", messages=[{"role": "user", "content": "again"}])
            except openai.AuthenticationError:
                return True
            return False

        assert wait_until(refused_at_the_agent, timeout=10)
        gone = call(tracker, "POST", "/api/tokens", friend, node_id=node_id)
        assert (gone.status_code, gone.json()["code"]) == (403, "not_in_circle")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if drain.ident is not None:
            drain.join(timeout=5)
    log = "".join(lines)
    assert "lrk_" not in log and "lrn_" not in log

"""Relayed rigs end to end, with real processes: the tracker (Daphne), `luckrig-relay`, and `luckrig-node` agents
that listen on the loopback interface only and dial out to their relay, in front of the suite's fake upstream. The
OpenAI SDK is the taster. Slow by nature (processes): each test checks several things a user would notice."""

import json
import os
import signal
import subprocess
import sys
import time

import jwt
import openai
import pytest
import requests

from node_agent import keys
from relay.routes import rendezvous_pick
from tests.node_agent.public_key_rig import Rig
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.relay


def eventually(predicate, timeout: float) -> None:
    """Wait (bounded) until `predicate()` is true; a connection refused meanwhile counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.1)


def sdk(agent, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=agent.v1, api_key=token, max_retries=0, timeout=30)


def relay_samples(tracker, node_id: str) -> int:
    return (tracker.node(node_id)["community_timing"].get("by_source") or {}).get("relay", 0)


def test_a_relayed_rig_is_tasted_through_its_relay_as_if_direct(tracker, start_relay, start_agent, fake_upstream):
    relay = start_relay.start()
    fake_upstream.words = [f"w{i} " for i in range(8)]
    agent = start_agent(fake_upstream.base, relayed=True)
    node = tracker.node(agent.node_id)
    assert node["reachability"] == "relayed"
    assert node["endpoint_url"] == f"{relay.base}/n/{agent.node_id}/v1" == agent.v1

    issued = tracker.token(agent.node_id)
    client = sdk(agent, issued["token"])
    # Streaming, chunk by chunk, with the agent's own final chunk (usage and the luckrig object).
    stream = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hello"}], stream=True, extra_body={"seed": 1}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fake_upstream.text()
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].model_extra["luckrig"]["node_id"] == agent.node_id
    # Not streaming, and the other paths: byte for byte what the agent itself answers.
    done = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "again"}])
    assert done.choices[0].message.content == fake_upstream.text()
    assert [m.id for m in client.models.list()] == [
        m.id for m in openai.OpenAI(base_url=agent.base + "/v1", api_key="-").models.list()
    ]
    through = requests.get(agent.public + "/health", timeout=5)
    direct = requests.get(agent.base + "/health", timeout=5).json()
    assert through.status_code == 200 and through.json()["node_id"] == direct["node_id"] == agent.node_id
    assert direct["reachability"] == {"reachability": "relayed", "tunnel": "open", "relay_id": relay.relay_id}
    assert through.headers["Access-Control-Allow-Origin"] == "*"
    # The agent's refusals arrive as the agent words them (the relay refuses this one before the tunnel).
    direct = start_agent(fake_upstream.base)
    eventually(
        lambda: requests.get(direct.base + "/health", timeout=2).json()["reachability"] == {"reachability": "direct"},
        10,
    )
    off = start_agent(fake_upstream.base, relay="off")
    assert requests.get(off.base + "/health", timeout=2).json()["reachability"] == {"relay": "off"}
    other = tracker.token(direct.node_id)["token"]
    r = requests.post(
        agent.v1 + "/chat/completions", json={"messages": []}, headers={"Authorization": f"Bearer {other}"}, timeout=5
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_node"
    # A revoked or budget-exhausted token is the agent's call: it crosses the tunnel and comes back as it was.
    r = requests.post(
        agent.v1 + "/chat/completions",
        data=b"{not json",
        headers={"Authorization": f"Bearer {issued['token']}"},
        timeout=5,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"

    # The relay witnessed the streamed tasting: a community-timing sample marked `relay`, and the usage the agent
    # reported. Prompts never reach the relay's log.
    eventually(lambda: relay_samples(tracker, agent.node_id) >= 1, timeout=15)
    assert "hello" not in relay.log() and "w3" not in relay.log()
    jti = jwt.decode(issued["token"], options={"verify_signature": False})["jti"]
    rows = tracker.execute("SELECT source, ttft_ms, output_tokens FROM nodes_timingsample WHERE jti = %s", (jti,))
    assert rows and rows[0][0] == "relay" and rows[0][1] > 0 and rows[0][2] == 8


def test_queue_comments_and_a_hang_up_through_the_relay(tracker, start_relay, start_agent, fake_upstream):
    start_relay.start()
    fake_upstream.words = [f"w{i} " for i in range(200)]
    fake_upstream.delay = 0.05
    agent = start_agent(fake_upstream.base, relayed=True, max_active=1)
    headers = lambda: {"Authorization": f"Bearer {tracker.token(agent.node_id)['token']}"}  # noqa: E731
    body = {"messages": [{"role": "user", "content": "long"}], "stream": True}
    first = requests.post(agent.v1 + "/chat/completions", json=body, headers=headers(), stream=True, timeout=30)
    lines = first.iter_lines()
    assert next(line for line in lines if line.startswith(b"data: {"))  # the first is generating
    second = requests.post(agent.v1 + "/chat/completions", json=body, headers=headers(), stream=True, timeout=30)
    assert next(second.iter_lines()).startswith(b": queue position=1")  # the agent's queue comment, relayed
    second.close()
    # The generating taster hangs up: the rig's slot is free within a second, the upstream request closed.
    first.close()
    started = time.monotonic()
    eventually(lambda: requests.get(agent.base + "/health", timeout=2).json()["queue"]["active"] == 0, timeout=3)
    eventually(lambda: fake_upstream.active == 0, timeout=3)
    assert time.monotonic() - started < 1.5


def test_an_agent_killed_mid_stream_ends_the_stream_and_its_rig_turns_unavailable(
    tracker, start_relay, start_agent, fake_upstream
):
    start_relay.start()
    fake_upstream.words = [f"w{i} " for i in range(400)]
    fake_upstream.delay = 0.05
    agent = start_agent(fake_upstream.base, relayed=True)
    client = sdk(agent, tracker.token(agent.node_id)["token"])
    stream = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "go"}], stream=True)
    got = []
    with pytest.raises(openai.APIError) as failure:  # the SDK raises on the relay's error chunk
        for chunk in stream:
            got.append(chunk)
            if len(got) == 3:
                agent.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
    assert time.monotonic() - killed < 5
    assert "upstream_unavailable" in str(failure.value.body) or "tunnel" in str(failure.value)
    # The relay tells the tracker at its next heartbeat (every second here): unavailable without a probe.
    eventually(lambda: tracker.node(agent.node_id)["health"]["status"] == "unavailable", timeout=15)
    r = requests.post(
        agent.v1 + "/chat/completions", json={"messages": []}, headers={"Authorization": "Bearer x.y.z"}, timeout=5
    )
    assert r.status_code in (401, 503)


def test_a_restarted_relay_gets_its_rigs_back_and_public_key_mode_crosses_it_sealed(
    tracker, start_relay, start_agent, fake_upstream, tmp_path
):
    relay = start_relay.start()
    node_pem, fingerprint = keys.generate(tmp_path / "node.pem")
    agent = start_agent(
        fake_upstream.base,
        relayed=True,
        register={"node_public_key": node_pem},
        node_private_key_file=tmp_path / "node.pem",
    )
    rig = Rig(tracker, agent, node_pem, fingerprint)

    def taste_sealed(question: str) -> str:
        issued = rig.token()
        r = rig.post(issued, rig.seal(issued, messages=[{"role": "user", "content": question}]))
        assert r.status_code == 200, r.text
        assert question not in r.text
        return rig.open(issued, r.json()["choices"][0]["message"]["content"])["content"]

    assert taste_sealed("a secret question") == fake_upstream.text()  # public-key mode, through the relay
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait(10)
    killed = time.monotonic()
    start_relay.restart(relay)
    eventually(lambda: requests.get(agent.public + "/health", timeout=2).status_code == 200, timeout=30)
    eventually(lambda: tracker.node(agent.node_id)["health"]["status"] == "available", timeout=30)
    assert time.monotonic() - killed < 30
    assert taste_sealed("another one") == fake_upstream.text()
    assert "secret question" not in relay.log()


def test_two_relays_share_the_nodes_and_one_takes_over_when_the_other_stops(
    tracker, start_relay, start_agent, fake_upstream
):
    a, b = start_relay.start(), start_relay.start()
    eventually(lambda: {r["relay_id"] for r in live_relays(tracker)} >= {a.relay_id, b.relay_id}, timeout=10)
    # Ids chosen so that rendezvous hashing puts two nodes on each relay.
    wanted = {a.relay_id: [], b.relay_id: []}
    for i in range(200):
        node_id = f"shard-{os.getpid()}-{i}"
        pick = rendezvous_pick(node_id, [a.relay_id, b.relay_id])
        if len(wanted[pick]) < 2:
            wanted[pick].append(node_id)
        if all(len(v) == 2 for v in wanted.values()):
            break
    agents = {
        node_id: start_agent(fake_upstream.base, relayed=True, register={"id": node_id})
        for ids in wanted.values()
        for node_id in ids
    }
    for relay in (a, b):
        for node_id in wanted[relay.relay_id]:
            assert agents[node_id].public == f"{relay.base}/n/{node_id}"
            assert taste(tracker, agents[node_id].public, node_id) == fake_upstream.text()
    # Relay a stops (SIGTERM: it drains and tells the tracker): its nodes move to b within a minute.
    a.proc.terminate()
    a.proc.wait(30)
    stopped = time.monotonic()
    for node_id in wanted[a.relay_id]:
        eventually(
            lambda node_id=node_id: requests.get(f"{b.base}/n/{node_id}/health", timeout=2).status_code == 200,
            timeout=60,
        )
        # The tunnel is open at b before b's next report tells the tracker the rig is back (a token for it is
        # refused as node_unavailable in between): wait for the tracker too, still within the minute.
        eventually(lambda node_id=node_id: tracker.node(node_id)["health"]["status"] != "unavailable", timeout=60)
        assert tracker.node(node_id)["endpoint_url"] == f"{b.base}/n/{node_id}/v1"
        assert taste(tracker, f"{b.base}/n/{node_id}", node_id) == fake_upstream.text()
    assert time.monotonic() - stopped < 60
    # Asking the wrong relay names the right one.
    moved = wanted[b.relay_id][0]
    assert requests.get(f"{b.base}/n/{moved}/health", timeout=2).status_code == 200


def test_join_registers_a_relayed_rig_and_says_where_tasters_reach_it(tracker, start_relay, fake_upstream, tmp_path):
    relay = start_relay.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")}
    env["LUCKRIG_AGENT_PROBE_URLS"] = fake_upstream.base
    proc = subprocess.Popen(
        [sys.executable, "-m", "node_agent", "join", "--tracker", tracker.base, "--config-dir", str(tmp_path / "cfg"),
         "--port", str(port), "--gpu", f"Relayed GPU {port}", "--heartbeat-interval", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out = []
        deadline = time.monotonic() + 30
        while not any("Tasters reach it at" in line for line in out):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(out)
            out.append(proc.stdout.readline())
        text = "".join(out)
        node_id = json.loads((tmp_path / "cfg" / "agent.json").read_text())["node_id"]
        assert "relayed: the agent dials out to a relay, no open port needed" in text
        assert f"Tasters reach it at {relay.base}/n/{node_id}/v1" in text
        eventually(lambda: requests.get(f"{relay.base}/n/{node_id}/health", timeout=2).status_code == 200, timeout=30)
        eventually(lambda: tracker.node(node_id)["health"]["status"] == "available", timeout=30)
        assert taste(tracker, f"{relay.base}/n/{node_id}", node_id) == fake_upstream.text()
        assert keys  # the node key pair was made by join (public-key mode works relayed too)
    finally:
        proc.terminate()
        proc.wait(20)


def live_relays(tracker) -> list[dict]:
    out = tracker.manage("relay", "list")
    return [{"relay_id": line.split("\t")[0]} for line in out.splitlines() if "\tlive\t" in line]


def taste(tracker, public: str, node_id: str) -> str:
    token = tracker.token(node_id)["token"]
    done = openai.OpenAI(base_url=public + "/v1", api_key=token, max_retries=0, timeout=30).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hi"}]
    )
    return done.choices[0].message.content

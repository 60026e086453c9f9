"""`luckrig-node taste --mode public-key` against a real agent: the decrypted answer, the replay, the fingerprint
check."""

import json

import pytest

from tests.node_agent.fakes import wait_until

pytestmark = pytest.mark.agent


# --- the CLI ------------------------------------------------------------------------------------------------------


def taste(tracker, node_id, tmp_path, *extra):
    from tests.node_agent.test_cli import cli

    return cli(
        "taste",
        "--tracker",
        tracker.base,
        "--node",
        node_id,
        "--config-dir",
        str(tmp_path / "cfg"),
        "--history-dir",
        str(tmp_path / "history"),
        "--mode",
        "public-key",
        *extra,
        config_dir=tmp_path,
    )


def test_taste_in_public_key_mode_prints_the_decrypted_answer_and_saves_the_replay(
    rig, tracker, fake_upstream, tmp_path
):
    fake_upstream.delay = 0.02
    result = taste(
        tracker,
        rig.agent.node_id,
        tmp_path,
        "--system",
        "Be brief.",
        "--expect-fingerprint",
        rig.fingerprint,
        "--share-timing",
        "say something",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == fake_upstream.text().strip()
    assert f"Node key fingerprint: {rig.fingerprint}" in result.stderr
    assert "arrives in one piece" in result.stderr and "tok/s" in result.stderr and "Shared the timing" in result.stderr
    sent = fake_upstream.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "say something"},
    ]
    [replay_file] = (tmp_path / "history").glob(f"*_{rig.agent.node_id}.json")
    replay = json.loads(replay_file.read_text())
    assert replay["prompt"] == "say something" and replay["system"] == "Be brief."
    assert replay["response"] == fake_upstream.text() and len(replay["chunk_timestamps"]) == 1
    timing = replay["timing"]
    assert timing["mode"] == "public-key" and timing["output_tokens"] == 12 and timing["tok_per_sec"] > 0
    assert timing["ttft_ms"] >= timing["network_ttft_ms"] > 0
    # The sample counts once the agent's usage report shows the token was used at the node (docs/scoring.md).
    assert wait_until(lambda: tracker.node(rig.agent.node_id)["community_timing"]["samples_count"] == 1, timeout=15)
    [(mode, ttft)] = tracker.execute(
        "SELECT mode, ttft_ms FROM nodes_timingsample WHERE node_id = %s", (rig.agent.node_id,)
    )
    assert mode == "public-key" and ttft is None  # not a first-token time: kept out of the TTFT median


def test_taste_refuses_to_send_when_the_fingerprint_is_not_the_expected_one(rig, tracker, fake_upstream, tmp_path):
    other = "sha256:" + "A" * 43
    result = taste(tracker, rig.agent.node_id, tmp_path, "--expect-fingerprint", other, "secret prompt")
    assert result.returncode == 1
    assert other in result.stderr and rig.fingerprint in result.stderr and "Nothing was sent" in result.stderr
    assert fake_upstream.requests == [] and not (tmp_path / "history").exists()


def test_taste_in_public_key_mode_explains_a_node_without_a_key(tracker, start_agent, fake_upstream, tmp_path):
    agent = start_agent(fake_upstream.base)
    result = taste(tracker, agent.node_id, tmp_path, "hi")
    assert result.returncode == 1 and "no token (400)" in result.stderr
    assert "public_key_mode_unavailable" in result.stderr and fake_upstream.requests == []

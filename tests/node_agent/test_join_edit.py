"""An operator fixes their rig from the command line: `luckrig-node join` run again updates the registration from
the flags it is given and says what changed; `luckrig-node edit` changes the spec and notes; bad values get the
tracker's refusal as a sentence and a non-zero exit; on a terminal `join` asks for a display name and a tuning
note. All against the suite's real tracker."""

import argparse
import os
import pty
import subprocess
import sys

import pytest

from node_agent.edit import hours_arg
from tests.node_agent.test_join import agent_env, join, saved
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.agent


def edit(config_dir, *flags: str):
    args = [sys.executable, "-m", "node_agent", "edit", "--config-dir", str(config_dir), *flags]
    return subprocess.run(args, cwd=ROOT, env=agent_env(), capture_output=True, text=True, timeout=60)


@pytest.fixture
def first(tracker, fake_upstream, tmp_path):
    """A rig joined once (not serving), stating a quantization and a context length."""
    config_dir = tmp_path / "config"
    flags = ("--upstream", fake_upstream.base, "--port", str(free_port()), "--gpu", "Fake GPU (edit tests)")
    done = join(tracker.base, config_dir, *flags, "--quantization", "Q4_K_M", "--context-length", "4096")
    assert done.returncode == 0, done.stderr
    return config_dir, flags, saved(config_dir)[0]["node_id"]


def test_join_again_with_new_flags_updates_the_registration_and_says_what_changed(tracker, first):
    config_dir, flags, node_id = first
    again = join(
        tracker.base,
        config_dir,
        *flags,
        "--quantization",
        "Q5_K_M",
        "--context-length",
        "8192",
        "--tuning-note",
        "ngl 99, flash attention on",
        "--display-name",
        "Ada's attic rig",
    )
    assert again.returncode == 0, again.stderr
    assert f"Reusing the registered node {node_id}" in again.stdout
    assert "quantization: Q4_K_M → Q5_K_M" in again.stdout
    assert "context length: 4096 → 8192" in again.stdout
    assert "tuning note: (none) → 'ngl 99, flash attention on'" in again.stdout
    assert 'display name: (none) → "Ada\'s attic rig"' in again.stdout
    node = tracker.node(node_id)
    assert (node["quantization"], node["context_length"]) == ("Q5_K_M", 8192)
    assert (node["tuning_note"], node["display_name"]) == ("ngl 99, flash attention on", "Ada's attic rig")
    assert saved(config_dir)[0]["node_id"] == node_id  # the same node, not a second registration


def test_join_again_with_nothing_new_says_nothing_changed_and_sends_nothing(tracker, first):
    config_dir, flags, node_id = first
    before = tracker.node(node_id)["updated_at"]
    again = join(tracker.base, config_dir, *flags, "--quantization", "Q4_K_M")
    assert again.returncode == 0, again.stderr
    assert "The registration is unchanged" in again.stdout and "→" not in again.stdout
    assert tracker.node(node_id)["updated_at"] == before


def test_join_again_with_a_bad_value_gives_the_trackers_sentence_and_fails(tracker, first):
    config_dir, flags, node_id = first
    bad = join(tracker.base, config_dir, *flags, "--tags", "good, Not A Tag!")
    assert bad.returncode == 1
    assert "luckrig-node join: the tracker refused --tags: tag 'not a tag!' may only hold" in bad.stderr
    assert "The registration is unchanged." in bad.stderr and "Traceback" not in bad.stderr
    assert tracker.node(node_id)["tags"] == []


def test_edit_changes_the_spec_and_notes_and_prints_the_result(tracker, first):
    config_dir, _flags, node_id = first
    done = edit(
        config_dir,
        "--display-name",
        "Kitchen K80",
        "--availability-note",
        "evenings UTC",
        "--tags",
        "quiet, Undervolted",
        "--visibility",
        "unlisted",
        "--vram-gb",
        "24",
        "--circle-only-hours",
        "22-1,12",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"Changed node {node_id}:" in out
    assert "display name: (none) → 'Kitchen K80'" in out and "tags: (none) → quiet, undervolted" in out
    assert "visibility: public → unlisted" in out and "VRAM (GB): " in out and "→ 24" in out
    assert "Display name: Kitchen K80" in out and f"{tracker.base}/nodes/{node_id}/" in out
    node = tracker.node(node_id)
    assert (node["display_name"], node["availability_note"]) == ("Kitchen K80", "evenings UTC")
    assert node["tags"] == ["quiet", "undervolted"] and node["visibility"] == "unlisted" and node["vram_gb"] == 24
    assert "circle only hours: (none) → 00:00, 01:00, 12:00, 22:00, 23:00 UTC" in out
    assert node["circle_only_hours"] == [0, 1, 12, 22, 23]

    cleared = edit(config_dir, "--tags", "", "--availability-note", "")
    assert cleared.returncode == 0, cleared.stderr
    assert "tags: quiet, undervolted → (none)" in cleared.stdout
    assert tracker.node(node_id)["tags"] == [] and tracker.node(node_id)["availability_note"] == ""

    same = edit(config_dir, "--display-name", "Kitchen K80", "--circle-only-hours", "12,22-1")
    assert same.returncode == 0 and "Nothing changed" in same.stdout and "→" not in same.stdout


@pytest.mark.parametrize(
    ("text", "hours"),
    [("18-23", [18, 19, 20, 21, 22, 23]), ("22-2, 7", [0, 1, 2, 7, 22, 23]), ("5,5", [5]), ("", [])],
)
def test_circle_only_hours_are_read_as_utc_hours_and_ranges(text, hours):
    assert hours_arg(text) == hours


@pytest.mark.parametrize("text", ["24", "evening", "3-25", "-1"])
def test_a_wrong_circle_only_hour_is_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError):
        hours_arg(text)


def test_edit_with_a_bad_value_names_the_flag_and_changes_nothing(tracker, first):
    config_dir, _flags, node_id = first
    bad = edit(config_dir, "--context-length=0", "--display-name", "never saved")
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "luckrig-node edit: the tracker refused --context-length: "
        "Ensure this value is greater than or equal to 1. Nothing changed."
    )
    node = tracker.node(node_id)
    assert node["context_length"] == 4096 and node["display_name"] == ""


def test_edit_with_another_owners_key_is_refused_as_a_sentence(tracker, first):
    config_dir, _flags, node_id = first
    stranger = tracker.contributor()
    refused = edit(config_dir, "--contributor-key", stranger, "--display-name", "not mine")
    assert refused.returncode == 1
    assert f"node {node_id} belongs to another contributor key" in refused.stderr
    assert tracker.node(node_id)["display_name"] == ""


def test_edit_without_a_joined_node_says_how_to_get_one(tmp_path):
    done = edit(tmp_path / "empty", "--display-name", "x")
    assert done.returncode == 2 and "run `luckrig-node join --tracker URL` first" in done.stderr


def join_on_a_terminal(tracker_url, config_dir, answers: str, *flags: str):
    """`join` with its standard input on a pseudo-terminal (as when an operator types), the answers typed ahead."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answers.encode())
        args = [sys.executable, "-m", "node_agent", "join", "--tracker", tracker_url, "--config-dir", str(config_dir)]
        return subprocess.run(
            [*args, *flags, "--no-serve"],
            cwd=ROOT,
            env=agent_env(),
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)


def test_join_on_a_terminal_asks_for_a_display_name_and_a_tuning_note(tracker, fake_upstream, tmp_path):
    flags = ("--upstream", fake_upstream.base, "--port", str(free_port()), "--gpu", "Fake GPU (terminal)")
    done = join_on_a_terminal(tracker.base, tmp_path / "a", "Ada's K80\nngl 99, 2 slots\n", *flags)
    assert done.returncode == 0, done.stderr
    assert "Display name for this rig" in done.stdout and "Tuning note" in done.stdout
    node = tracker.node(saved(tmp_path / "a")[0]["node_id"])
    assert (node["display_name"], node["tuning_note"]) == ("Ada's K80", "ngl 99, 2 slots")

    # Run again on the terminal: the rig has both now, so nothing is asked and nothing changes.
    again = join_on_a_terminal(tracker.base, tmp_path / "a", "", *flags)
    assert again.returncode == 0 and "Display name for this rig" not in again.stdout
    assert "The registration is unchanged" in again.stdout

    # A flag answers the question; Enter skips the other.
    named = join_on_a_terminal(tracker.base, tmp_path / "b", "\n", *flags, "--display-name", "Second rig")
    assert named.returncode == 0, named.stderr
    assert "Display name for this rig" not in named.stdout and "Tuning note" in named.stdout
    node = tracker.node(saved(tmp_path / "b")[0]["node_id"])
    assert (node["display_name"], node["tuning_note"]) == ("Second rig", "")


def test_join_never_asks_with_yes_or_without_a_terminal(tracker, fake_upstream, tmp_path):
    flags = ("--upstream", fake_upstream.base, "--port", str(free_port()), "--gpu", "Fake GPU (quiet)")
    quiet = join_on_a_terminal(tracker.base, tmp_path / "yes", "typed ahead\n", *flags, "--yes")
    assert quiet.returncode == 0, quiet.stderr
    assert (
        "Display name" not in quiet.stdout and tracker.node(saved(tmp_path / "yes")[0]["node_id"])["display_name"] == ""
    )
    piped = join(tracker.base, tmp_path / "pipe", *flags)  # standard input is not a terminal
    assert piped.returncode == 0, piped.stderr
    assert "Display name" not in piped.stdout

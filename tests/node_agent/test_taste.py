"""`luckrig-node taste` as a taster runs it: the queue wait is measured by this client (never the rig's word
for it), and the replay lands in ~/.luckrig/history/ under its documented name."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from aiohttp import web

from tests.node_agent.fakes import ThreadedApp, wait_until
from tests.processes import ROOT

pytestmark = pytest.mark.agent


def taste(tracker, node_id: str, home: Path, *extra: str, wait: bool = True):
    """Run `luckrig-node taste` with HOME=`home` (so ~/.luckrig and ~/.config are the test's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")}
    env["HOME"] = str(home)
    args = [sys.executable, "-m", "node_agent", "taste", "--tracker", tracker.base, "--node", node_id, *extra, "hi"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out, err


def replay_of(home: Path) -> dict:
    [path] = (home / ".luckrig" / "history").iterdir()
    return json.loads(path.read_text())


def register(tracker, rig, *, active: int = 0) -> str:
    """Register a fake rig with the tracker and report it healthy, so that tokens are issued for it."""
    node_id, secret = tracker.register(tracker.contributor(), rig.base + "/v1")
    beat = requests.post(
        f"{tracker.base}/api/nodes/{node_id}/heartbeat",
        json={"queue": {"active": active, "waiting": 0, "max_active": 1}, "models": ["smollm2-fake"]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert beat.status_code == 200, beat.text
    return node_id


def test_the_replay_goes_to_the_default_history_dir_under_its_documented_name(
    tracker, start_agent, fake_upstream, tmp_path
):
    agent = start_agent(fake_upstream.base)
    home = tmp_path / "home"
    home.mkdir()
    out, err = taste(tracker, agent.node_id, home)
    files = list((home / ".luckrig" / "history").iterdir())
    assert len(files) == 1
    path = files[0]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{6}_" + re.escape(agent.node_id) + r"\.json", path.name), path.name
    assert f"Saved the replay to {path}" in err
    assert path.stat().st_mode & 0o777 == 0o600  # the prompt and answer are the taster's business
    replay = json.loads(path.read_text())
    assert replay["schema_version"] == 1 and replay["node_id"] == agent.node_id
    assert replay["prompt"] == "hi" and replay["response"] == fake_upstream.text() == out.rstrip("\n")
    stamps = replay["chunk_timestamps"]
    assert len(stamps) == len(fake_upstream.words) and stamps == sorted(stamps) and stamps[0] > 0
    timing = replay["timing"]
    assert timing["node_id"] == agent.node_id and timing["output_tokens"] == len(fake_upstream.words)
    assert timing["ttft_ms"] > 0 and timing["queue_wait_sec"] == 0


def test_the_queue_wait_is_measured_by_the_client(tracker, start_agent, fake_upstream, tmp_path):
    """Two tastings of a rig that generates one answer at a time: the second waits for the first, and its
    queue wait runs from its request to its first event after the queue comments."""
    fake_upstream.delay = 0.15  # 12 chunks: ~1.8 s per answer
    agent = start_agent(fake_upstream.base, max_active=1)
    first_home, second_home = tmp_path / "first", tmp_path / "second"
    first_home.mkdir()
    second_home.mkdir()
    first = taste(tracker, agent.node_id, first_home, wait=False)
    assert wait_until(lambda: fake_upstream.active == 1, timeout=20)
    started = time.monotonic()
    second = taste(tracker, agent.node_id, second_home, wait=False)
    for proc in (first, second):
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    second_took = time.monotonic() - started

    assert replay_of(first_home)["timing"]["queue_wait_sec"] == 0  # it never waited
    timing = replay_of(second_home)["timing"]
    # It waited for most of the first answer, and the wait is part of what it saw as time to first token.
    assert 0.5 < timing["queue_wait_sec"] <= timing["ttft_ms"] / 1000 < second_took


class FakeRig(ThreadedApp):
    """A rig that is only its chat path, answered by the subclass's `chat`."""

    def build(self):
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app


class LyingRig(FakeRig):
    """A rig that keeps a taster in line for `wait` seconds, then says in its `luckrig` object that the wait
    was `claimed_ms` (a rig could understate its queue to look better, or misreport it by mistake)."""

    def __init__(self, wait: float, claimed_ms: int):
        super().__init__()
        self.wait, self.claimed_ms = wait, claimed_ms

    async def chat(self, request):
        import asyncio

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": queue position=1 eta_sec=1\n\n")
        await asyncio.sleep(self.wait)
        chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}]}
        final = {
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "luckrig": {"queue_wait_ms": self.claimed_ms, "proxy_ttft_ms": 1.0, "truncated": False},
        }
        for event in (chunk, final):
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.mark.parametrize("claimed_ms", [0, 60_000])
def test_the_rigs_own_queue_wait_is_not_what_the_taster_reports(tracker, tmp_path, claimed_ms):
    with LyingRig(wait=0.8, claimed_ms=claimed_ms) as rig:
        out, err = taste(tracker, register(tracker, rig, active=1), tmp_path)
    assert out.strip() == "ok"
    wait = replay_of(tmp_path)["timing"]["queue_wait_sec"]
    assert 0.8 <= wait < 5, wait
    assert f"queue wait {wait} s" in err


def test_the_queue_status_line_is_ended_before_the_next_line(tracker, tmp_path):
    """The queue status is rewritten in place on one line; what follows it starts on a line of its own (plain mode
    once wrote the timing summary onto the end of it: `[queue position=1 eta_sec=1]TTFT ...`)."""
    with LyingRig(wait=0.2, claimed_ms=0) as rig:
        _out, err = taste(tracker, register(tracker, rig, active=1), tmp_path)
    # The subprocess's text mode turns the status's carriage return into a newline.
    assert "[queue position=1 eta_sec=1]\nTTFT " in err, err


class HostileRig(FakeRig):
    """A rig whose operator writes terminal control sequences into everything the taster's terminal shows (an
    OSC that retitles the window, a CSI that clears the screen, a bell, a carriage return, 8-bit C1 controls),
    cutting one sequence across two chunks; it records what tasters send it."""

    PIECES = ["safe ", "\x1b]0;pwned\x07", "text\x1b[2J", " more\x1b", "[31mred\r", "\x9b2Jend\x07\n\tok"]

    def __init__(self):
        super().__init__()
        self.received: list[tuple[str, bytes]] = []

    async def chat(self, request):
        self.received.append((request.headers.get("Authorization", ""), await request.read()))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": queue position=1 eta_sec=1 \x1b]0;queued\x07\n\n")
        for piece in self.PIECES:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        final = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        return response


def test_taste_prints_no_terminal_control_sequences_a_rig_sends(tracker, tmp_path):
    """The attack: a hostile rig answers with escape sequences that retitle the terminal, clear the screen or
    worse. The taster sees the text without them; the replay file keeps exactly what the rig sent."""
    with HostileRig() as rig:
        out, err = taste(tracker, register(tracker, rig), tmp_path)
    for stream in (out, err):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", stream), repr(stream)
    assert "pwned" not in out and "queued" not in err
    assert out == "safe text moreredend\n\tok\n", repr(out)  # the cut sequence is held until it is whole
    assert replay_of(tmp_path)["response"] == "".join(HostileRig.PIECES)


def test_taste_shares_timing_with_the_upload_key_which_never_reaches_the_rig(tracker, tmp_path):
    with HostileRig() as rig:
        out, err = taste(tracker, register(tracker, rig), tmp_path, "--share-timing")
    assert "Shared the timing" in err, err
    [(authorization, body)] = rig.received
    assert authorization.startswith("Bearer ey") and b"lru_" not in body  # the tasting token, and nothing else
    assert "lru_" not in json.dumps(replay_of(tmp_path))  # no credential in a file a taster may pass around


class BrokenRig(FakeRig):
    """A rig whose answer stream is not a whole answer: `events` are written as they are, after a queue comment."""

    def __init__(self, events: list[bytes]):
        super().__init__()
        self.events = events

    async def chat(self, request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": queue position=1 eta_sec=1\n\n")
        for event in self.events:
            await response.write(event)
        return response


def event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


USAGE_ONLY = event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}})
PIECE = event({"choices": [{"index": 0, "delta": {"content": "half an ans"}}]})


@pytest.mark.parametrize(
    ("events", "says"),
    [
        ([USAGE_ONLY, b"data: [DONE]\n\n"], "the rig sent no answer."),
        ([PIECE], "the rig's answer stopped before its end ([DONE])"),
        ([b"data: <html>oops</html>\n\n"], "the rig sent an event that is not a JSON object."),
        ([PIECE, event({"error": "not an object"})], "the rig failed: not an object"),
    ],
    ids=["no_answer", "no_done", "not_json", "error_as_a_string"],
)
def test_a_stream_that_is_not_a_whole_answer_fails_and_nothing_is_saved_or_shared(tracker, tmp_path, events, says):
    """Public-key mode always failed when no answer came (there is nothing to open); plain mode measured, saved
    and shared an empty or cut-short answer, and a broken event ended it in a traceback. One client now: the
    taster is told why in one line of its own, and no replay or timing comes of it."""
    with BrokenRig(events) as rig:
        proc = taste(tracker, register(tracker, rig), tmp_path, "--share-timing", wait=False)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"\nluckrig-node taste: {says}" in err, err
    assert "Traceback" not in err and "Shared the timing" not in err
    assert not (tmp_path / ".luckrig" / "history").exists()

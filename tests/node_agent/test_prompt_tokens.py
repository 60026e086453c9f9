"""`usage.prompt_tokens` is what the model server evaluated (issue 12): ollama's `prompt_eval_count`, a llama.cpp
server's streamed usage, or, for a server that streams none, its own answer to a one-token request; the agent's
own count of the messages' text (without the chat template) is the last resort, and says so (`counted`). The real
llama.cpp server is tested in test_llamacpp.py."""

import asyncio
import json
import time

import pytest
import requests

from node_agent import upstream
from tests.node_agent.fakes import FakeOllama, wait_until
from tests.node_agent.test_queue_and_failures import health, raw_request, read_until

pytestmark = pytest.mark.agent


def final_chunk(agent, token: str) -> dict:
    r = requests.post(
        agent.v1 + "/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=30,
    )
    lines = [raw.decode() for raw in r.iter_lines() if raw]
    return json.loads([line for line in lines if line.startswith("data: {") and '"usage"' in line][-1][5:])


def booked(agent) -> dict:
    return json.loads((agent.config_dir / "state" / agent.node_id / "usage.jsonl").read_text().splitlines()[-1])


def test_ollamas_prompt_eval_count_is_the_prompt_tokens_the_tracker_is_told(tracker, start_agent):
    with FakeOllama() as ollama:  # native /api/chat only
        agent = start_agent(ollama.base)
        issued = tracker.token(agent.node_id)
        final = final_chunk(agent, issued["token"])
        assert final["usage"]["prompt_tokens"] == 11 and final["luckrig"]["usage_source"] == "upstream"
        assert booked(agent)["prompt_tokens"] == 11
        served = "SELECT prompt_tokens FROM tracker_tastingtoken WHERE jti = %s"
        assert wait_until(lambda: tracker.execute(served, (issued["jti"],)) == [(11,)], timeout=15)


def test_a_server_that_streams_no_usage_is_asked_what_it_evaluated(tracker, start_agent, fake_upstream):
    fake_upstream.send_usage = False  # like llama-cpp-python: no usage chunk, usage in non-streamed answers
    agent = start_agent(fake_upstream.base)
    final = final_chunk(agent, tracker.token(agent.node_id)["token"])
    assert final["usage"]["prompt_tokens"] == 7 and final["luckrig"]["usage_source"] == "upstream"
    question = fake_upstream.requests[-1]
    assert question["stream"] is False and question["max_tokens"] == 1
    assert question["messages"] == fake_upstream.requests[-2]["messages"]
    assert booked(agent)["prompt_tokens"] == 7


def questions(upstream) -> list[dict]:
    """The one-token non-streaming requests the agent sent after answers (its prompt-token question)."""
    return [r for r in upstream.requests if r.get("stream") is False]


def test_only_a_server_that_never_says_is_counted_by_the_agent_and_it_says_so(tracker, start_agent, fake_upstream):
    """A server whose answers carry no usage at all is asked once: every later answer would wait for nothing."""
    fake_upstream.send_usage = "never"
    agent = start_agent(fake_upstream.base)
    for _ in range(2):
        final = final_chunk(agent, tracker.token(agent.node_id)["token"])
        assert final["luckrig"]["usage_source"] == "counted"
        assert final["usage"]["completion_tokens"] == len(fake_upstream.words)
    assert len(questions(fake_upstream)) == 1
    assert agent.log().count("not asked again") == 1 and "no usage in its answer" in agent.log()


def test_a_question_that_times_out_holds_the_answer_5_s_once(tracker, start_agent, fake_upstream):
    """Before: the [DONE] of every answer waited up to 30 s for a question the server did not answer."""
    fake_upstream.send_usage, fake_upstream.probe_delay = False, 60
    agent = start_agent(fake_upstream.base)
    waits = []
    for _ in range(2):
        sent = time.monotonic()
        final = final_chunk(agent, tracker.token(agent.node_id)["token"])
        waits.append(time.monotonic() - sent)
        assert final["luckrig"]["usage_source"] == "counted"
    assert waits[0] < 15 and waits[1] < 3, waits  # 5 s once, then not again
    assert len(questions(fake_upstream)) == 1
    assert wait_until(lambda: fake_upstream.cancelled == 1, timeout=5)  # the question was closed, not left running
    assert "no answer within 5 s" in agent.log()


def test_a_taster_who_hangs_up_during_the_question_closes_it_and_later_answers_are_still_asked(
    tracker, start_agent, fake_upstream
):
    fake_upstream.send_usage, fake_upstream.probe_delay = False, 60
    agent = start_agent(fake_upstream.base, max_active=1)
    taster = raw_request(agent, tracker.token(agent.node_id)["token"])
    assert fake_upstream.words[-1].encode() in read_until(taster, fake_upstream.words[-1].encode())
    assert wait_until(lambda: questions(fake_upstream), timeout=5)
    taster.close()
    # Closed at once (well within the question's 5 s), and the slot is free.
    assert wait_until(lambda: fake_upstream.cancelled == 1, timeout=3)
    assert wait_until(lambda: health(agent)["active"] == 0, timeout=3)
    # A taster leaving says nothing about the server: the next answer is still asked about.
    fake_upstream.probe_delay = 0
    final = final_chunk(agent, tracker.token(agent.node_id)["token"])
    assert final["usage"]["prompt_tokens"] == 7 and final["luckrig"]["usage_source"] == "upstream"
    assert len(questions(fake_upstream)) == 2 and "not asked again" not in agent.log()


def test_a_rig_told_not_to_ask_sends_no_second_request(tracker, start_agent, fake_upstream):
    """--count-prompt-tokens off: for a remote API, where the question would be a second paid request."""
    fake_upstream.send_usage = False
    agent = start_agent(fake_upstream.base, count_prompt_tokens="off")
    final = final_chunk(agent, tracker.token(agent.node_id)["token"])
    assert final["luckrig"]["usage_source"] == "counted" and questions(fake_upstream) == []


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("192.168.1.20", True),
        ("10.0.0.7", True),
        ("100.101.102.103", True),  # Tailscale (CGNAT)
        ("fd12:3456::1", True),
        ("fe80::1%eth0", True),
        ("104.18.6.192", False),  # a public address, as a remote API has
        ("2606:4700::6812:6c0", False),
        ("", False),
    ],
)
def test_only_an_upstream_on_this_machine_or_a_private_network_is_asked_by_default(host, local):
    assert asyncio.run(upstream.is_local_host(host)) is local


def test_llama_cpps_own_server_tokenizes_the_templated_prompt_instead_of_evaluating_it(
    tracker, start_agent, fake_upstream
):
    fake_upstream.send_usage, fake_upstream.llamacpp_tokenizer = False, True
    agent = start_agent(fake_upstream.base)  # /props answers: llama.cpp's server
    for _ in range(2):
        final = final_chunk(agent, tracker.token(agent.node_id)["token"])
        # <s> user hi </s> <s> assistant, and the BOS the server adds: what it would evaluate.
        assert final["usage"]["prompt_tokens"] == 7 and final["luckrig"]["usage_source"] == "upstream"
    assert questions(fake_upstream) == []
    templated = [r for r in fake_upstream.requests if r.get("path") == "/apply-template"]
    tokenized = [r for r in fake_upstream.requests if r.get("path") == "/tokenize"]
    assert len(templated) == len(tokenized) == 2
    assert templated[0]["messages"] == [{"role": "user", "content": "hi"}]
    assert tokenized[0]["add_special"] is True and tokenized[0]["content"].startswith("<|im_start|>user")


def test_the_question_is_not_counted_as_service_time_in_the_queues_eta(tracker, start_agent, fake_upstream):
    """The queue's ETA averages how long answers take to generate: a question after the answer (here a slow one,
    3 s) is not generation, and counted in it would make every waiter's ETA that much longer."""
    from tests.node_agent.test_queue_order import Taster

    fake_upstream.send_usage, fake_upstream.probe_delay = False, 3
    agent = start_agent(fake_upstream.base, max_active=1, max_waiting=4)
    final_chunk(agent, tracker.token(agent.node_id)["token"])  # an answer of a few ms, then a 3 s question
    ahead = raw_request(agent, tracker.token(agent.node_id)["token"])
    read_until(ahead, fake_upstream.words[-1].encode())  # generated: its question holds the slot now
    waiter = Taster(agent, tracker.token(agent.node_id)["token"])
    waiter.start()
    try:
        assert wait_until(lambda: waiter.comments, timeout=5)
        assert waiter.comments[0][1] == 1  # the shortest ETA there is; with the question counted, 3
    finally:
        ahead.close()
        waiter.join(30)

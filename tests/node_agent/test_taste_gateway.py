"""`luckrig-node taste --model` (node_agent/taste_gateway.py) against a fake tracker and a fake gateway in one small
server: where the gateway is found, the credential sent, the rig named, the answer measured and saved as any
tasting, and each refusal said in one line with exit code 1. The real gateway is in tests/relay/test_gateway.py."""

import json

import pytest
from aiohttp import web

from node_agent.cli import main
from tests.node_agent.fakes import ThreadedApp

RIG = "rtx3060-smollm2"
KEY = "lrk_" + "s" * 43


def sse(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def answer(node_id: str = RIG, named: str | None = None) -> bytes:
    """An agent's stream as the gateway carries it: a queue comment, two pieces, the final chunk, [DONE]."""
    pieces = [
        sse({"model": "smollm2-135m-instruct", "choices": [{"index": 0, "delta": {"content": piece}}]})
        for piece in ("Hel", "lo")
    ]
    final = {
        "choices": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        "luckrig": {"node_id": named or node_id, "proxy_ttft_ms": 3.0, "truncated": False},
    }
    return b": queue position=1 eta_sec=1\n\n" + b"".join(pieces) + sse(final) + b"data: [DONE]\n\n"


class FakeNetwork(ThreadedApp):
    """A tracker (`/api/gateway`, `/api/nodes/<id>`) and a gateway at `/v1` in one server. `gateway` is what
    `GET /api/gateway` answers ((status, body)); `reply` what the gateway answers ((status, headers, body))."""

    def __init__(self):
        super().__init__()
        self.gateway: tuple[int, dict] | None = None
        self.reply: tuple[int, dict, bytes] = (200, {"X-LuckRig-Node": RIG}, answer())
        self.asked_where = 0
        self.requests: list[tuple[str, dict]] = []

    def build(self):
        app = web.Application()
        app.router.add_get("/api/gateway", self.where)
        app.router.add_get("/api/nodes/{node_id}", self.node)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def where(self, request):
        self.asked_where += 1
        status, body = self.gateway or (200, {"schema_version": 1, "base_url": self.base + "/v1", "relays": []})
        return web.json_response(body, status=status)

    async def node(self, request):
        if request.match_info["node_id"] != RIG:
            return web.json_response({"error": "no such node", "code": "node_not_found"}, status=404)
        node = {"id": RIG, "model_name": "SmolLM2-135M-Instruct", "quantization": "Q4_1", "gpu": "RTX 3060"}
        return web.json_response({"schema_version": 1, "node": node})

    async def chat(self, request):
        self.requests.append((request.headers.get("Authorization", ""), await request.json()))
        status, headers, body = self.reply
        if status != 200:
            return web.Response(status=status, headers=headers, body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
        await response.prepare(request)
        await response.write(body)
        return response


@pytest.fixture
def net():
    with FakeNetwork() as network:
        yield network


def taste(net, tmp_path, *flags: str) -> list[str]:
    return [
        "taste",
        "--tracker",
        net.base,
        "--config-dir",
        str(tmp_path / "config"),
        "--history-dir",
        str(tmp_path / "history"),
        *flags,
        "hi",
    ]


def test_a_model_route_finds_the_gateway_at_the_tracker_and_names_the_rig_that_answered(net, tmp_path, capsys):
    assert main(taste(net, tmp_path, "--model", "smollm2")) == 0
    out, err = capsys.readouterr()
    assert out == "Hello\n"
    assert net.asked_where == 1
    [(authorization, body)] = net.requests
    # No saved key for this tracker: the gateway's placeholder for "no credential", which the SDK would send too.
    assert authorization == "Bearer anonymous"
    assert body["model"] == "smollm2" and body["stream"] is True and body["messages"][-1]["content"] == "hi"
    assert f"Tasting 'smollm2' through the gateway {net.base}/v1 (anonymous, limited tier)" in err
    assert f"Answered by rig {RIG}: SmolLM2-135M-Instruct Q4_1 on RTX 3060 (X-LuckRig-Node and luckrig.node_id)" in err
    # Measured and saved as any tasting, under the rig that answered; the queue wait is this client's own.
    [path] = (tmp_path / "history").iterdir()
    replay = json.loads(path.read_text())
    assert path.name.endswith(f"_{RIG}.json") and replay["response"] == "Hello" and replay["node_id"] == RIG
    timing = replay["timing"]
    assert timing["node_id"] == RIG and timing["output_tokens"] == 2 and timing["ttft_ms"] > 0
    assert timing["tokenizer"] == "SmolLM2-135M-Instruct" and timing["queue_wait_sec"] > 0
    assert f"TTFT {timing['ttft_ms']} ms" in err
    # Not shared, and it says why rather than offering --share-timing.
    assert "not shared: the relay holds the token" in err and f"--node {RIG}" in err
    assert "with --share-timing" not in err


def test_a_rig_route_with_the_saved_key_and_a_given_gateway(net, tmp_path, capsys):
    (tmp_path / "config").mkdir()
    identity = {"tracker": net.base, "contributor_key": KEY}
    (tmp_path / "config" / "identity.json").write_text(json.dumps(identity))
    assert main(taste(net, tmp_path, "--model", f"rig:{RIG}", "--gateway", net.base + "/v1/")) == 0
    _, err = capsys.readouterr()
    assert net.asked_where == 0  # --gateway: the tracker is not asked where it is
    [(authorization, body)] = net.requests
    assert authorization == f"Bearer {KEY}" and body["model"] == f"rig:{RIG}"
    assert "(your contributor key)" in err and f"Answered by rig {RIG}" in err


def test_a_rig_that_names_another_node_than_the_gateway_is_shown_both(net, tmp_path, capsys):
    net.reply = (200, {"X-LuckRig-Node": RIG}, answer(named="someone-else"))
    assert main(taste(net, tmp_path, "--model", "smollm2")) == 0
    _, err = capsys.readouterr()
    assert f"Answered by rig {RIG}" in err and "the answer's luckrig.node_id says someone-else" in err


def error(status: int, code: str, message: str, headers=None, **extra) -> tuple[int, dict, bytes]:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": None, **extra}}
    return status, {"X-LuckRig-Node": "none", **(headers or {})}, json.dumps(body).encode()


@pytest.mark.parametrize(
    ("gateway", "reply", "says"),
    [
        (
            None,
            error(404, "model_not_found", "No model.", suggestions=["smollm2-135m-instruct", "smollm2"]),
            "no model or rig named 'smollm3' on the gateway (model_not_found). "
            "Did you mean: smollm2-135m-instruct, smollm2?",
        ),
        (
            None,
            error(503, "no_rig_available", "No rig.", {"Retry-After": "30"}, available_models=["qwen3:35b"]),
            "no rig serving 'smollm3' is available right now (no_rig_available). Models available now: qwen3:35b.",
        ),
        (
            None,
            error(429, "queue_full", "The rig's line is full.", {"Retry-After": "7", "X-LuckRig-Node": RIG}),
            f"the gateway refused (429, rig {RIG}): The rig's line is full. (queue_full) Retry after 7 s.",
        ),
        (
            None,
            error(401, "invalid_credential", "Not a contributor key.", {"WWW-Authenticate": "Bearer"}),
            "the gateway refused (401): Not a contributor key. (invalid_credential)",
        ),
        (
            None,
            (200, {"X-LuckRig-Node": RIG}, b": queue position=1 eta_sec=9\n\n" + sse({"error": {"message": "Late."}})),
            "the rig failed: Late.",
        ),
        (
            (200, {"schema_version": 1, "base_url": None, "relays": []}),
            None,
            "has no live gateway right now (no relay is up); taste one rig with --node ID, or give --gateway URL.",
        ),
        (
            (404, {"schema_version": 1, "error": "Not found.", "code": "not_found"}),
            None,
            "has no gateway (GET /api/gateway: 404); taste one rig with --node ID, or give --gateway URL.",
        ),
    ],
    ids=["model_not_found", "no_rig_available", "retry_after", "mistyped_key", "error_event", "no_live", "old"],
)
def test_each_refusal_is_one_line_and_exit_code_1(net, tmp_path, capsys, gateway, reply, says):
    net.gateway, net.reply = gateway, reply or net.reply
    assert main(taste(net, tmp_path, "--model", "smollm3")) == 1
    out, err = capsys.readouterr()
    [line] = [line for line in err.splitlines() if line.startswith("luckrig-node taste: ")]
    assert line.endswith(says), err
    assert "Traceback" not in err and not (tmp_path / "history").exists()
    assert len(net.requests) == (0 if gateway else 1)  # a tracker that names no gateway: nothing is sent


def test_a_gateway_that_cannot_be_reached_is_one_line(tmp_path, capsys):
    with FakeNetwork() as gone:
        base = gone.base
    assert main(taste(gone, tmp_path, "--model", "smollm2", "--gateway", base + "/v1")) == 1
    err = capsys.readouterr().err
    assert f"luckrig-node taste: could not reach the gateway at {base}/v1: " in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--model", "smollm2", "--share-timing"], "--share-timing is not available for gateway tastings (--model)"),
        (["--model", "smollm2", "--mode", "public-key"], "--mode public-key is not offered through the gateway"),
        (["--node", RIG, "--gateway", "http://127.0.0.1:9/v1"], "--gateway applies to --model only"),
        (["--model", " "], "--model needs a model name or rig:<node id>"),
    ],
    ids=["share_timing", "public_key", "gateway_without_model", "empty_model"],
)
def test_what_a_gateway_tasting_cannot_do_is_refused_before_anything_is_sent(net, tmp_path, capsys, flags, says):
    assert main(taste(net, tmp_path, *flags)) == 2
    assert says in capsys.readouterr().err
    assert net.requests == [] and net.asked_where == 0


def test_node_and_model_are_one_or_the_other(net, tmp_path, capsys):
    for flags in (["--node", RIG, "--model", "smollm2"], []):
        with pytest.raises(SystemExit) as usage:
            main(taste(net, tmp_path, *flags))
        assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model: not allowed with argument --node" in err
    assert "one of the arguments --node --model is required" in err

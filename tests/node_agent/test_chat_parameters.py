"""Parameters no rig can serve are refused by name (400 `unsupported_parameter`, `param`), never dropped silently:
the agent and the relay's gateway share this one check (node_agent.chat.parse_chat)."""

import pytest

from node_agent.chat import parse_chat
from node_agent.errors import AgentError

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n", 2),
        ("n", 0),
        ("n", True),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tool_choice", "auto"),
        ("tool_choice", {"type": "function", "function": {"name": "f"}}),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("parallel_tool_calls", True),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
    ],
)
def test_a_parameter_the_rigs_cannot_serve_is_400_naming_it(name, value):
    with pytest.raises(AgentError) as refused:
        parse_chat({"messages": HI, name: value})
    error = refused.value
    assert (error.status, error.code) == (400, "unsupported_parameter")
    assert error.body()["error"]["param"] == name and name in error.message


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 1},
        {"n": None},
        {"tools": []},
        {"tool_choice": "none"},
        {"parallel_tool_calls": False},
        {"logprobs": False},
        {"top_logprobs": 0},
        {"modalities": ["text"]},
        {"audio": None, "prediction": None, "functions": None},
    ],
)
def test_their_defaults_and_nulls_pass(extra):
    messages, params, stream = parse_chat({"messages": HI, **extra})
    assert messages == HI and params == {} and stream is False

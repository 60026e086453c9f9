"""Validation of OpenAI chat bodies: roles, contents and the allowlisted sampling parameters, and the refusal of
the OpenAI parameters no rig can serve (400 `unsupported_parameter` naming it, rather than dropping it silently).
One definition for the agent and the relay's gateway (relay/gateway.py), which validates before it routes."""

import json

from node_agent.errors import AgentError

ROLES = {"system", "user", "assistant"}
SAMPLING = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
)
MAX_MESSAGES = 256
# response_format goes to llama.cpp, whose JSON-schema-to-grammar step has known crashes on hostile schemas: only
# the known types, with the fields OpenAI (and llama.cpp's `schema` extension) define, small and shallow.
MAX_RESPONSE_FORMAT_BYTES = 16 * 1024
MAX_RESPONSE_FORMAT_DEPTH = 16  # the response_format object itself is level 1
RESPONSE_FORMAT_FIELDS = {"text": {"type"}, "json_object": {"type", "schema"}, "json_schema": {"type", "json_schema"}}
JSON_SCHEMA_FIELDS = {"name": str, "description": str, "schema": dict, "strict": bool}


# OpenAI parameters that ask for something a rig cannot give (several answers, tool calls, log-probabilities,
# audio, predicted outputs): refused by name, since dropping them would hand the client an answer it did not ask
# for. Each maps to the test of a value that asks for nothing (an explicit default passes: SDKs send some).
UNSUPPORTED = {
    "n": lambda v: v == 1 and not isinstance(v, bool),
    "tools": lambda v: v == [],
    "tool_choice": lambda v: v == "none",
    "functions": lambda v: v == [],
    "function_call": lambda v: v == "none",
    "parallel_tool_calls": lambda v: v is False,
    "logprobs": lambda v: v is False,
    "top_logprobs": lambda v: v == 0 and not isinstance(v, bool),
    "audio": lambda v: False,
    "modalities": lambda v: v == ["text"],
    "prediction": lambda v: False,
}


def unsupported(name: str) -> AgentError:
    return AgentError(
        400,
        "unsupported_parameter",
        f"{name}: LuckRig rigs cannot serve this parameter (one text answer per request, no tools, no logprobs, no "
        "audio); leave it out.",
        extra={"param": name},
    )


def refuse_unsupported(body: dict) -> None:
    """400 `unsupported_parameter` for the first parameter the rigs cannot serve (null and defaults pass)."""
    for name, harmless in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and not harmless(value):
            raise unsupported(name)


def _bad(message: str) -> AgentError:
    return AgentError(400, "invalid_request", message)


def _text_of(content, index: int) -> str:
    """A message's text: a string, or OpenAI's list of `{"type": "text", "text": ...}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"messages[{index}].content: only text parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"messages[{index}].content must be a string")


def _number(body: dict, name: str, lo: float, hi: float, integer: bool = False):
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise _bad(f"{name} must be a {'whole ' if integer else ''}number")
    if not lo <= value <= hi:
        raise _bad(f"{name} must be between {lo} and {hi}")
    return value


def _deeper_than(value, limit: int) -> bool:
    """Whether `value` nests objects and lists more than `limit` levels deep (itself being level 1). Iterative, so
    that no depth can exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _response_format(value) -> dict:
    """A response_format of a known type, bounded in depth and size; else 400. The messages never quote the value
    (in public-key mode it was decrypted, and an error travels in the clear)."""
    if not isinstance(value, dict):
        raise _bad("response_format must be an object")
    if _deeper_than(value, MAX_RESPONSE_FORMAT_DEPTH):
        raise _bad(f"response_format is nested deeper than {MAX_RESPONSE_FORMAT_DEPTH} levels")
    if len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()) > MAX_RESPONSE_FORMAT_BYTES:
        raise _bad(f"response_format is larger than {MAX_RESPONSE_FORMAT_BYTES // 1024} KiB")
    kind = value.get("type")
    if kind not in RESPONSE_FORMAT_FIELDS:
        raise _bad("response_format.type must be text, json_object or json_schema")
    if not set(value) <= RESPONSE_FORMAT_FIELDS[kind]:
        raise _bad(f"response_format has a field that type {kind} does not take")
    if kind == "json_object" and "schema" in value and not isinstance(value["schema"], dict):
        raise _bad("response_format.schema must be an object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise _bad("response_format.json_schema must be an object")
        for name, kind_of in JSON_SCHEMA_FIELDS.items():
            if name in spec and not isinstance(spec[name], kind_of):
                raise _bad(f"response_format.json_schema.{name} has the wrong type")
        if not set(spec) <= set(JSON_SCHEMA_FIELDS):
            raise _bad("response_format.json_schema takes only name, description, schema and strict")
    return value


def parse_chat(body) -> tuple[list[dict], dict, bool]:
    """(messages, sampling params, stream) of a valid body, else 400. A `model` must be a string, but is not
    returned: a taster cannot choose another model than the rig's (server.py serves its own)."""
    if not isinstance(body, dict):
        raise _bad("The body must be a JSON object.")
    refuse_unsupported(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise _bad(f"at most {MAX_MESSAGES} messages")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}] must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role must be one of system, user, assistant")
        clean.append({"role": role, "content": _text_of(message.get("content"), i)})
    if not any(m["role"] == "user" and m["content"].strip() for m in clean):
        raise _bad("at least one user message with text is required")
    params = {}
    for name in SAMPLING:
        if name not in body or body[name] is None:
            continue
        if name in ("temperature",):
            params[name] = _number(body, name, 0, 2)
        elif name == "top_p":
            params[name] = _number(body, name, 0, 1)
        elif name in ("presence_penalty", "frequency_penalty"):
            params[name] = _number(body, name, -2, 2)
        elif name in ("max_tokens", "max_completion_tokens"):
            params[name] = _number(body, name, 1, 1_000_000, integer=True)
        elif name == "seed":
            params[name] = _number(body, name, -(2**63), 2**63 - 1, integer=True)
        elif name == "stop":
            stop = body[name]
            if isinstance(stop, str):
                stop = [stop]
            if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
                raise _bad("stop must be a string or a list of at most 4 strings")
            params[name] = stop
        elif name == "response_format":
            params[name] = _response_format(body[name])
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model must be a string")
    return clean, params, stream

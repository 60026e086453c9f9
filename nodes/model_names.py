"""Model names as the gateway matches them (pure, no ORM): one normalised `model_key` per rig and a small alias
table, both sent to the relays in the catalog (nodes.catalog, docs/api.md "Gateway").

The rule, in order: trim; lower-case; a path or a Hugging Face owner before the last `/` dropped (llama.cpp names
a model by its file, `/models/SmolLM2-135M-Instruct-Q8_0.gguf`; `Qwen/Qwen3-8B` is `qwen3-8b`); a `.gguf` ending
dropped; runs of white space become one `-`; a quantization at the end of the
name (`-q8_0`, `.Q4_K_M`, `-f16`) dropped, since a rig's quantization is its own field; an ollama-style tag after
`:` (`qwen3:35b`) kept as it is, quantization included (`qwen3:35b-q4_k_m` is what ollama calls that model)."""

import re

_QUANT_SUFFIX = re.compile(r"[-._](?:iq\d_[a-z]+|q\d_k_[smlx]{1,2}|q\d_k|q\d_\d|q\d|bf16|f16|f32|fp16|fp32)$", re.ASCII)
_SPACES = re.compile(r"\s+")
MAX_LENGTH = 120  # Node.model_name's max_length

# alias -> model_key. Short names people type for a model that rigs register by its full name. Keys and values are
# normalised (a test holds them to it). Kept small on purpose: a rig's own model_key wins over an alias, so names
# rigs commonly register for another model (an ollama tag such as `llama3.2:1b`, a base model such as
# `qwen2.5-14b`) would not work as aliases and are left out.
ALIASES: dict[str, str] = {
    "smollm2": "smollm2-135m-instruct",  # the rig `make run` starts (bin/smollm2_server.py)
    "smollm2-instruct": "smollm2-135m-instruct",
}


def model_key(name: str | None) -> str:
    """The normalised model name a rig is routed by (the rule is the module docstring)."""
    text = (name or "").strip().lower()[: MAX_LENGTH * 2]
    text = text.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    base, colon, tag = text.partition(":")
    base = base.removesuffix(".gguf")
    base = _SPACES.sub("-", base).strip("-")
    stripped = _QUANT_SUFFIX.sub("", base)
    base = stripped or base  # a name that is only a quantization stays what it is
    tag = _SPACES.sub("-", tag).strip("-")
    return (base + (colon + tag if tag else ""))[:MAX_LENGTH]

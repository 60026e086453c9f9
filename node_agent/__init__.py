"""luckrig-node: the agent that runs on a contributor's machine in front of ollama or llama.cpp.

It shares only the wire contract (docs/api.md) with the tracker and never imports Django."""

__version__ = "0.1.0"

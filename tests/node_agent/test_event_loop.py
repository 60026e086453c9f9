"""The agent's and the relay's event loop: uvloop's when it can be imported, asyncio's own otherwise, and the log says
which (node_agent/event_loop.py)."""

import asyncio
import logging
import sys

import pytest

from node_agent import event_loop


def test_uvloop_runs_when_it_can_be_imported(caplog):
    uvloop = pytest.importorskip("uvloop")
    with caplog.at_level(logging.INFO, logger="node_agent.event_loop"):
        loop = event_loop.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()
    assert f"event loop: uvloop {uvloop.__version__}" in caplog.text


def test_asyncio_loop_runs_when_uvloop_cannot_be_imported(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    with caplog.at_level(logging.INFO, logger="node_agent.event_loop"):
        loop = event_loop.new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio.")
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()
    assert "event loop: asyncio's own (uvloop cannot be imported)" in caplog.text

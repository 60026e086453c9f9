"""The event loop the agent and the relay run on: uvloop's when it can be imported (a relayed first token is that
much sooner, docs/benchmarks.md), else asyncio's own. Which one runs is logged at start."""

import asyncio
import logging

log = logging.getLogger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # a platform without a wheel (Windows), or an install without it: asyncio's loop does it all
        log.info("event loop: asyncio's own (uvloop cannot be imported)")
        return asyncio.new_event_loop()
    log.info("event loop: uvloop %s", uvloop.__version__)
    return uvloop.new_event_loop()

"""node_agent/drain.py when the relay does not take the GOAWAY: a tunnel whose WebSocket is paused (the relay not
reading; aiohttp's send waits for the transport to drain) must not hold the stop. The tasters waiting in the queue
are still answered at once and the drain still ends by its deadline."""

import asyncio
import time
from types import SimpleNamespace

from node_agent import drain

DRAIN = 0.5
BOUND = 1.0 + DRAIN + drain.AFTER_CUT_SEC + 0.5  # a GOAWAY gets a second at most


class Waiting:
    """An answer still waiting in the queue, as drain sees it (a Relay's two attributes)."""

    generation_started = None
    shutting_down = False


class WedgedTunnel:
    streams: dict = {}

    async def say_goaway(self, reason: str) -> None:
        await asyncio.Event().wait()  # a send blocked on a paused transport


def test_a_goaway_the_relay_does_not_take_does_not_hold_the_stop():
    async def scenario():
        waiting = Waiting()
        agent = SimpleNamespace(
            tunnel=SimpleNamespace(current=WedgedTunnel()),
            in_flight={},
            config=SimpleNamespace(drain_timeout=DRAIN),
        )

        async def handler():
            try:
                await asyncio.Event().wait()
            finally:
                agent.in_flight.pop(waiting, None)

        task = asyncio.ensure_future(handler())
        agent.in_flight[waiting] = task
        await asyncio.sleep(0)
        started = time.monotonic()
        await asyncio.wait_for(drain.drain(agent), timeout=BOUND + 1)
        return time.monotonic() - started, task, waiting

    elapsed, task, waiting = asyncio.run(scenario())
    assert task.cancelled() and waiting.shutting_down
    assert elapsed < BOUND

"""What the agent does with the answers in flight when it is stopped (SIGTERM, Ctrl-C), so that it exits well within
a service manager's stop timeout (deploy/luckrig-node.service: TimeoutStopSec=30) and no taster is left hanging.

By the time this runs aiohttp has closed the listening socket and the idle connections. Then:
1. a relayed agent tells its relay GOAWAY: new tasters get the relay's `503 node_offline` (with Retry-After) rather
   than a request sent into a closing agent;
2. tasters still waiting in the queue are answered at once with `503 shutting_down` (an error event then
   `data: [DONE]` when their stream's headers are out): no slot will open for them here;
3. generations in progress get --drain-timeout seconds (default 15) to finish as usual;
4. those still going then end the same way, `shutting_down`, with what was generated so far booked.
Each answer ends cleanly; none is cut mid-event."""

import asyncio
import contextlib
import logging
import time

from node_agent.errors import AgentError

log = logging.getLogger("luckrig.agent")

AFTER_CUT_SEC = 2.0  # for the cut answers to be written (and carried through the tunnel) before the loop stops
# The GOAWAY's longest wait: a send waits while the tunnel's WebSocket is paused (a relay not reading), and the stop
# must not wait on that relay (the waiting tasters are answered next).
GOAWAY_SEC = 1.0


def shutting_down() -> AgentError:
    return AgentError(
        503,
        "shutting_down",
        "The rig's agent is restarting; this answer was ended early. Try again in a minute.",
        headers={"Retry-After": "30"},
    )


async def drain(agent) -> None:
    """Wait for the answers in flight (`agent.in_flight`: each Relay and its handler's task), cutting them cleanly
    at the deadline. The handlers themselves write the cut (Relay.shut_down): only they know what has been sent."""
    started = time.monotonic()
    if agent.tunnel is not None and agent.tunnel.current is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GOAWAY_SEC):
                await agent.tunnel.current.say_goaway("agent shutting down")
    waiting = [relay for relay in agent.in_flight if not relay.generation_started]
    if agent.in_flight:
        log.info(
            "stopping: %d answer(s) in flight (%d waiting in the queue, ended now); up to %g s for the others",
            len(agent.in_flight),
            len(waiting),
            agent.config.drain_timeout,
        )
    cut(agent, waiting)
    deadline = started + agent.config.drain_timeout
    while agent.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if agent.in_flight:
        log.warning(
            "stopping: %d answer(s) still generating after %g s; ending them",
            len(agent.in_flight),
            agent.config.drain_timeout,
        )
        cut(agent, list(agent.in_flight))
    settle = time.monotonic() + AFTER_CUT_SEC
    streams = agent.tunnel.current.streams if agent.tunnel is not None and agent.tunnel.current is not None else {}
    while (agent.in_flight or streams) and time.monotonic() < settle:
        await asyncio.sleep(0.05)


def cut(agent, relays) -> None:
    for relay in relays:
        task = agent.in_flight.get(relay)
        if task is not None and not relay.shutting_down:
            relay.shutting_down = True
            task.cancel()

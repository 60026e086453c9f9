"""Running the agent's server (`luckrig-node serve`): the loop, the connection guard installed before it listens,
and, for a rig pinned `--visibility local`, HTTPS with a certificate for its identity key (node_agent/lan_tls.py)."""

import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import web

from node_agent import event_loop, identity, lan_tls, logs
from node_agent.config import AgentConfig
from node_agent.connections import ConnectionGuard
from node_agent.server import AGENT, build_app


def serve(config: AgentConfig) -> None:
    """Run the agent until SIGINT or SIGTERM: web.run_app's loop, with the connection guard installed on the
    server before it listens (run_app gives no access to it)."""
    repeats = logs.install(config.log_repeat_window)
    app = build_app(config)
    app[AGENT].repeats = repeats
    # A local rig serves its paired devices over TLS pinned to its identity key: the LAN cannot read the prompts,
    # and a device announcing this rig's key elsewhere cannot pass for it (node_agent/lan_tls.py).
    tls = lan_tls.server_context(identity.load_or_create(Path(config.config_dir))) if config.local else None
    app[AGENT].tls = tls is not None
    guard = ConnectionGuard(config.max_connections_per_address, exempt_loopback=not config.limit_loopback)

    async def main() -> None:
        runner = web.AppRunner(
            app,
            handle_signals=True,
            # A client that goes away cancels its handler, which leaves the queue or closes the upstream request
            # (so llama.cpp stops generating) at once.
            handler_cancellation=True,
            access_log=None,
            logger=logging.getLogger(logs.HTTP_LOGGER),  # malformed requests: one line, counted (node_agent/logs.py)
            # As in web.run_app: aiohttp closes a connection idle this long, and one that has not sent a whole
            # request head by then (a head trickled byte by byte); --body-timeout then bounds the body.
            keepalive_timeout=75.0,
            # After node_agent/drain.py nothing should be left; a request still arriving gets this long, twice.
            shutdown_timeout=2.0,
        )
        await runner.setup()
        guard.install(runner.server)
        await web.TCPSite(runner, config.host, config.port, ssl_context=tls).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    loop = event_loop.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        leftovers = asyncio.all_tasks(loop)
        for leftover in leftovers:
            leftover.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

"""The relay's stop (relay/server.py's drain) with an agent that stopped reading its tunnel (a frozen or suspended
machine whose connection is still open) while tasters' requests were being sent to it: the tunnel's WebSocket is
paused, and closing it waits for that transport to drain, which never happens. The stop must still end in time."""

import asyncio
import time

from relay import server
from tests.relay.harness import relay_setup, run


def test_an_agent_that_stopped_reading_does_not_hold_the_stop(tmp_path):
    async def scenario():
        async with relay_setup(tmp_path) as s:
            wedged = await s.connect(node_id="rig-0")  # connected, never read again
            deadline = time.monotonic() + 5
            while s.relay.registry.get("rig-0") is None:
                assert time.monotonic() < deadline, "the relay did not accept the tunnel"
                await asyncio.sleep(0.01)
            tunnel = s.relay.registry.get("rig-0")
            big = {**s.chat_body(), "messages": [{"role": "user", "content": "x" * 900_000}]}
            tasters = [asyncio.ensure_future(s.chat("rig-0", body=big)) for _ in range(12)]
            transport = tunnel.transport
            deadline = time.monotonic() + 15
            while not transport.get_write_buffer_size() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert transport.get_write_buffer_size(), "the tunnel never filled"
            started = time.monotonic()
            try:
                await asyncio.wait_for(s.relay.drain(s.app), 45)
            finally:
                elapsed = time.monotonic() - started
                for taster in tasters:
                    taster.cancel()
                await wedged.close()
            # The drain's own time (DRAIN_SEC for the open streams) and a little more; not the send loop's 30 s.
            assert elapsed < server.DRAIN_SEC + server.TUNNEL_CLOSE_SEC + 3, f"the drain took {elapsed:.1f} s"
            deadline = time.monotonic() + 5
            while s.relay.registry.get("rig-0") is not None:  # its reader ends once the socket is dropped
                assert time.monotonic() < deadline, "the wedged tunnel is still registered"
                await asyncio.sleep(0.05)

    run(scenario())

"""Running a test double: an aiohttp app in a background thread with its own event loop (ThreadedApp), and a
bounded wait (wait_until). Shared by the doubles in fakes.py, fake_tracker.py and fake_files.py."""

import asyncio
import threading
import time

from aiohttp import web


class ThreadedApp:
    """Run the aiohttp app that a subclass's `build()` returns in a background thread; `base` is its URL."""

    def __init__(self, port: int = 0):
        self.loop = asyncio.new_event_loop()
        self.runner = None
        self.bind_port = port  # 0: any free port; a given one lets a test restart a server where it was
        self.port = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()

        async def start():
            self.runner = web.AppRunner(self.build(), handler_cancellation=True)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", self.bind_port)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

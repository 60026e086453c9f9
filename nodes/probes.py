"""The monitor's health probes: every node's `health_url`, concurrently but bounded, each with a timeout and a
small random delay so that probes do not arrive at every rig in lockstep."""

import asyncio
import random

from core.urlguard import FetchResult, fetch, make_session


async def probe_all(
    targets: list[tuple[str, str]],
    *,
    concurrency: int,
    timeout_sec: float,
    jitter_sec: float,
    allow_private: bool,
) -> dict[str, FetchResult]:
    """Probe `(node_id, url)` pairs; returns node_id → result. Never raises for a node's network trouble."""
    semaphore = asyncio.Semaphore(max(1, concurrency))
    results: dict[str, FetchResult] = {}

    async with make_session(allow_private=allow_private, limit=max(1, concurrency)) as session:

        async def one(node_id: str, url: str):
            if jitter_sec > 0:
                await asyncio.sleep(random.uniform(0, jitter_sec))
            async with semaphore:
                results[node_id] = await fetch(
                    session, url, allow_private=allow_private, timeout_sec=timeout_sec, max_bytes=64 * 1024
                )

        await asyncio.gather(*(one(node_id, url) for node_id, url in targets))
    return results

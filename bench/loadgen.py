"""HTTP load for a fixed time at a fixed concurrency: `wrk` when it is installed, else an aiohttp client.

Both report the same figures: requests per second, p50 and p99 latency, and errors (answers outside 2xx plus
socket errors). wrk is a system tool (`apt-get install wrk`), never a project dependency; its C client costs
the machine far less than a Python one, which matters when the client shares the server's cores.
"""

import asyncio
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass

import aiohttp


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


def client_name(use_wrk: bool) -> str:
    """ "wrk 4.1.0" or "aiohttp 3.x (Python)"."""
    if use_wrk:
        banner = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        found = re.search(r"wrk (\S+)", banner)
        return f"wrk {found.group(1) if found else ''}".strip()
    return f"aiohttp {aiohttp.__version__} (Python)"


def run(url: str, seconds: float, concurrency: int, use_wrk: bool, threads: int = 2) -> Load:
    if use_wrk:
        return _wrk(url, seconds, concurrency, threads)
    return asyncio.run(_aiohttp(url, seconds, concurrency))


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNIT_MS[unit]


def parse_wrk(out: str) -> Load:
    """wrk --latency's report. wrk itself counts only 4xx/5xx as errors ("Non-2xx or 3xx responses"); the
    benchmark checks beforehand that each URL answers 200, so a redirect would not pass unnoticed."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Load(rps, p50, p99, int(bad.group(1)) if bad else 0, sum(map(int, sock.groups())) if sock else 0)


def _wrk(url: str, seconds: float, concurrency: int, threads: int) -> Load:
    threads = max(1, min(threads, concurrency))
    whole = max(1, round(seconds))  # wrk reads whole seconds only
    done = subprocess.run(
        ["wrk", "--latency", "-t", str(threads), "-c", str(concurrency), "-d", f"{whole}s", "--timeout", "10s", url],
        capture_output=True,
        text=True,
        timeout=whole + 60,
    )
    if done.returncode != 0:
        if "unable to connect" in done.stdout + done.stderr:  # wrk gives up when its first connection fails
            return Load(0.0, float("nan"), float("nan"), 0, concurrency)
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


async def _aiohttp(url: str, seconds: float, concurrency: int) -> Load:
    latencies: list[float] = []
    non_2xx = socket_errors = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal non_2xx, socket_errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        non_2xx += not 200 <= resp.status < 300
                except (TimeoutError, aiohttp.ClientError):
                    socket_errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if len(latencies) < 2:
        return Load(0.0, float("nan"), float("nan"), non_2xx, socket_errors)
    cuts = statistics.quantiles(latencies, n=100)
    return Load(len(latencies) / elapsed, cuts[49], cuts[98], non_2xx, socket_errors)

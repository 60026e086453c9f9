"""Benchmark: the node agent and the relay beside LiteLLM's proxy, side by side in one run, one synthetic upstream.

Four paths to the same unpaced synthetic OpenAI-compatible upstream (bench/relay.py's fake, in its own process):
direct; through the agent (its own port); through the relay (`/n/<node_id>/v1`, over that same agent's tunnel);
through LiteLLM's proxy (an `openai/` model whose api_base is the fake). Each path gets the same streamed requests,
interleaved in a rotating order, each client keeping its connection alive: first 100 short streams (20 chunks,
`max_tokens`) for TTFT p50/p99 (time to the first content chunk) and the TTFT added over direct, then 10 long ones
(2,000 chunks) for content chunks per second from first to last.

LiteLLM is never a project dependency: it is installed into a throw-away venv of its own (under the system temp
dir, kept and reused by later runs; `--litellm-venv` to choose), with no database and telemetry off.

    .venv/bin/python bench/proxies.py [--requests 100] [--streams 10] [--chunks 2000] [--litellm-version 1.106.12]
                                      [--litellm-venv DIR] [--skip-litellm]
"""

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.relay import bench_env, one_stream, start_fake, token, wait_http  # noqa: E402
from bench.relay_tunnel import start_relay, start_relayed_agent  # noqa: E402
from tests.processes import daphne, free_port, migrate  # noqa: E402

# 1.106.12: the newest release whose `proxy` extra installs from PyPI here (2026-12-06). 1.110.2's extra requires
# litellm-proxy==1.110.2, and 1.108.14's and 1.109.3's require litellm-proxy-extras releases, none of them on PyPI.
LITELLM_VERSION = "1.106.12"

BODY = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}
SHORT = 20  # content chunks in a TTFT stream (the synthetic upstream honours max_tokens)


def litellm_venv(version: str, where: Path | None) -> Path:
    """A venv with `litellm[proxy]==version`, made once and reused: (its directory)."""
    venv = where or Path(tempfile.gettempdir()) / f"luckrig-bench-litellm-{version}"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == version:
        return venv
    print(f"installing litellm[proxy]=={version} into {venv} (once; later runs reuse it)", file=sys.stderr)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={version}"],
        check=True,
        timeout=1800,
    )
    marker.write_text(version)
    print(f"installed in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return venv


def litellm_config(upstream: str, master_key: str) -> str:
    """The smallest proxy: one model passed through to the upstream, no database, no logging callbacks. (JSON is
    YAML.) LiteLLM refuses to start without a master key; with no database it checks the key in memory."""
    return json.dumps(
        {
            "model_list": [
                {
                    "model_name": "bench",
                    "litellm_params": {"model": "openai/bench", "api_base": upstream + "/v1", "api_key": "none"},
                }
            ],
            "litellm_settings": {"telemetry": False, "callbacks": [], "success_callback": [], "failure_callback": []},
            "general_settings": {"master_key": master_key},
        },
        indent=2,
    )


def start_litellm(venv: Path, upstream: str, tmp: Path) -> tuple[subprocess.Popen, str, str]:
    """`litellm --config` as a process of its own: (process, base URL, master key)."""
    key = "sk-bench-" + secrets.token_hex(16)
    config = tmp / "litellm.yaml"
    config.write_text(litellm_config(upstream, key))
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp),  # nothing of LiteLLM's lands in the real home
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from GitHub at start-up
        "LITELLM_LOG": "ERROR",
        # LiteLLM ends a stream with an error after 100 identical chunks in a row (a model stuck in a loop); the
        # synthetic upstream's chunks are all the same word. The check still runs on every chunk, only later.
        "REPEATED_STREAMING_CHUNK_LIMIT": "1000000000",
    }  # and no DATABASE_URL: without one LiteLLM keeps no spend logs and needs no Prisma
    proc = subprocess.Popen(
        [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp,
        env=env,
        stdout=open(tmp / "litellm.log", "w"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health/liveliness", 180)
    except RuntimeError:
        proc.terminate()
        tail = "\n".join((tmp / "litellm.log").read_text().splitlines()[-15:])
        raise RuntimeError(f"LiteLLM's proxy did not start within 180 s; its log ends:\n{tail}") from None
    return proc, base, key


async def run_paths(paths: dict[str, tuple[str, str | None]], body: dict, n: int, warmup: int) -> dict[str, list]:
    """Each path its own keep-alive client; requests interleaved, the order rotating so no path always goes
    first after another's burst."""
    timeout = aiohttp.ClientTimeout(total=120)
    sessions = {name: aiohttp.ClientSession(timeout=timeout) for name in paths}
    results = {name: [] for name in paths}
    try:
        names = list(paths)
        for i in range(warmup + n):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                url, tok = paths[name]
                run = await one_stream(sessions[name], url + "/v1/chat/completions", tok, body)
                if i >= warmup:
                    results[name].append(run)
    finally:
        for session in sessions.values():
            await session.close()
    return results


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(short: list, long: list, args) -> dict:
    """TTFT from the short streams, chunks/s from the long ones; a stream with fewer chunks than asked for (one a
    proxy ended with an error event, say) counts as incomplete."""
    ttft = [r[0] * 1000 for r in short]
    rates = [r[2] / r[1] for r in long if r[1] > 0]
    return {
        "ttft_p50": pct(ttft, 50),
        "ttft_p99": pct(ttft, 99),
        "rate": statistics.mean(rates) if rates else float("nan"),
        "incomplete": sum(r[2] != SHORT for r in short) + sum(r[2] != args.chunks for r in long),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help=f"short streams ({SHORT} chunks) per path: TTFT")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured short streams per path first")
    parser.add_argument("--streams", type=int, default=10, help="long streams per path: chunks/s")
    parser.add_argument("--chunks", type=int, default=2000, help="content chunks in a long stream (unpaced)")
    parser.add_argument("--litellm-version", default=LITELLM_VERSION)
    parser.add_argument("--litellm-venv", type=Path, default=None, help="default: <temp dir>/luckrig-bench-litellm-V")
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    venv = None if args.skip_litellm else litellm_venv(args.litellm_version, args.litellm_venv)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = bench_env(tmp, LIMITED_MAX_OUTPUT_TOKENS="10000000")
        migrate(env)
        procs = []
        try:
            with daphne(env) as tracker:
                fake, fake_url = start_fake(args.chunks, 0, 0)
                procs.append(fake)
                relay, _ = start_relay(env, tracker, tmp, 60)
                procs.append(relay)
                agent, node_id, agent_url, relayed_url = start_relayed_agent(tracker, fake_url, tmp)
                procs.append(agent)
                tok = token(tracker, node_id)
                paths = {
                    "direct": (fake_url, None),
                    "through the agent": (agent_url, tok),
                    "through the relay (agent tunnelled)": (relayed_url, tok),
                }
                if venv:
                    litellm, litellm_url, key = start_litellm(venv, fake_url, tmp)
                    procs.append(litellm)
                    paths[f"through LiteLLM's proxy {args.litellm_version}"] = (litellm_url, key)
                short = asyncio.run(run_paths(paths, {**BODY, "max_tokens": SHORT}, args.requests, args.warmup))
                long = asyncio.run(run_paths(paths, BODY, args.streams, 2))
        except BaseException:
            for log in sorted(tmp.glob("*.log")):
                print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-15:]),
                      file=sys.stderr)  # fmt: skip
            raise
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    report(args, {name: summary(short[name], long[name], args) for name in short}, load_before, os.getloadavg())


def report(args, rows: dict[str, dict], load_before, load_after) -> None:
    direct = rows["direct"]
    print(
        f"\nPer path, interleaved: TTFT from {args.requests} streams of {SHORT} chunks (after {args.warmup} of "
        f"warm-up), chunks/s from {args.streams} streams of {args.chunks} (after 2); the synthetic upstream unpaced; "
        "one keep-alive aiohttp client per path; tracker, relay, agent, LiteLLM, upstream and client on the same "
        f"{os.cpu_count()} cores (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after)\n"
    )
    print(
        "| path | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | added TTFT p99 ms | chunks/s (mean) | vs direct "
        "| incomplete streams |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        added = "" if row is direct else f"{row['ttft_p50'] - direct['ttft_p50']:.2f}"
        added99 = "" if row is direct else f"{row['ttft_p99'] - direct['ttft_p99']:.2f}"
        print(
            f"| {name} | {row['ttft_p50']:.2f} | {row['ttft_p99']:.2f} | {added} | {added99} | {row['rate']:.0f} | "
            f"{row['rate'] / direct['rate']:.3f} | {row['incomplete']} |"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""Issue 16's Done-when, as processes: two network namespaces joined by a veth pair, no tracker running anywhere.
In A, two local rigs (`luckrig-node serve --visibility local --lan`, each in front of its own fake model server);
in B, the router (`luckrig-node lan`) and an OpenAI SDK session through it. Both rigs answer; one is killed while
it streams, and its stream ends (never hangs) while new requests go to the other; it comes back and is used again.

Both rigs and the router are paired by pinning each other's keys directly (node_agent/paired.py), as `pair` ends;
pairing itself across namespaces is tests/node_agent/test_pairing.py's."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai

from node_agent import identity, lan, paired
from tests.node_agent import netns

ROOT = Path(__file__).resolve().parents[2]
ROUTER_PORT = 8790
QUESTION = [{"role": "user", "content": "hi"}]


def test_the_router_spreads_an_openai_session_over_two_local_rigs_and_survives_one_leaving(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")} | {"PYTHONPATH": str(ROOT)}
    router_dir = tmp_path / "router"
    me = identity.load_or_create(router_dir)
    rigs = {}  # rig name as the router says it (X-LuckRig-Rig) → (config dir, port)
    for n, port in ((1, 8801), (2, 8802)):
        rig_dir = tmp_path / f"rig{n}"
        key = identity.load_or_create(rig_dir)
        paired.PairedStore(rig_dir).pin(me.public_b64, "router")
        paired.PairedStore(router_dir).pin(key.public_b64, f"rig{n}")
        rigs[f"{lan.instance_name(key)}.{lan.SERVICE_TYPE}"] = (rig_dir, port)
    logs = {name: open(tmp_path / f"{name}.log", "a") for name in ("rig1", "rig2", "router")}  # noqa: SIM115
    processes: dict[str, subprocess.Popen] = {}

    def spawn(namespace: str, log: str, *args: str) -> subprocess.Popen:
        command = ["ip", "netns", "exec", namespace, sys.executable, "-m", *args]
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=logs[log], stderr=subprocess.STDOUT)

    with netns.veth_pair() as pair:

        def start_rig(name: str) -> None:
            rig_dir, port = rigs[name]
            module = ["tests.node_agent.lan_rig", str(rig_dir), str(port), "local", pair.address_a]
            processes[name] = spawn(pair.a, rig_dir.name, *module)

        async def session():
            client = openai.AsyncOpenAI(
                base_url=f"http://127.0.0.1:{ROUTER_PORT}/v1", api_key="unused", max_retries=0, timeout=15
            )

            async def ask() -> str:
                raw = await client.chat.completions.with_raw_response.create(
                    model="smollm2-fake",
                    messages=QUESTION,
                    max_tokens=1,  # one chunk: no wait
                )
                assert raw.parse().choices[0].message.content
                return raw.headers["X-LuckRig-Rig"]

            async def until_answered_by(name: str, seconds: float) -> list[str]:
                answered, deadline = [], time.monotonic() + seconds
                while name not in answered:
                    assert time.monotonic() < deadline, f"{name} never answered: {answered}"
                    try:
                        answered.append(await ask())
                    except openai.APIError:  # the router is not up yet, or sees no rig yet
                        await asyncio.sleep(0.3)
                return answered

            # Both rigs answer: the router sees both and goes round-robin among equals.
            first, second = rigs
            await until_answered_by(first, 40)
            await until_answered_by(second, 20)
            used = {await ask() for _ in range(4)}
            assert used == set(rigs), used

            # A stream in flight on one rig; that rig is killed mid-answer.
            raw = await client.chat.completions.with_raw_response.create(
                model="smollm2-fake", messages=QUESTION, stream=True
            )
            victim = raw.headers["X-LuckRig-Rig"]
            survivor = next(name for name in rigs if name != victim)
            stream = raw.parse()
            chunks = [await anext(aiter(stream))]
            processes[victim].kill()

            async def rest() -> str:
                try:
                    async for chunk in stream:
                        chunks.append(chunk)
                except openai.APIError as exc:  # the router cut it off: a clear end, not a hang
                    return f"error: {type(exc).__name__}"
                return "complete"

            ending = await asyncio.wait_for(rest(), 15)
            # New requests go to the one left (the router moves on before the first byte).
            after = [await ask() for _ in range(3)]
            assert after == [survivor] * 3, after

            # It comes back (same key, same port) and is used again.
            await asyncio.to_thread(processes[victim].wait, 10)
            start_rig(victim)
            await until_answered_by(victim, 40)
            await client.close()
            return ending, len(chunks)

        try:
            for name in rigs:
                start_rig(name)
            processes["router"] = spawn(
                pair.b, "router", "node_agent.cli", "lan", "--config-dir", str(router_dir), "--port", str(ROUTER_PORT)
            )
            ending, chunks = netns.run_in(pair.b, session, timeout=150)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            for log in logs.values():
                log.close()
    assert chunks >= 1 and ending in ("complete", "error: APIError", "error: APIConnectionError"), (ending, chunks)
    rig_log = (tmp_path / "rig1.log").read_text()
    assert "local rig (paired devices only, no tracker)" in rig_log

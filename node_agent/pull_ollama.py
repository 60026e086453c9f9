"""The ollama half of `luckrig-node pull` (node_agent/pull.py): ollama fetches the model itself (`POST /api/pull`),
its progress shown."""

import contextlib
import json

import aiohttp

from node_agent.pull_http import Progress, PullError, reason
from node_agent.terminal import printable


class OllamaPull:
    """Puller's ollama methods (node_agent/pull.py mixes them in): they use its `out` and `say`."""

    async def ollama_pull(self, base: str, name: str) -> None:
        """ollama's POST /api/pull streams one JSON object a line: `status`, and while a layer downloads its
        `digest`, `total` and `completed`; `{"error": ...}` when it fails, and `"success"` last. Its status
        texts come from the ollama being run (and, through it, a registry): printed without control characters."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)  # verifying can be silent
        progress, digest, succeeded = None, None, False
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with session.post(f"{base.rstrip('/')}/api/pull", json={"model": name, "stream": True}) as resp:
                    if resp.status != 200:
                        body = await resp.text()
                        with contextlib.suppress(ValueError, AttributeError):
                            body = json.loads(body).get("error", body)
                        raise PullError(f"ollama refused to pull {name} (HTTP {resp.status}): {printable(body)[:300]}")
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if not isinstance(event, dict):
                            raise ValueError(line)
                        if "error" in event:
                            if progress:
                                progress.end()
                            raise PullError(f"ollama could not pull {name}: {printable(event['error'])[:300]}")
                        status = printable(event.get("status", ""))
                        if event.get("total") and event.get("digest"):
                            if event["digest"] != digest:
                                if progress:
                                    progress.end()
                                digest = event["digest"]
                                progress = Progress(f"ollama {printable(digest)[:19]}", event["total"], 0, self.out)
                            progress.show(event.get("completed") or 0)
                            continue
                        if progress:
                            progress.end()
                            progress, digest = None, None
                        self.say(f"ollama: {status}")
                        succeeded = succeeded or status == "success"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise PullError(f"could not reach ollama at {base}: {reason(exc)}") from exc
            except ValueError as exc:
                raise PullError(f"ollama at {base} answered something that is not its pull progress") from exc
        if not succeeded:
            raise PullError(f"ollama's pull of {name} ended without saying success; run it again")
        self.say(f"ollama has {name}")

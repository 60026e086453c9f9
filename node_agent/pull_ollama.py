"""The ollama half of `luckrig-node pull` (node_agent/pull.py): ollama fetches the model itself (`POST /api/pull`,
its progress shown), and then the model layer ollama wrote is compared with the sha256 the catalog (or --sha256)
expects, read from ollama's manifest by node_agent/model_identity.py, as the rig's identity is.

ollama checks each blob against its manifest's digest as it pulls; what it cannot know is whether that manifest
names the file LuckRig means: a Hugging Face repository may have replaced the file under the same name since the
catalog was written. So the manifest's model layer digest must equal the expected sha256, else the pull fails and
says how to remove the model. When ollama's models folder cannot be read here (ollama running as another user, as
its Linux service does, or in a container), the pull still succeeds but says plainly that the file was not
verified and how to verify it (`--ollama-models DIR`): the model is in ollama either way, and the exit status
reports a check that failed, not one that could not be made (as a download with no expected sha256 does)."""

import contextlib
import json
from pathlib import Path

import aiohttp

from node_agent import model_identity
from node_agent.pull_http import Progress, PullError, Target, reason
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

    def verify_ollama_model(self, models_dir: Path, target: Target) -> bool:
        """Compare the model layer of ollama's manifest for `target.ollama_name` with `target.sha256`: True when
        they match, PullError when they differ, False (said plainly) when the manifest cannot be read here."""
        name, expected = target.ollama_name, (target.sha256 or "").lower()
        wanted = f"catalog {target.catalog_name}" if target.catalog_name else "the sha256 given"
        found = model_identity.ollama_model_blob(models_dir, name)
        if found is None:
            self.say(
                f"NOT verified: could not read ollama's manifest of {name} under {models_dir}, so its sha256 was not "
                f"compared with {wanted} ({expected}). To check it, run the same command with --ollama-models "
                "pointing at ollama's models folder (a Linux service install keeps it in "
                "/usr/share/ollama/.ollama/models; $OLLAMA_MODELS when ollama was given one)"
            )
            return False
        _, digest = found
        if digest.lower() != expected:
            raise PullError(
                f"ollama pulled {name}, but it is not the file {wanted} names: its model layer has sha256 {digest}, "
                f"{wanted} expects {expected}. Do not serve it: remove it with `ollama rm {name}`"
            )
        self.say(f"verified: sha256 {digest} matches {wanted}")
        return True

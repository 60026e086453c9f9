"""Test doubles written from the upstreams' public API docs: an OpenAI-compatible server (llama.cpp's
`/v1/chat/completions`, `/v1/models`, `/props`), an ollama (`/api/version`, `/api/tags`, native `/api/chat`
NDJSON, `/api/pull`, and optionally its `/v1`). Each runs on 127.0.0.1 in a thread with its own event loop
(tests/node_agent/threaded.py), and is configured by setting attributes from the test. The tracker and moderation
doubles are in fake_tracker.py, the file host in fake_files.py; all are importable from here."""

import asyncio
import hashlib
import json
import time

from aiohttp import web

# The doubles and helpers that live in their own modules, importable from here as before.
from tests.node_agent.fake_files import FakeFileHost
from tests.node_agent.fake_tracker import FakeModeration, FakeTracker
from tests.node_agent.threaded import ThreadedApp, wait_until

__all__ = ["FakeFileHost", "FakeModeration", "FakeOllama", "FakeOpenAI", "FakeTracker", "ThreadedApp", "wait_until"]


class FakeOpenAI(ThreadedApp):
    """A llama.cpp-like OpenAI-compatible server with a configurable token rate and failure modes."""

    def __init__(self, port: int = 0):
        super().__init__(port)
        self.model = "smollm2-fake"
        self.words = [f"w{i} " for i in range(12)]
        self.delay = 0.0  # seconds between chunks
        self.rate = 0.0  # chunks per second, paced against the clock (0: as fast as possible)
        # ok | http_500 | die_mid_stream | stall | error_event | drop_reused (a request on a keep-alive connection that
        # already carried one is read, then the connection closed unanswered: an idle-timeout race, or a crash)
        self.mode = "ok"
        self.requests: list[dict] = []
        self.active = 0  # generations in progress (drops when a client goes away)
        self.cancelled = 0
        self.send_usage = True  # False: no usage in streams (llama-cpp-python); "never": nowhere
        self.fail_at = 3  # the chunk at which a failure mode strikes
        self.probe_delay = 0.0  # seconds before a non-streamed answer (the agent's prompt-token question)
        self.llamacpp_tokenizer = False  # serve llama.cpp's /apply-template and /tokenize
        self.model_path = None  # the file llama.cpp's /props names as `model_path` (None: left out)
        # Streamed chunks are compact raw UTF-8, as llama.cpp's server writes them; True: Python's default spacing and
        # \u escapes, as llama-cpp-python writes them.
        self.spaced = False
        # The client address of each chat request: one per TCP connection, so a client that reuses keep-alive
        # connections shows the same address again.
        self.chat_peers: list[tuple] = []
        self.done_delay = 0.0  # seconds between `data: [DONE]` and the end of the body (its last, empty HTTP chunk)

    def text(self) -> str:
        return "".join(self.words)

    def build(self):
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/props", self.props)
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/apply-template", self.apply_template)
        app.router.add_post("/tokenize", self.tokenize)
        return app

    async def health(self, request):
        return web.json_response({"status": "ok"})

    async def apply_template(self, request):
        """llama.cpp's POST /apply-template: the chat body's prompt, template applied (ChatML here), unevaluated."""
        if not self.llamacpp_tokenizer:
            raise web.HTTPNotFound()
        body = await request.json()
        self.requests.append({"path": "/apply-template", **body})
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in body["messages"])
        return web.json_response({"prompt": turns + "<|im_start|>assistant\n"})

    async def tokenize(self, request):
        """llama.cpp's POST /tokenize: one token per word or template marker, plus BOS with `add_special`."""
        if not self.llamacpp_tokenizer:
            raise web.HTTPNotFound()
        body = await request.json()
        self.requests.append({"path": "/tokenize", **body})
        text = body["content"].replace("<|im_start|>", " <s> ").replace("<|im_end|>", " </s> ")
        tokens = list(range(len(text.split()) + (1 if body.get("add_special") else 0)))
        return web.json_response({"tokens": tokens})

    async def models(self, request):
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "created": 1, "owned_by": "llamacpp"}]}
        )

    async def props(self, request):
        path = {"model_path": str(self.model_path)} if self.model_path else {}
        return web.json_response({"total_slots": 1, "default_generation_settings": {"n_ctx": 2048}, **path})

    def event(self, chunk: dict) -> bytes:
        if self.spaced:
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"
        return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

    def chunk(self, delta: dict, finish=None) -> dict:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def chat(self, request):
        body = await request.json()
        self.requests.append(body)
        peer = request.transport.get_extra_info("peername")
        reused = peer in self.chat_peers
        self.chat_peers.append(peer)
        if self.mode == "drop_reused" and reused:
            request.transport.close()
            raise asyncio.CancelledError  # nothing is answered: the handler ends with its connection
        if self.mode == "http_500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        limit = body.get("max_tokens") or len(self.words)
        words = self.words[:limit]
        finish = "length" if limit < len(self.words) else "stop"
        if not body.get("stream"):
            try:
                await asyncio.sleep(self.delay * len(words) + self.probe_delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1,
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(words)},
                            "finish_reason": finish,
                        }
                    ],
                    **(
                        {"usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}}
                        if self.send_usage != "never"
                        else {}
                    ),
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.active += 1
        try:
            await response.write(self.event(self.chunk({"role": "assistant", "content": ""})))
            started = time.monotonic()
            for i, word in enumerate(words):
                if self.rate:
                    ahead = started + i / self.rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if self.mode == "die_mid_stream" and i == self.fail_at:
                    request.transport.close()
                    return response
                if self.mode == "stall" and i == self.fail_at:
                    await asyncio.sleep(3600)
                if self.mode == "garbage_chunk" and i == self.fail_at:
                    await response.write(b"data: 12345\n\n")
                if self.mode == "error_event" and i == self.fail_at:
                    await response.write(b'data: {"error": {"message": "kv cache full"}}\n\n')
                    return response
                await asyncio.sleep(self.delay)
                last = i == len(words) - 1
                await response.write(self.event(self.chunk({"content": word}, finish if last else None)))
            if self.send_usage is True and (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": self.model,
                    "choices": [],
                    "usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)},
                }
                await response.write(self.event(usage))
            await response.write(b"data: [DONE]\n\n")
            await asyncio.sleep(self.done_delay)
            return response
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


class FakeOllama(ThreadedApp):
    """ollama as its API docs describe it: /api/version, /api/tags, native /api/chat (NDJSON), /api/pull. With
    `openai_compat` it also serves /v1/chat/completions the way ollama's OpenAI compatibility does. A pull of a
    name in `published` writes its manifest and blobs into `models_dir` as ollama does (docs/node-agent.md)."""

    def __init__(self, openai_compat: bool = False, models_dir=None):
        super().__init__()
        self.openai_compat = openai_compat
        # Where a successful pull of a `published` name writes its manifest and blobs, as ollama lays out
        # $OLLAMA_MODELS: manifests/<host>/<namespace>/<model>/<tag> and blobs/sha256-<hex>.
        self.models_dir = models_dir
        self.published: dict[str, bytes] = {}  # name → its model file, as the registry serves it
        self.requests: list[dict] = []
        self.words = ["Hello", " from", " ollama", "."]
        self.delay = 0.0  # seconds before each native /api/chat line
        self.eval_count = None  # tokens ollama reports generating (None: one per word)
        # /api/pull: the layers a pull downloads (digest → size), and where it fails: None, "manifest" (an error
        # line before any layer, as for an unknown name) or "download" (an error line after the first progress)
        self.pull_layers = {"sha256:" + "ab" * 32: 3 * 2**20, "sha256:" + "cd" * 32: 512}
        self.pull_error = None

    def build(self):
        app = web.Application()
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/pull", self.pull)
        if self.openai_compat:
            app.router.add_post("/v1/chat/completions", self.openai_chat)
        return app

    async def openai_chat(self, request):
        """ollama's OpenAI compatibility: SSE chunks, usage in a final chunk when asked."""
        body = await request.json()
        self.requests.append({"path": "/v1/chat/completions", **body})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, word in enumerate(self.words):
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": word},
                        "finish_reason": "stop" if i == len(self.words) - 1 else None,
                    }
                ],
            }
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
            }
            await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def version(self, request):
        return web.json_response({"version": "0.12.3"})

    async def tags(self, request):
        return web.json_response(
            {
                "models": [
                    {
                        "name": "llama3.2:1b",
                        "model": "llama3.2:1b",
                        "size": 1321098329,
                        "details": {"family": "llama", "parameter_size": "1.2B", "quantization_level": "Q8_0"},
                    }
                ]
            }
        )

    async def chat(self, request):
        body = await request.json()
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for word in self.words:
            await asyncio.sleep(self.delay)
            line = {
                "model": body["model"],
                "created_at": "2026-11-24T00:00:00Z",
                "message": {"role": "assistant", "content": word},
                "done": False,
            }
            await response.write(json.dumps(line).encode() + b"\n")
        final = {
            "model": body["model"],
            "created_at": "2026-11-24T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "prompt_eval_count": 11,
            "eval_count": len(self.words) if self.eval_count is None else self.eval_count,
        }
        await response.write(json.dumps(final).encode() + b"\n")
        return response

    async def pull(self, request):
        """POST /api/pull as ollama's docs ("Pull a Model") give it: NDJSON lines, `pulling manifest`, then per
        layer `downloading <digest>` with `digest`, `total` and (once some has arrived) `completed`, then
        `verifying sha256 digest`, `writing manifest`, `removing any unused layers`, `success`. A failure is a
        line `{"error": "..."}` (how ollama ends a stream that fails, e.g. `pull model manifest: file does not
        exist` for an unknown name)."""
        body = await request.json()
        self.requests.append({"path": "/api/pull", **body})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def line(obj):
            await response.write(json.dumps(obj).encode() + b"\n")

        await line({"status": "pulling manifest"})
        if self.pull_error == "manifest":
            await line({"error": "pull model manifest: file does not exist"})
            return response
        files = self._layers_of(self.published[body["model"]]) if body["model"] in self.published else None
        layers = {d: len(c) for _, d, c in files} if files else self.pull_layers
        for digest, total in layers.items():
            await line({"status": f"downloading {digest}", "digest": digest, "total": total})
            for completed in (total // 2, total):
                await line(
                    {"status": f"downloading {digest}", "digest": digest, "total": total, "completed": completed}
                )
                if self.pull_error == "download":
                    await line({"error": "max retries exceeded: unexpected EOF"})
                    return response
        for status in ("verifying sha256 digest", "writing manifest", "removing any unused layers", "success"):
            if status == "writing manifest" and files and self.models_dir is not None:
                self._write(body["model"], files)
            await line({"status": status})
        return response

    @staticmethod
    def _layers_of(model: bytes) -> list[tuple[str, str, bytes]]:
        """(mediaType, digest, content) of a pulled model: its GGUF file as the model layer, and a params layer."""
        params = json.dumps({"stop": ["<|im_end|>"]}).encode()
        return [
            (f"application/vnd.ollama.image.{kind}", "sha256:" + hashlib.sha256(content).hexdigest(), content)
            for kind, content in (("model", model), ("params", params))
        ]

    def _write(self, name: str, files: list[tuple[str, str, bytes]]) -> None:
        """The manifest (an OCI image manifest whose layers name blobs by digest) and the blobs, where ollama puts
        them: a name without a host is registry.ollama.ai's, without a namespace the library's, without a tag
        `latest`."""
        base, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
        parts = base.split("/")
        parts = {1: ["registry.ollama.ai", "library"], 2: ["registry.ollama.ai"]}.get(len(parts), []) + parts
        config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
        blobs = self.models_dir / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        for digest, content in [(config_digest, config), *((d, c) for _, d, c in files)]:
            (blobs / digest.replace(":", "-")).write_bytes(content)
        manifest = self.models_dir / "manifests" / "/".join(parts) / tag
        manifest.parent.mkdir(parents=True, exist_ok=True)
        layers = [{"mediaType": m, "digest": d, "size": len(c)} for m, d, c in files]
        manifest.write_text(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {
                        "mediaType": "application/vnd.docker.container.image.v1+json",
                        "digest": config_digest,
                        "size": len(config),
                    },
                    "layers": layers,
                }
            )
        )

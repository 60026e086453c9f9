"""Test doubles written from the upstreams' public API docs: an OpenAI-compatible server (llama.cpp's
`/v1/chat/completions`, `/v1/models`, `/props`), an ollama (`/api/version`, `/api/tags`, native `/api/chat`
NDJSON, and optionally its `/v1`), and an OpenAI-Moderation endpoint. Each runs on 127.0.0.1 in a thread
with its own event loop, and is configured by setting attributes from the test."""

import asyncio
import hashlib
import json
import re
import threading
import time

from aiohttp import web


class ThreadedApp:
    """Run the aiohttp app that a subclass's `build()` returns in a background thread; `base` is its URL."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.runner = None
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
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class FakeOpenAI(ThreadedApp):
    """A llama.cpp-like OpenAI-compatible server with a configurable token rate and failure modes."""

    def __init__(self):
        super().__init__()
        self.model = "smollm2-fake"
        self.words = [f"w{i} " for i in range(12)]
        self.delay = 0.0  # seconds between chunks
        self.rate = 0.0  # chunks per second, paced against the clock (0: as fast as possible)
        self.mode = "ok"  # ok | http_500 | die_mid_stream | stall | error_event
        self.requests: list[dict] = []
        self.active = 0  # generations in progress (drops when a client goes away)
        self.cancelled = 0
        self.send_usage = True  # False: no usage in streams (llama-cpp-python); "never": nowhere
        self.fail_at = 3  # the chunk at which a failure mode strikes
        self.probe_delay = 0.0  # seconds before a non-streamed answer (the agent's prompt-token question)
        self.llamacpp_tokenizer = False  # serve llama.cpp's /apply-template and /tokenize
        self.model_path = None  # the file llama.cpp's /props names as `model_path` (None: left out)

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
            await response.write(
                b"data: " + json.dumps(self.chunk({"role": "assistant", "content": ""})).encode() + b"\n\n"
            )
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
                await response.write(
                    b"data: " + json.dumps(self.chunk({"content": word}, finish if last else None)).encode() + b"\n\n"
                )
            if self.send_usage is True and (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": self.model,
                    "choices": [],
                    "usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)},
                }
                await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
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


class FakeFileHost(ThreadedApp):
    """A file server with HTTP Range (RFC 9110: `Range: bytes=N-` → 206 and `Content-Range: bytes N-M/size`),
    and Hugging Face's model API (`/api/models/<owner>/<repo>?blobs=true`: `sha`, and `siblings` with `rfilename`,
    `size` and `lfs.sha256`). `files` maps a path to bytes or to a Path on disk (served in pieces, not read
    whole); `cut_at` makes the server close the connection after that many bytes of a body (a truncated
    download), `ignore_range` answers 200 with the whole file whatever the Range; `redirects` maps a path to the
    URL it redirects to. Every request's Range header is kept in `ranges`."""

    def __init__(self):
        super().__init__()
        self.files: dict[str, bytes | object] = {}
        self.repos: dict[str, dict] = {}  # "owner/repo" → the model API's answer
        self.redirects: dict[str, str] = {}
        self.cut_at: int | None = None
        self.ignore_range = False
        self.ranges: list[str | None] = []

    def build(self):
        app = web.Application()
        app.router.add_get("/api/models/{owner}/{repo}", self.model_api)
        app.router.add_get("/{path:.*}", self.file)
        return app

    async def model_api(self, request):
        repo = self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")
        if repo is None:
            return web.json_response({"error": "Repository not found"}, status=404)
        return web.json_response(repo)

    async def file(self, request):
        path = "/" + request.match_info["path"]
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        if path not in self.files:
            raise web.HTTPNotFound()
        self.ranges.append(request.headers.get("Range"))
        content = self.files[path]
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        start, status, headers = 0, 200, {}
        wanted = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if wanted and not self.ignore_range:
            start = int(wanted.group(1))
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status, headers = 206, {"Content-Range": f"bytes {start}-{size - 1}/{size}"}
        response = web.StreamResponse(status=status, headers={**headers, "Content-Length": str(size - start)})
        await response.prepare(request)
        sent, limit = 0, size - start if self.cut_at is None else min(self.cut_at, size - start)
        for piece in self._pieces(content, start):
            piece = piece[: limit - sent]
            await response.write(piece)
            sent += len(piece)
            if sent >= limit:
                break
        if sent < size - start:
            request.transport.close()  # the connection drops mid-body, as a failing network or server does
        return response

    @staticmethod
    def _pieces(content, start: int, size: int = 1 << 20):
        if isinstance(content, bytes):
            for at in range(start, len(content), size):
                yield content[at : at + size]
            return
        with content.open("rb") as fh:
            fh.seek(start)
            while piece := fh.read(size):
                yield piece


class FakeModeration(ThreadedApp):
    """An OpenAI Moderation endpoint: flags inputs that contain `flag_word`; `mode` = ok | http_500 | garbage
    | slow."""

    def __init__(self):
        super().__init__()
        self.flag_word = "forbidden-topic"
        self.mode = "ok"
        self.slow_for = ""  # inputs containing this take 30 s to classify
        self.inputs: list[str] = []

    def build(self):
        app = web.Application()
        app.router.add_post("/v1/moderations", self.moderate)
        return app

    async def moderate(self, request):
        body = await request.json()
        self.inputs.append(body.get("input", ""))
        if self.mode == "http_500":
            return web.json_response({"error": "down"}, status=500)
        if self.mode == "garbage":
            return web.Response(text="<html>not json</html>")
        if self.mode == "wrong_shape":
            return web.json_response({"results": [{"flagged": False, "categories": ["violence"]}]})
        if self.mode == "slow" or (self.slow_for and self.slow_for in body.get("input", "")):
            await asyncio.sleep(30)
        flagged = self.flag_word in body.get("input", "")
        return web.json_response(
            {
                "id": "modr-1",
                "model": "omni-moderation-latest",
                "results": [
                    {
                        "flagged": flagged,
                        "categories": {"violence": flagged, "sexual/minors": False},
                        "category_scores": {"violence": 0.99 if flagged else 0.01},
                    }
                ],
            }
        )


class FakeTracker(ThreadedApp):
    """The tracker as a node agent sees it (docs/api.md): `/api/tracker-keys` with a key the test signs tokens
    with, the heartbeat and usage endpoints, `/api/filter-rules`, and `/ws/agent/`. Everything the agent sends
    is recorded with its arrival time (`time.monotonic()`). `ws_mode`: `accept` (answers heartbeats and usage
    like the real one), `refuse` (accepts, then closes with 4401, as the tracker does for a bad secret) or
    `no_upgrade` (404, as when a proxy does not pass websockets)."""

    def __init__(self, node_id: str = "fake-node", node_secret: str = "lrn_fake-secret"):
        super().__init__()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.node_id, self.node_secret = node_id, node_secret
        self.signing_key = Ed25519PrivateKey.generate()
        self.kid = "lr-fake-1"
        self.ws_mode = "accept"
        self.hidden_revoked: list[str] = []  # ws_mode "hidden": the jtis its 403 heartbeat answers carry
        self.ws_attempts: list[float] = []  # every handshake, whatever the answer
        self.ws_messages: list[tuple[float, dict]] = []
        self.http_heartbeats: list[tuple[float, dict]] = []
        self.http_usage: list[tuple[float, dict]] = []
        self.open_sockets: set = set()
        # False: refuse a heartbeat whose telemetry holds a list, as trackers before v1.1 do (invalid_field, field
        # "telemetry", over HTTP and over the link).
        self.telemetry_lists = True
        # The rig's radius every heartbeat answer carries (issue 15): visibility, circles, circle_only_hours.
        self.radius: dict = {}
        self.paths: list[str] = []  # every request's path, whatever it asked

    def build(self):
        @web.middleware
        async def record(request, handler):
            self.paths.append(request.path)
            return await handler(request)

        app = web.Application(middlewares=[record])
        app.router.add_get("/api/tracker-keys", self.tracker_keys)
        app.router.add_get("/api/filter-rules", self.filter_rules)
        app.router.add_post("/api/nodes/{node_id}/heartbeat", self.heartbeat)
        app.router.add_post("/api/nodes/{node_id}/usage", self.usage)
        app.router.add_get("/ws/agent/", self.agent_socket)
        return app

    def public_key_pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return (
            self.signing_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def token(self, tier: str = "limited", **claims) -> str:
        """A tasting token for this node, signed as the tracker signs them."""
        import secrets

        import jwt

        now = int(time.time())
        body = {
            "iss": self.base,
            "aud": self.node_id,
            "sub": "anon:test",
            "jti": "jti-" + secrets.token_hex(8),
            "iat": now,
            "exp": now + 600,
            "tier": tier,
            "crypto_mode": "plain",
            "max_requests": 3,
            "max_output_tokens": 256,
            **claims,
        }
        headers = {"kid": self.kid, "typ": "luckrig-tasting+jwt"}
        return jwt.encode(body, self.signing_key, algorithm="EdDSA", headers=headers)

    def _authorized(self, request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.node_secret}"

    async def tracker_keys(self, request):
        key = {"kid": self.kid, "alg": "EdDSA", "public_key_pem": self.public_key_pem(), "not_after": None}
        return web.json_response({"schema_version": 1, "keys": [key]})

    async def filter_rules(self, request):
        if not self._authorized(request):
            return web.json_response({"error": "refused", "code": "invalid_node_secret"}, status=401)
        return web.json_response({"schema_version": 1, "version": 1, "rules": []})

    def _ack(self) -> dict:
        return {
            "schema_version": 1,
            "status": "available",
            "filter_rules_version": 1,
            "revoked_jtis": [],
            **self.radius,
        }

    def _telemetry_refusal(self, body: dict) -> dict | None:
        telemetry = body.get("telemetry") or {}
        if self.telemetry_lists or not any(isinstance(v, list | dict) for v in telemetry.values()):
            return None
        return {"error": "telemetry: nested values are not allowed", "code": "invalid_field", "field": "telemetry"}

    async def heartbeat(self, request):
        if not self._authorized(request) or request.match_info["node_id"] != self.node_id:
            return web.json_response({"error": "refused", "code": "invalid_node_secret"}, status=401)
        body = await request.json()
        refusal = self._telemetry_refusal(body)
        if refusal is not None:
            return web.json_response({"schema_version": 1, **refusal}, status=400)
        self.http_heartbeats.append((time.monotonic(), body))
        if self.ws_mode == "hidden":  # taken down or banned, as the real tracker answers it
            return web.json_response(
                {"error": "taken down", "code": "taken_down", "revoked_jtis": self.hidden_revoked}, status=403
            )
        return web.json_response(self._ack())

    async def usage(self, request):
        if not self._authorized(request) or request.match_info["node_id"] != self.node_id:
            return web.json_response({"error": "refused", "code": "invalid_node_secret"}, status=401)
        self.http_usage.append((time.monotonic(), await request.json()))
        return web.json_response({"schema_version": 1, "accepted": 1}, status=202)

    async def agent_socket(self, request):
        self.ws_attempts.append(time.monotonic())
        if self.ws_mode == "no_upgrade":
            return web.json_response({"error": "not found", "code": "not_found"}, status=404)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self.ws_mode == "refuse" or not self._authorized(request):
            await ws.close(code=4401, message=b"refused")
            return ws
        if self.ws_mode == "hidden":
            await ws.close(code=4403, message=b"taken down")
            return ws
        self.open_sockets.add(ws)
        try:
            async for msg in ws:
                message = json.loads(msg.data)
                refusal = self._telemetry_refusal(message) if message.get("type") == "heartbeat" else None
                if refusal is not None:
                    await ws.send_json({"type": "error", **refusal})
                    continue
                self.ws_messages.append((time.monotonic(), message))
                if message.get("type") == "heartbeat":
                    await ws.send_json({"type": "heartbeat_ack", **self._ack()})
                elif message.get("type") == "usage":
                    await ws.send_json({"type": "usage_ack", "report_id": message.get("report_id"), "accepted": 1})
        finally:
            self.open_sockets.discard(ws)
        return ws

    def messages(self, kind: str) -> list[tuple[float, dict]]:
        return [(at, m) for at, m in list(self.ws_messages) if m.get("type") == kind]

    def push(self, message: dict) -> int:
        """Send `message` down every open agent websocket, as tracker.agent_link.push does; returns how many."""

        async def send_all():
            for ws in list(self.open_sockets):
                await ws.send_json(message)
            return len(self.open_sockets)

        return asyncio.run_coroutine_threadsafe(send_all(), self.loop).result(10)

    def drop_links(self, code: int = 1001) -> float:
        """Close every open agent websocket from the tracker's side (a restart, a proxy timeout); returns when."""

        async def close_all():
            for ws in list(self.open_sockets):
                await ws.close(code=code)

        dropped = time.monotonic()
        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(10)
        return dropped


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

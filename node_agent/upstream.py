"""Clients for the local LLM server: llama.cpp's server and ollama (both OpenAI-compatible under `/v1`), or
any OpenAI-compatible server; ollama's native `/api/chat` when its `/v1` is missing (old versions).

Streaming reads whatever bytes have arrived (never waiting for a fixed amount, which would turn streaming into
buffering) and yields the SSE events found in them as one batch: each chunk's JSON text as the upstream sent it,
beside the parsed object. The relay passes the text on untouched unless the chunk needs rewriting, and writes a batch
in one write: events that arrived together leave together, and a lone event leaves at once.

The upstream has its own pooled session (`upstream_session`): one keep-alive connection per generation in flight,
reused by the next request. A stream read to its end gives its connection back to the pool (the rest of the body
after `[DONE]` is read in the background); one abandoned midway (a taster gone, a failure) is closed, never reused
half-read."""

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from node_agent.errors import AgentError

log = logging.getLogger("luckrig.agent.upstream")

# The [DONE] of an answer waits for that question: it must be short, and one that fails is not asked again.
PROMPT_QUESTION_TIMEOUT_SEC = 5.0
# An idle pooled connection is closed by the agent before the model server would close it (llama.cpp's server: 5 s
# of keep-alive), so that a request is never written into a connection the server is closing at that moment: such a
# POST could not be retried (the server may have read it), and the taster would get an error.
UPSTREAM_KEEPALIVE_SEC = 4.0
# The longest SSE line a stream may carry (a real chunk is a few hundred bytes): more is a broken upstream.
MAX_LINE_BYTES = 1 << 20
# After `[DONE]`, how long the rest of the body (the chunked encoding's last, empty chunk) may take to arrive so that
# the connection can be reused (read in the background: the taster does not wait); longer, and it is closed.
DRAIN_SEC = 1.0

Event = tuple[bytes | None, dict]  # (the chunk's JSON text as the upstream sent it, or None; the parsed chunk)


def upstream_session(max_active: int) -> aiohttp.ClientSession:
    """The agent's session for its model server: keep-alive connections, as many as generations may run at once
    plus a few for the short questions beside them (models, health, prompt tokens)."""
    connector = aiohttp.TCPConnector(limit=max_active + 8, keepalive_timeout=UPSTREAM_KEEPALIVE_SEC)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


@dataclass
class Detected:
    backend: str
    base_url: str
    models: list[str]
    version: str = ""
    total_slots: int | None = None
    quantizations: dict = field(default_factory=dict)  # model → quantization, where the server says


async def _get_json(session: aiohttp.ClientSession, url: str, timeout: float = 3.0):
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        if resp.status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status)
        return await resp.json(content_type=None)


async def detect(session: aiohttp.ClientSession, base_url: str) -> Detected | None:
    """What answers at `base_url`: ollama (/api/version + /api/tags), llama.cpp (/props + /v1/models) or a
    plain OpenAI-compatible server (/v1/models). None when nothing answers."""
    base = base_url.rstrip("/").removesuffix("/v1")
    try:
        version = await _get_json(session, base + "/api/version")
        tags = await _get_json(session, base + "/api/tags")
        entries = [m for m in tags.get("models", []) if isinstance(m, dict) and (m.get("name") or m.get("model"))]
        models = [m.get("name") or m.get("model") for m in entries]
        quants = {
            m.get("name") or m.get("model"): (m.get("details") or {}).get("quantization_level")
            for m in entries
            if (m.get("details") or {}).get("quantization_level")
        }
        return Detected("ollama", base, models, str(version.get("version", "")), quantizations=quants)
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
        pass
    try:
        models_doc = await _get_json(session, base + "/v1/models")
        models = [m.get("id") for m in models_doc.get("data", []) if isinstance(m, dict) and m.get("id")]
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
        return None
    try:
        props = await _get_json(session, base + "/props")
        return Detected("llama.cpp", base, models, total_slots=props.get("total_slots"))
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
        return Detected("openai", base, models)


async def is_local_host(host: str) -> bool:
    """Whether `host` is this machine or a private network (loopback, RFC 1918, link-local, CGNAT such as
    Tailscale's, unique-local IPv6): every address it resolves to is not a global one. False when it does not
    resolve: an unknown host is treated as a remote API."""
    if not host:
        return False
    try:
        addresses = [host] if _ip(host) else None
        if addresses is None:
            async with asyncio.timeout(2):
                infos = await asyncio.get_running_loop().getaddrinfo(host, None)
            addresses = [info[4][0] for info in infos]
    except (OSError, TimeoutError):
        return False
    return bool(addresses) and all(_ip(a) is not None and not _ip(a).is_global for a in addresses)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is not part of it
    except ValueError:
        return None


class Upstream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        backend: str,
        *,
        timeout_sec: float,
        stall_sec: float,
        count_prompt_tokens: str = "auto",
    ):
        self.session = session
        self.base = base_url.rstrip("/").removesuffix("/v1")
        self.backend = backend
        self.timeout_sec = timeout_sec
        self.stall_sec = stall_sec
        self.native_ollama = False  # switched on when an ollama has no /v1
        self.finishing: set[asyncio.Task] = set()  # bodies read to their end after [DONE] (_finish_later)
        # How prompt tokens are learnt from a server that streams no usage (prompt_tokens below). None: not known
        # yet; False: unsupported, failed or not wanted, and not tried again while this process lives.
        self.asks_prompt_question: bool | None = {"probe": True, "off": False}.get(count_prompt_tokens)
        self.tokenizes_template: bool | None = None if backend == "llama.cpp" else False

    async def models(self) -> list[dict]:
        if self.backend == "ollama":
            tags = await _get_json(self.session, self.base + "/api/tags")
            return [
                {"id": m.get("name"), "object": "model", "created": 0, "owned_by": "ollama"}
                for m in tags.get("models", [])
                if isinstance(m, dict) and m.get("name")
            ]
        doc = await _get_json(self.session, self.base + "/v1/models")
        return [
            {
                "id": m["id"],
                "object": "model",
                "created": m.get("created", 0),
                "owned_by": m.get("owned_by", self.backend),
            }
            for m in doc.get("data", [])
            if isinstance(m, dict) and m.get("id")
        ]

    async def healthy(self) -> bool:
        try:
            await self.models()
            return True
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return False

    async def count_tokens(self, text: str) -> int | None:
        """Tokens in `text` by the upstream's own tokenizer, for servers that stream without usage
        (llama-cpp-python's `/extras/tokenize/count`, llama.cpp's `/tokenize`). None when neither answers."""
        attempts = (
            ("/extras/tokenize/count", {"input": text}, lambda d: d["count"]),
            ("/tokenize", {"content": text}, lambda d: len(d["tokens"])),
        )
        for path, payload, read in attempts:
            try:
                async with self.session.post(
                    self.base + path, json=payload, timeout=aiohttp.ClientTimeout(total=5)
                ) as resp:
                    if resp.status == 200:
                        return int(read(await resp.json(content_type=None)))
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
                continue
        return None

    async def prompt_tokens(self, body: dict) -> int | None:
        """The prompt tokens the server evaluates for this chat body, chat template included, for servers that
        stream without usage; None when it cannot say. llama.cpp's own server is asked to apply its template and
        tokenize (nothing is evaluated); otherwise the server answers a one-token non-streaming request of the
        same body, whose usage says (its prompt is still cached, so that costs about one token). Whichever way
        fails once is not tried again: the [DONE] of every answer would wait for it."""
        if self.tokenizes_template is not False:
            count = await self._template_tokens(body)
            if count is not None:
                self.tokenizes_template = True
                return count
            if self.tokenizes_template is None:
                self.tokenizes_template = False
                log.info("the model server does not apply its chat template on request (/apply-template, /tokenize)")
        if self.asks_prompt_question is None:
            host = urlsplit(self.base).hostname or ""
            self.asks_prompt_question = await is_local_host(host)
            if not self.asks_prompt_question:
                log.info(
                    "the model server streams no usage and %s is not on this machine or a private network: prompt "
                    "tokens are counted by the agent, without a second request per answer "
                    "(--count-prompt-tokens probe asks it anyway)",
                    host,
                )
        if not self.asks_prompt_question:
            return None
        count, failure = await self._prompt_question(body)
        if count is None and self.asks_prompt_question:
            self.asks_prompt_question = False
            log.info(
                "the model server did not say how many prompt tokens it evaluated (%s): not asked again; prompt "
                "tokens are counted by the agent, without the chat template",
                failure,
            )
        return count

    async def _prompt_question(self, body: dict) -> tuple[int | None, str]:
        """A one-token non-streaming request of the same body: (its usage's prompt tokens, or None and why)."""
        payload = {**body, "stream": False, "max_tokens": 1}
        payload.pop("stream_options", None)
        try:
            async with self.session.post(
                self.base + "/v1/chat/completions",
                json=payload,
                timeout=aiohttp.ClientTimeout(total=PROMPT_QUESTION_TIMEOUT_SEC),
            ) as resp:
                if resp.status != 200:
                    return None, f"HTTP {resp.status}"
                usage = (await resp.json(content_type=None)).get("usage") or {}
        except TimeoutError:
            return None, f"no answer within {PROMPT_QUESTION_TIMEOUT_SEC:g} s"
        except (aiohttp.ClientError, ValueError, AttributeError) as exc:
            return None, type(exc).__name__
        value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, ""
        return None, "no usage in its answer"

    async def _template_tokens(self, body: dict) -> int | None:
        """llama.cpp's server: the body's prompt with the chat template applied (/apply-template), tokenized as
        the server tokenizes a chat prompt (/tokenize with add_special: BOS where the model wants one)."""
        payload = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        try:
            async with asyncio.timeout(PROMPT_QUESTION_TIMEOUT_SEC):
                async with self.session.post(self.base + "/apply-template", json=payload) as resp:
                    if resp.status != 200:
                        return None
                    prompt = (await resp.json(content_type=None))["prompt"]
                tokenize = {"content": prompt, "add_special": True, "parse_special": True}
                async with self.session.post(self.base + "/tokenize", json=tokenize) as resp:
                    if resp.status != 200:
                        return None
                    tokens = (await resp.json(content_type=None))["tokens"]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return len(tokens) if isinstance(tokens, list) and tokens else None

    def _timeout(self) -> aiohttp.ClientTimeout:
        # total bounds the whole generation; sock_read bounds the silence between two chunks (a stalled stream).
        return aiohttp.ClientTimeout(total=self.timeout_sec, sock_connect=10, sock_read=self.stall_sec)

    async def stream(self, body: dict) -> AsyncIterator[list[Event]]:
        """Yield batches of OpenAI `chat.completion.chunk` events as the upstream produces them: each batch is what
        one read found, in order."""
        if self.native_ollama:
            async for chunk in self._stream_ollama_native(body):
                yield [(None, chunk)]
            return
        payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            resp = await self.session.post(self.base + "/v1/chat/completions", json=payload, timeout=self._timeout())
            try:
                if resp.status == 404 and self.backend == "ollama":
                    self.native_ollama = True
                else:
                    await _raise_for_status(resp)
                    async for batch in _sse_batches(resp.content):
                        yield batch
                    if not resp.content.at_eof():  # [DONE] came before the body's end: read it meanwhile
                        self._finish_later(resp)
                        resp = None
                    return
            finally:
                if resp is not None:
                    resp.release()  # a body not read to its end (a taster gone, a failure): the connection is closed
        except TimeoutError as exc:
            raise AgentError(502, "upstream_error", "The model server took too long (timed out).") from exc
        except aiohttp.ClientConnectorError as exc:
            raise AgentError(503, "upstream_unavailable", "The model server is not reachable.") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise AgentError(502, "upstream_error", f"The model server failed ({type(exc).__name__}).") from exc
        async for chunk in self._stream_ollama_native(body):  # the 404 above: an ollama without /v1
            yield [(None, chunk)]

    def _finish_later(self, resp: aiohttp.ClientResponse) -> None:
        """Read the rest of a body after its `[DONE]` (normally its last, empty HTTP chunk, a moment later) without
        making the taster wait, so that the connection goes back to the pool; closed if that takes too long."""

        async def finish():
            try:
                async with asyncio.timeout(DRAIN_SEC):
                    while await resp.content.readany():
                        pass
            except (TimeoutError, aiohttp.ClientError):
                pass
            finally:
                resp.release()

        task = asyncio.create_task(finish())
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)

    async def _stream_ollama_native(self, body: dict) -> AsyncIterator[dict]:
        """ollama's native /api/chat (NDJSON) translated into OpenAI chunks."""
        options = {}
        for ours, theirs in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("seed", "seed"),
            ("stop", "stop"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
            ("max_tokens", "num_predict"),
        ):
            if ours in body:
                options[theirs] = body[ours]
        payload = {"model": body.get("model"), "messages": body["messages"], "stream": True, "options": options}
        created, chunk_id = int(time.time()), f"chatcmpl-ollama-{int(time.time() * 1000)}"
        try:
            async with self.session.post(self.base + "/api/chat", json=payload, timeout=self._timeout()) as resp:
                await _raise_for_status(resp)
                first = True
                async for line in resp.content:
                    if not line.strip():
                        continue
                    item = _parsed(line)
                    delta = {"content": item.get("message", {}).get("content", "")}
                    if first:
                        delta["role"] = "assistant"
                        first = False
                    done = bool(item.get("done"))
                    yield {
                        "id": chunk_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": item.get("model", body.get("model")),
                        "choices": [
                            {
                                "index": 0,
                                "delta": delta,
                                "finish_reason": (item.get("done_reason") or "stop") if done else None,
                            }
                        ],
                    }
                    if done:
                        prompt, completion = item.get("prompt_eval_count", 0), item.get("eval_count", 0)
                        yield {
                            "id": chunk_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": item.get("model", body.get("model")),
                            "choices": [],
                            "usage": {
                                "prompt_tokens": prompt,
                                "completion_tokens": completion,
                                "total_tokens": prompt + completion,
                            },
                        }
                        return
        except TimeoutError as exc:
            raise AgentError(502, "upstream_error", "The model server took too long (timed out).") from exc
        except aiohttp.ClientConnectorError as exc:
            raise AgentError(503, "upstream_unavailable", "The model server is not reachable.") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise AgentError(502, "upstream_error", f"The model server failed ({type(exc).__name__}).") from exc


def _parsed(text: bytes) -> dict:
    """One chunk (an SSE event's data, an NDJSON line) as a JSON object; ValueError when it is none, 502 when it is
    the server's error."""
    item = json.loads(text)
    if not isinstance(item, dict):
        raise ValueError("a chunk that is not a JSON object")
    if "error" in item:
        raise AgentError(502, "upstream_error", "The model server reported an error.")
    return item


async def _sse_batches(content: aiohttp.StreamReader) -> AsyncIterator[list[Event]]:
    """The `data:` events of an SSE body, a batch per read (whatever had arrived), up to `[DONE]`."""
    pending = b""
    while True:
        data = await content.readany()
        if not data:
            return  # the body ended without [DONE]: it is complete all the same
        lines = (pending + data).split(b"\n") if pending else data.split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_LINE_BYTES:
            raise ValueError("a line too long")
        batch, done = [], False
        try:
            for line in lines:
                if not line.startswith(b"data:"):
                    continue  # blank lines between events, comments, `event:` lines
                text = line[5:].strip()
                if text == b"[DONE]":
                    done = True
                    break
                batch.append((text, _parsed(text)))
        except (ValueError, AgentError):
            if batch:  # what came before the failure still goes out first, as it would have one event at a time
                yield batch
            raise
        if batch:
            yield batch
        if done:
            return


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status == 200:
        return
    if resp.status in (502, 503, 504):
        raise AgentError(503, "upstream_unavailable", f"The model server is not ready (HTTP {resp.status}).")
    raise AgentError(502, "upstream_error", f"The model server answered HTTP {resp.status}.")

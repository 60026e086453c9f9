"""The hot path: admit a request, wait for a slot (telling the waiter its position), relay the upstream's
chunks as they arrive, and end every stream with a usage chunk carrying the `luckrig` timing object and
`[DONE]`. Keep it allocation-light: one json.loads per chunk (the outcome needs its text), and the chunk's own
bytes passed on untouched unless it needs rewriting (a usage field, or a model name other than the served one, such
as a file path); the events of one upstream read go out in one write. No buffering unless output moderation is in
`block` mode or the token is in public-key mode.

One loop serves both modes: `Relay` is plain mode, and its hooks (`open_request`, `forward`, `generation_ended`,
`answer`, `completion_body`) are what public-key mode (node_agent/public_key_mode.py) overrides to open the
envelope and to seal the answer. Queueing, failures, output moderation and the chunk envelope exist once, here."""

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from node_agent.chat import parse_chat
from node_agent.drain import shutting_down
from node_agent.errors import AgentError

log = logging.getLogger("luckrig.agent.relay")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx must not buffer the stream
}
DONE = b"data: [DONE]\n\n"


def sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def passes_untouched(text: bytes, chunk: dict, model: str) -> bool:
    """Whether an upstream chunk may go to the taster as the upstream wrote it: it carries no usage (the agent's own
    comes at the end) and names the served model (not, say, the model's file path), and its text is already what
    `sse` would write: compact, raw UTF-8 (llama.cpp's server, ollama and vLLM write chunks so). The relay counts on
    that form (relay/witness.py counts `"content":"` keys; relay/gateway.py looks for `"luckrig":`). Inside a JSON
    string a quote is escaped, so `": `, `" :` and `, "` are separators with spaces; a tab or a carriage return
    cannot be inside a JSON string at all, so it is whitespace between tokens (and a carriage return would end the
    taster's SSE line). A rare answer that contains `\\": `, `\\" :` or a `\\u` is merely written again."""
    if "usage" in chunk or (model and chunk.get("model") != model):
        return False
    return (
        text.count(b'"model":') <= 1  # json keeps the last of repeated keys: a hidden name could precede it
        and b'": ' not in text
        and b'" :' not in text
        and b', "' not in text
        and b"\\u" not in text
        and b"\t" not in text
        and b"\r" not in text
    )


def _dumps(obj: dict) -> str:
    # Raw UTF-8, not \u escapes: a public-key answer's selectors are 4 bytes each this way, 12 escaped.
    return json.dumps(obj, ensure_ascii=False)


class ClientStalled(Exception):  # noqa: N818 - a condition, like TimeoutError
    """The taster stopped reading: a write to it stayed blocked longer than --client-stall-timeout. Its connection
    is aborted, which ends the request as a hang-up does (the upstream request closed, the slot freed)."""


def stream_failure(exc: Exception, ticket: str) -> AgentError:
    """The error a stream ends with when generation fails after its headers went out: the agent's own error as it
    is, anything else as 502 `upstream_error` (logged by type only: never the text)."""
    if isinstance(exc, AgentError):
        return exc
    log.warning("stream %s failed: %s", ticket, type(exc).__name__)
    return AgentError(502, "upstream_error", "The answer could not be completed.")


@dataclass
class Outcome:
    """What one generation produced, for the usage ledger and the timing object."""

    content: list[str] = field(default_factory=list)
    content_chunks: int = 0
    usage: dict | None = None
    usage_source: str = "upstream"
    finish_reason: str | None = None
    first_token_at: float | None = None
    chunk_id: str = ""
    model: str = ""
    created: int = 0

    @property
    def text(self) -> str:
        return "".join(self.content)

    def completion_tokens(self) -> int:
        if self.usage and isinstance(self.usage.get("completion_tokens"), int):
            return self.usage["completion_tokens"]
        return self.content_chunks  # llama.cpp-style servers stream one token per chunk


class Relay:
    """One request's journey, in plain mode. `agent` supplies the queue, upstream, policy, ledger and node id.

    The hooks (`open_request`, `forward`, `generation_ended`, `answer`, `completion_body`) are where public-key
    mode differs; everything else, output moderation and the chunk envelope included, is the same loop."""

    def __init__(
        self,
        agent,
        request: web.Request,
        claims,
        messages: list[dict],
        params: dict,
        model: str,
        max_tokens: int,
        truncated_by_budget: bool,
        moderation: dict,
        friend: bool = False,
    ):
        self.agent, self.request, self.claims = agent, request, claims
        self.friend = friend  # the token is for a circle this rig serves: first in its queue
        self.messages, self.params, self.model = messages, params, model
        self.max_tokens, self.truncated_by_budget = max_tokens, truncated_by_budget
        self.moderation = moderation
        self.ticket = "t_" + secrets.token_hex(6)
        self.queue_wait = 0.0
        self.generation_started = 0.0
        self.generation_ended_at = 0.0  # the upstream's stream ended (a usage question after it is not generation)
        # Filled as the upstream streams, so that whatever happens (a client hanging up, an upstream dying) the
        # request is booked with what was actually generated.
        self.outcome = Outcome()
        self.answer_id = ""
        # Output moderation in `block` mode judges the whole answer before any of it is sent: plain mode's
        # chunks wait here until then.
        self.hold_back = agent.policy.moderate_output == "block"
        self.held: list[bytes] = []
        self.shutting_down = False  # set by node_agent/drain.py just before it cancels this answer's handler

    # --- hooks: what public-key mode overrides ---------------------------------------------------------

    @classmethod
    def open_request(cls, body, _agent, _claims) -> tuple[list[dict], dict, bool]:
        """(messages, sampling params, stream) of a chat body, else 400. In plain mode the body is the request."""
        return parse_chat(body)

    async def forward(self, response: web.StreamResponse, events: list) -> None:
        """The upstream chunks that carry a choice, a batch of `(text, chunk)` as one read found them: plain mode
        passes them on at once, in one write (or holds them while output moderation in `block` mode has not judged
        the whole answer). A chunk goes out as the upstream wrote it unless it carries usage (ours comes at the end)
        or a model name other than the served one (some servers put the model's file path there)."""
        model = self.model
        out = []
        for text, chunk in events:
            if text is not None and passes_untouched(text, chunk, model):
                out.append(b"data: " + text + b"\n\n")
                continue
            chunk.pop("usage", None)
            if model:
                chunk["model"] = model
            out.append(sse(chunk))
        data = out[0] if len(out) == 1 else b"".join(out)
        if self.hold_back:
            self.held.append(data)
        else:
            await self.write(response, data)

    async def generation_ended(self, response: web.StreamResponse) -> None:
        """The upstream finished: whatever must reach the taster before output moderation's verdict (plain mode:
        nothing; the chunks went out as they came)."""

    def answer(self, outcome: Outcome) -> list[bytes]:
        """The events of an answer that output moderation let through, before `[DONE]`: plain mode's held-back
        chunks, if any, then the usage chunk with the `luckrig` timing object."""
        return [*self.held, sse(self.chunk([], usage=self.usage_of(outcome), luckrig=self.timing(outcome)))]

    def completion_body(self, outcome: Outcome) -> dict:
        """The non-streaming answer."""
        return self.completion(
            outcome.text, outcome.finish_reason or "stop", usage=self.usage_of(outcome), luckrig=self.timing(outcome)
        )

    # --- the answer's envelope, timing and usage -----------------------------------------------------------

    def chunk(self, choices: list, **extra) -> dict:
        """A `chat.completion.chunk` of this answer: every event the agent writes itself, in both modes."""
        return {
            "id": self.response_id(),
            "object": "chat.completion.chunk",
            "created": self.outcome.created or int(time.time()),
            "model": self.model or self.outcome.model,
            "choices": choices,
            **extra,
        }

    def completion(self, content: str, finish_reason: str, **extra) -> dict:
        """A `chat.completion` of this answer, in both modes."""
        return {
            "id": self.response_id(),
            "object": "chat.completion",
            "created": self.outcome.created or int(time.time()),
            "model": self.model or self.outcome.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
            ],
            **extra,
        }

    def response_id(self) -> str:
        # Fixed at first use: every event of one answer the agent writes itself carries the same id.
        self.answer_id = self.answer_id or self.outcome.chunk_id or f"chatcmpl-{self.ticket}"
        return self.answer_id

    def upstream_body(self) -> dict:
        body = {"model": self.model, "messages": self.messages, **self.params}
        body.pop("max_completion_tokens", None)
        if self.max_tokens is not None:  # None: a paired device that set no limit gets the server's own default
            body["max_tokens"] = self.max_tokens
        return body

    def timing(self, outcome: Outcome) -> dict:
        now = time.monotonic()
        proxy_ttft = (outcome.first_token_at - self.generation_started) if outcome.first_token_at else None
        return {
            "node_id": self.agent.node_id,
            "queue_wait_ms": round(self.queue_wait * 1000, 1),
            "proxy_ttft_ms": round(proxy_ttft * 1000, 1) if proxy_ttft is not None else None,
            "generation_ms": round(((self.generation_ended_at or now) - self.generation_started) * 1000, 1)
            if self.generation_started
            else 0.0,
            "truncated": bool(self.truncated_by_budget and outcome.finish_reason == "length"),
            "usage_source": outcome.usage_source,
            "moderation": self.moderation,
        }

    def usage_of(self, outcome: Outcome) -> dict:
        if outcome.usage:
            return outcome.usage
        completion = outcome.completion_tokens()
        return {"prompt_tokens": 0, "completion_tokens": completion, "total_tokens": completion}

    # --- generation -------------------------------------------------------------------------------------

    async def generate(self, on_events) -> Outcome:
        """Run the upstream stream, awaiting `on_events(events)` for each batch of `(text, chunk)` that carry a
        choice (None: collect only)."""
        outcome = self.outcome
        self.generation_started = time.monotonic()
        # aclosing: however the loop ends (a taster gone, a stalled reader, a failure), the upstream request is
        # closed at once, so the model server stops generating, rather than whenever the generator is collected.
        async with contextlib.aclosing(self.agent.upstream.stream(self.upstream_body())) as batches:
            async for batch in batches:
                events = []
                for event in batch:
                    chunk = event[1]
                    outcome.chunk_id = chunk.get("id") or outcome.chunk_id
                    outcome.model = chunk.get("model") or outcome.model
                    outcome.created = chunk.get("created") or outcome.created
                    if chunk.get("usage"):
                        outcome.usage = chunk["usage"]
                    choices = chunk.get("choices")
                    if not choices:
                        continue  # the upstream's usage chunk: ours replaces it at the end
                    choice = choices[0]
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        if outcome.first_token_at is None:
                            outcome.first_token_at = time.monotonic()
                        outcome.content.append(content)
                        outcome.content_chunks += 1
                    if choice.get("finish_reason"):
                        outcome.finish_reason = choice["finish_reason"]
                    events.append(event)
                if events and on_events is not None:
                    await on_events(events)
        self.generation_ended_at = time.monotonic()
        # The answer finished normally: its slot time is a measurement for the queue's ETA. Taken now, so that the
        # usage question below (and output moderation after) is not counted as generation.
        self.agent.queue.finished(self.ticket, self.generation_ended_at)
        if outcome.usage is None:
            outcome.usage = await self.usage_not_streamed(outcome)
        return outcome

    async def usage_not_streamed(self, outcome: Outcome) -> dict:
        """Usage for an upstream that streamed none (llama-cpp-python ignores stream_options). The prompt tokens are
        what the server really evaluated, chat template included: asked of the server itself with a one-token
        request of the same body (its prompt is still cached, so this costs about one token). Only when that
        fails too does the agent count the messages' text itself, which leaves the template out: `counted`."""
        prompt = await self.agent.upstream.prompt_tokens(self.upstream_body())
        if prompt is None:
            outcome.usage_source = "counted"
            prompt = await self.agent.upstream.count_tokens("\n".join(m["content"] for m in self.messages)) or 0
        completion = outcome.content_chunks
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    @property
    def reached_model(self) -> bool:
        """Whether the upstream produced anything: a request refused before that costs the taster nothing."""
        o = self.outcome
        return bool(self.generation_started and (o.content_chunks or o.finish_reason or o.usage or o.chunk_id))

    def book(self, reserved: int) -> None:
        """Charge the token what was generated, give back the rest of the reservation, log the usage.
        Runs in a `finally`, so a client that hangs up mid-answer is charged for what it consumed."""
        agent, jti = self.agent, self.claims.jti
        if self.claims.local:  # the owner's own paired device: no token budget, no usage for the tracker
            return
        if not self.reached_model:
            agent.ledger.release_request(jti)
            agent.ledger.refund_output_tokens(jti, reserved)
            return
        usage = self.usage_of(self.outcome)
        used = min(reserved, int(usage.get("completion_tokens") or 0))
        agent.ledger.refund_output_tokens(jti, reserved - used)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        agent.ledger.append_usage(
            {
                "jti": jti,
                "requests": 1,
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": used,
                "first_at": now,
                "last_at": now,
            }
        )
        agent.usage_added()

    # --- output moderation ------------------------------------------------------------------------------

    async def judge_output(self, outcome: Outcome) -> AgentError | None:
        """Output moderation, the same in every mode and shape. `block`: the whole answer is checked before any of
        it is sent, and a flagged one is withheld (451) and reported; `record`: it is checked after delivery
        (record_output_later), and the timing object says so."""
        policy = self.agent.policy
        if policy.moderate_output == "block":
            flagged, categories, state = await policy.check_output(outcome.text)
            self.moderation = {**self.moderation, "output": state}
            if flagged:
                await self.agent.report_flag(self.claims, "output", categories)
                return AgentError(451, "moderation_blocked", "The rig's moderation withheld the answer.")
        elif self.moderation.get("output") == "record":
            self.moderation = {**self.moderation, "output": "recorded"}
        return None

    def record_output_later(self, text: str) -> None:
        """`record` mode: classify the delivered answer in the background (the taster does not wait for the
        hook, and the slot is already free) and report a flag if it is flagged."""

        async def run():
            flagged, categories, _state = await self.agent.policy.check_output(text)
            if flagged:
                await self.agent.report_flag(self.claims, "output", categories)

        if self.agent.policy.moderate_output == "record" and text:
            task = asyncio.create_task(run())
            self.agent.background.add(task)
            task.add_done_callback(self.agent.background.discard)

    # --- streaming --------------------------------------------------------------------------------------

    async def write(self, response: web.StreamResponse, data: bytes) -> None:
        """Send `data` to the taster (the headers first, if not sent yet). A write that stays blocked longer than
        --client-stall-timeout means the taster stopped reading: the connection is aborted and ClientStalled
        raised, so that a reader who holds the slot without reading loses it, as one who hangs up does."""
        limit = self.agent.config.client_stall_timeout
        try:
            async with asyncio.timeout(limit):
                if not response.prepared:
                    await response.prepare(self.request)
                await response.write(data)
        except TimeoutError:
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            # No ticket in the message: a flood of stalled readers is one repeated line (node_agent/logs.py).
            log.warning("a client stopped reading for %g s: its stream was ended and its slot freed", limit)
            raise ClientStalled from None

    async def end_with(self, response: web.StreamResponse, error: AgentError) -> None:
        """End a stream with an error event and `[DONE]` (its headers may already be out: the status is 200)."""
        await self.write(response, sse(error.body()) + DONE)

    def shut_down(self) -> AgentError:
        """The agent is stopping (node_agent/drain.py cancelled this handler): the cancellation is taken back, and
        the answer ends with `503 shutting_down`, as an error event if its headers are out."""
        asyncio.current_task().uncancel()
        return shutting_down()

    async def stream(self) -> web.StreamResponse:
        agent = self.agent
        # 429 token_busy or queue_full before headers
        waiter = agent.queue.enter(self.ticket, tier=self.claims.tier, key=self.claims.jti, friend=self.friend)
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        agent.in_flight[self] = asyncio.current_task()
        # Headers go out lazily: with the first queue comment or the first event written. Until then a failure
        # (upstream down, HTTP error) is still a proper HTTP status rather than an error event.
        try:
            if waiter is not None:
                await self._wait_with_comments(waiter, response)
            try:
                outcome = await self.generate(functools.partial(self.forward, response))
            except ClientStalled:
                raise
            except Exception as exc:  # noqa: BLE001 - after headers, every failure ends the stream cleanly
                if not response.prepared:
                    raise
                await self.end_with(response, stream_failure(exc, self.ticket))
                return response
            await self.generation_ended(response)
            withheld = await self.judge_output(outcome)
            if withheld is not None:
                await self.end_with(response, withheld)
                return response
            await self.write(response, b"".join([*self.answer(outcome), DONE]))  # the end of the answer: one write
            self.record_output_later(outcome.text)
            return response
        except ClientStalled:
            return response  # its connection is gone: nothing more can be sent
        except asyncio.CancelledError:
            if not self.shutting_down:
                raise
            error = self.shut_down()
            if not response.prepared:
                raise error from None
            await self.end_with(response, error)
            return response
        finally:
            agent.in_flight.pop(self, None)
            agent.queue.release(self.ticket)

    async def _wait_with_comments(self, waiter, response: web.StreamResponse) -> None:
        """While waiting, send `: queue position=N eta_sec=S` each time the position changes."""
        started = time.monotonic()
        update = None
        last = (waiter.last_position, self.agent.queue.eta_sec(max(1, waiter.last_position)))
        try:
            while not waiter.future.done():
                update = asyncio.ensure_future(waiter.updates.get())
                # Every 15 s without news the position is repeated: proxies drop silent connections.
                done, _ = await asyncio.wait({waiter.future, update}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
                if update in done:
                    last = update.result()
                else:
                    update.cancel()
                    if waiter.future.done():
                        break
                    last = (last[0], self.agent.queue.eta_sec(max(1, last[0])))  # time passed: the ETA is less
                await self.write(response, f": queue position={last[0]} eta_sec={last[1]}\n\n".encode())
            await self.agent.queue.wait(waiter)  # re-raises a cancellation; consumes the result
        except BaseException:
            if update is not None and not update.done():
                update.cancel()
            if not waiter.future.done():
                waiter.future.cancel()
            await asyncio.shield(self._leave(waiter))
            raise
        self.queue_wait = time.monotonic() - started

    async def _leave(self, waiter) -> None:
        with contextlib.suppress(BaseException):  # leaving the line is all that is wanted here
            await self.agent.queue.wait(waiter)

    # --- non-streaming ----------------------------------------------------------------------------------

    async def complete(self) -> web.Response:
        agent = self.agent
        waiter = agent.queue.enter(self.ticket, tier=self.claims.tier, key=self.claims.jti, friend=self.friend)
        agent.in_flight[self] = asyncio.current_task()
        try:
            if waiter is not None:
                started = time.monotonic()
                await agent.queue.wait(waiter)
                self.queue_wait = time.monotonic() - started
            outcome = await self.generate(None)
            withheld = await self.judge_output(outcome)
            if withheld is not None:
                raise withheld
            self.record_output_later(outcome.text)
            return web.json_response(self.completion_body(outcome), dumps=_dumps)
        except asyncio.CancelledError:
            if not self.shutting_down:
                raise
            raise self.shut_down() from None
        finally:
            agent.in_flight.pop(self, None)
            agent.queue.release(self.ticket)

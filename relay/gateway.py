"""The gateway: one OpenAI base URL for every rig, at every relay's root. `POST /v1/chat/completions` (alias
`/chat/completions`) with a contributor key or none, `GET /v1/models`.

A request is validated as the agent would (node_agent.chat.parse_chat: one definition), routed by its `model`
(relay/catalog.py), given a tasting token on the caller's behalf (relay/token_cache.py) and carried to the rig:
through this relay's own tunnel in-process when the rig is connected here (the path `/n/<id>/...` uses, with its
witness), else by HTTP to the rig's `endpoint_url`. The agent is always asked for a stream, so that the gateway
sees its queue comments and the first byte of the answer whatever the client asked for; a client that did not ask
for a stream gets the `chat.completion` assembled from it. A model route may move to the next rig only while the
client has been sent nothing; a rig route never moves. Every answer names its rig (`X-LuckRig-Node`, and
`luckrig.node_id`, checked and overwritten if an agent wrote another)."""

import asyncio
import json
import logging
import time

import aiohttp
from aiohttp import web

from node_agent import cors, frames
from node_agent.chat import parse_chat
from node_agent.errors import AgentError, limited
from relay.addresses import PublicOnlyResolver, url_allowed
from relay.catalog import Catalog
from relay.legs import HttpLeg, Leg, TunnelLeg
from relay.stopping import InFlight
from relay.token_cache import TokenCache
from relay.tunnels import StreamClosed
from relay.witness import Witness

log = logging.getLogger("luckrig.relay.gateway")

NODE_HEADER = "X-LuckRig-Node"
MAX_WAIT_HEADER = "X-LuckRig-Max-Wait"
MAX_WAIT_RANGE = (1, 600)
MAX_CONNECTIONS = 2000  # open HTTP connections to rigs outside this relay's tunnels
MAX_TRIES = 5  # rigs a model route tries before it gives up with the last refusal
# Refusals after which a model route moves on: the rig cannot take the request now, another may.
MOVE_STATUSES = {409, 502, 503, 504}
MOVE_CODES = {"queue_full", "token_busy", "node_unavailable", "node_not_found", "upstream_unavailable"}
# The agent refused the token itself: one fresh token, one retry at the same rig.
RENEW_CODES = {"invalid_token", "token_exhausted"}
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE = b"data: [DONE]\n\n"
ERROR_STATUS = {"moderation_blocked": 451, "prompt_filtered": 422, "upstream_unavailable": 503}


def sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def preflight(request: web.Request) -> web.Response:
    """The agent's CORS preflight, plus the gateway's own request header (a page may send max_wait either way)."""
    response = await cors.preflight(request)
    response.headers["Access-Control-Allow-Headers"] = f"{cors.ALLOW_HEADERS}, {MAX_WAIT_HEADER}"
    return response


async def expose_node_header(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`, after the agent's CORS headers: a page may read which rig answered."""
    if NODE_HEADER in response.headers:
        response.headers["Access-Control-Expose-Headers"] = f"{cors.EXPOSE_HEADERS}, {NODE_HEADER}"


class Refused(Exception):  # noqa: N818 - a refusal, carried to the routing loop
    def __init__(self, error: AgentError, movable: bool):
        super().__init__(error.message)
        self.error, self.movable = error, movable


# The one placeholder that means "no credential": the official OpenAI SDK refuses an empty api_key, so an anonymous
# caller needs a word to put there. Exactly this word: any other bearer that is not a contributor key is refused,
# so that a mistyped key is told so instead of quietly getting the limited tier.
ANONYMOUS = "anonymous"


def credential(authorization: str | None) -> str | None:
    """The caller's contributor key, or None for an anonymous caller (limited tier): no Authorization header,
    `Bearer ` with nothing after it, or `Bearer anonymous`."""
    if not authorization or not authorization.strip():
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value in ("", ANONYMOUS):
        return None  # an SDK given an empty key sends `Bearer `; one given the placeholder, `Bearer anonymous`
    if scheme.lower() != "bearer" or not value.startswith("lrk_") or len(value) > 200:
        raise AgentError(
            401,
            "invalid_credential",
            "The gateway takes a LuckRig contributor key (Bearer lrk_...), or `Bearer anonymous` or no credential "
            "at all for the limited tier; tasting tokens are for the per-rig paths /n/<node_id>/v1.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return value


def max_wait_of(request: web.Request, body: dict) -> float | None:
    raw = request.headers.get(MAX_WAIT_HEADER, body.get("max_wait"))
    if raw is None:
        return None
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not MAX_WAIT_RANGE[0] <= value <= MAX_WAIT_RANGE[1]:
        raise AgentError(
            400, "invalid_request", "max_wait must be a number of seconds from 1 to 600.", extra={"param": "max_wait"}
        )
    return value


def queue_timeout(retry_after: float, message: str) -> AgentError:
    return limited("queue_timeout", message, max(1, round(retry_after)), "Try a model route, or later.")


def queue_eta(comment: bytes) -> float | None:
    """The eta_sec of an agent's `: queue position=N eta_sec=S` comment."""
    _, found, rest = comment.partition(b"eta_sec=")
    try:
        return float(rest.split()[0]) if found else None
    except (ValueError, IndexError):
        return None


class Attempt:
    """One rig's answer as it arrives: its events split out of the bytes, its first content noticed, its final
    chunk's `luckrig.node_id` checked."""

    def __init__(self, leg: Leg, node_id: str, witness: Witness | None):
        self.leg, self.node_id, self.witness = leg, node_id, witness
        self.rest = b""
        self.answered = False  # a data event other than an error has come: the answer has begun
        self.eta: float | None = None

    async def events(self, timeout: float | None) -> list[bytes] | None:
        """The next complete events (None at the end). TimeoutError when nothing complete came in `timeout`."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.leg.read()
                if data is None:
                    return None
                if self.witness is not None:
                    self.witness.saw(data)
                self.rest += bytes(data)
                end = self.rest.rfind(b"\n\n")
                if end >= 0:
                    complete, self.rest = self.rest[:end], self.rest[end + 2 :]
                    events = [self._vet(e + b"\n\n") for e in complete.split(b"\n\n") if e.strip(b"\n")]
                    if events:
                        return events

    def _vet(self, event: bytes) -> bytes:
        if event.startswith(b":"):
            self.eta = queue_eta(event) or self.eta
        elif event.startswith(b"data: ") and not self.answered and not event.startswith(b'data: {"error"'):
            self.answered = event != DONE
        if b'"luckrig":' in event and event.startswith(b"data: {"):
            chunk = json.loads(event[6:])
            luckrig = chunk.get("luckrig")
            if isinstance(luckrig, dict) and luckrig.get("node_id") != self.node_id:
                log.warning("rig %s named another node in its answer; corrected", self.node_id)
                luckrig["node_id"] = self.node_id
                return sse(chunk)
        return event


class Gateway:
    def __init__(self, relay):
        self.relay = relay  # relay.server.Relay
        config = relay.config
        self.catalog = Catalog(
            session=None, tracker=config.tracker, relay_id=config.relay_id, secret=config.relay_secret
        )
        self.tokens = TokenCache(
            session=None,
            tracker=config.tracker,
            relay_id=config.relay_id,
            secret=config.relay_secret,
            ttl_sec=config.token_ttl or None,
        )
        self.session: aiohttp.ClientSession | None = None
        self.in_flight = InFlight()  # relay/stopping.py: what a stop waits for, then cuts cleanly

    def start(self) -> asyncio.Task:
        # A session of its own: the relay's (tracker calls) keeps aiohttp's default of 100 connections, while
        # answers carried from other relays and direct rigs may be many more, and long.
        allow_private = bool(self.relay.config.allow_private_rigs)
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, resolver=PublicOnlyResolver(allow_private))
        self.session = aiohttp.ClientSession(trust_env=False, connector=connector)
        self.catalog.session = self.tokens.session = self.session
        return asyncio.create_task(self.catalog.run())

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    # --- GET /v1/models ---------------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return await preflight(request)
        if self.catalog.fetched_at is None:
            await self.catalog.refresh()
        data = []
        for key, rigs in sorted(self.catalog.by_model.items()):
            queues = [r.get("queue") or {} for r in rigs]
            luckrig = {
                "rigs": len(rigs),
                "available": sum(1 for r in rigs if r.get("status") == "available"),
                "queue": {k: sum(int(q.get(k) or 0) for q in queues) for k in ("waiting", "active")},
            }
            data.append({"id": key, "object": "model", "created": 0, "owned_by": "luckrig", "luckrig": luckrig})
        for node_id, rig in sorted(self.catalog.rigs.items()):
            luckrig = {k: rig.get(k) for k in ("model", "quantization", "gpu", "status", "queue") if k in rig}
            data.append(
                {"id": f"rig:{node_id}", "object": "model", "created": 0, "owned_by": "luckrig", "luckrig": luckrig}
            )
        return web.json_response({"object": "list", "data": data}, headers={NODE_HEADER: "none"})

    # --- POST /v1/chat/completions ----------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return await preflight(request)
        node_id = "none"
        try:
            return await self._chat(request)
        except AgentError as exc:
            node_id = exc.headers.get(NODE_HEADER) or node_id
            exc.headers[NODE_HEADER] = node_id
            raise

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        relay = self.relay
        wait = relay.limiter.take(relay.client_key(request))
        if wait:
            raise limited(
                "ip_rate_limited",
                f"Too many requests from your address; try again in {int(wait) + 1} s.",
                int(wait) + 1,
                "This per-address rate of the relay is the same for every tier.",
            )
        key = credential(request.headers.get("Authorization"))
        try:
            body = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge as exc:
            raise AgentError(413, "body_too_large", "The request body is too large.") from exc
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise AgentError(400, "invalid_json", "The body is not valid JSON.") from exc
        _, _, stream = parse_chat(body)
        max_wait = max_wait_of(request, body)
        route = await self.catalog.route(body.get("model"))
        if max_wait is not None:
            expected = self.catalog.expected_wait_sec(route.rigs[0])
            if expected > max_wait:
                raise queue_timeout(expected, f"The rig's queue is about {round(expected)} s long, over max_wait.")
        forward = {k: v for k, v in body.items() if k not in ("max_wait", "model", "stream_options")}
        forward["stream"] = True
        payload = json.dumps(forward, separators=(",", ":"), ensure_ascii=False).encode()
        address = relay.client_address(request)
        started = time.monotonic()
        deadline = started + max_wait if max_wait is not None else None
        last: Refused | None = None
        for rig in route.rigs[:MAX_TRIES]:
            can_move = route.kind == "model" and rig is not route.rigs[-1]
            try:
                return await self._serve(request, rig, key, address, payload, deadline, stream, can_move)
            except Refused as refused:  # before the answer began, nothing sent: the next rig may serve
                last = refused
                refused.error.headers[NODE_HEADER] = rig["node_id"]
                if route.kind != "model" or not refused.movable:
                    raise refused.error from None
        if last is None or (route.kind == "model" and last.movable and last.error.status != 429):
            # Every rig the catalog named has gone since (its tunnel, its status): none is live for this model. A
            # line that is full everywhere is said as it is, with its Retry-After.
            raise self.catalog.no_rig(route.name)
        raise last.error

    async def _serve(self, request, rig, key, address, payload, deadline, stream, can_move) -> web.StreamResponse:
        attempt = await self._open(rig, key, address, payload, deadline)
        self.catalog.started(rig["node_id"])
        try:
            answer = self._stream if stream else self._complete
            return await answer(request, attempt, deadline, can_move)
        finally:
            self.catalog.finished(rig["node_id"])

    async def _open(self, rig: dict, key, address: str, payload: bytes, deadline) -> Attempt:
        """A rig's answer with a 200 event-stream head, or Refused. One fresh token, one retry, when the agent
        refuses the cached one."""
        node_id = rig["node_id"]
        for renew in (False, True):
            try:
                token = await self.tokens.get(contributor_key=key, client_ip=address, node_id=node_id, renew=renew)
            except AgentError as exc:
                raise Refused(exc, exc.code in MOVE_CODES) from None
            leg, witness = self._leg(rig, token.token, payload)
            if leg is None:
                raise Refused(AgentError(503, "upstream_unavailable", "The rig is not reachable right now."), True)
            if witness is not None:
                witness.jti = token.jti
            try:
                timeout = None if deadline is None else max(0.01, deadline - time.monotonic())
                status, content_type, retry_after = await asyncio.wait_for(leg.head(), timeout)
            except TimeoutError:
                leg.close(False)
                raise Refused(queue_timeout(1, "No answer from the rig within max_wait."), False) from None
            except StreamClosed as exc:
                leg.close(False)
                if witness is not None:
                    self.relay.link.record(witness.entry("tunnel_lost" if exc.code == "tunnel_lost" else "error"))
                code = "upstream_error" if exc.code == "upstream_error" else "upstream_unavailable"
                raise Refused(AgentError(502 if code == "upstream_error" else 503, code, exc.message), True) from None
            if status == 200 and content_type.startswith("text/event-stream"):
                if witness is not None:
                    witness.status, witness.stream = 200, True
                return Attempt(leg, node_id, witness)
            error = await leg.error(status, retry_after)
            if witness is not None:
                witness.status = status
                self.relay.link.record(witness.entry("error"))
            if error.code in RENEW_CODES and not renew:
                continue
            if error.code in RENEW_CODES:
                self.tokens.forget(contributor_key=key, client_ip=address, node_id=node_id)
            # A fresh token refused too (this agent has not got the tracker's new key yet, say): another rig may not.
            movable = error.status in MOVE_STATUSES or error.code in MOVE_CODES or error.code in RENEW_CODES
            raise Refused(error, movable)
        raise AssertionError("unreachable")

    def _leg(self, rig: dict, token: str, payload: bytes) -> tuple[Leg | None, Witness | None]:
        relay, node_id = self.relay, rig["node_id"]
        headers = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
        tunnel = relay.registry.get(node_id)
        if tunnel is not None:
            head = frames.RequestHead("POST", "/v1/chat/completions", [*headers, ("Accept", "text/event-stream")])
            try:
                stream = tunnel.open(head, payload)
            except StreamClosed:
                return None, None
            # The relay witnesses what it carries through its own tunnels, as on /n/ paths.
            return TunnelLeg(tunnel, stream), Witness(jti="", node_id=node_id, mode="plain", stream=True)
        url = rig.get("endpoint_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return None, None
        if not url_allowed(url, allow_private=bool(self.relay.config.allow_private_rigs)):
            log.warning("not carrying a request to %s: a private, loopback or link-local address", node_id)
            return None, None
        if rig.get("relay_id") == relay.config.relay_id:
            return None, None  # ours, but its tunnel is gone: the catalog is a few seconds behind
        return HttpLeg(self.session, url.rstrip("/") + "/chat/completions", dict(headers), payload), None

    def _end(self, attempt: Attempt, ended: str) -> None:
        attempt.leg.close(ended == "done")
        metrics = self.relay.metrics
        metrics.streams[ended] = metrics.streams.get(ended, 0) + 1
        if attempt.witness is not None:
            self.relay.link.record(attempt.witness.entry(ended))

    async def _stream(self, request, attempt: Attempt, deadline, can_move: bool) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={**SSE_HEADERS, NODE_HEADER: attempt.node_id})
        ended = "done"
        self.in_flight.enter()
        try:
            while True:
                timeout = None if deadline is None or attempt.answered else max(0.01, deadline - time.monotonic())
                try:
                    events = await attempt.events(timeout)
                except TimeoutError:
                    ended = "error"
                    error = queue_timeout(attempt.eta or 1, "The wait for a slot passed max_wait; the request left.")
                    if not response.prepared:
                        raise Refused(error, False) from None
                    await response.write(sse(error.body()) + DONE)
                    return response
                except StreamClosed as exc:
                    ended = "tunnel_lost" if exc.code == "tunnel_lost" else "error"
                    error = AgentError(503, "upstream_unavailable", exc.message or "The rig could not be reached.")
                    if not response.prepared:
                        raise Refused(error, True) from None
                    await response.write((b"" if not attempt.rest else b"\n\n") + sse(error.body()) + DONE)
                    return response
                if events is None:
                    await response.write_eof()
                    return response
                if not response.prepared and not attempt.answered and events[0].startswith(b'data: {"error"'):
                    ended = "error"
                    raise Refused(chunk_error(events[0]), can_move)
                if not response.prepared:
                    await response.prepare(request)
                self.relay.metrics.bytes_out += sum(map(len, events))
                await asyncio.wait_for(response.write(b"".join(events)), self.relay.config.stall_timeout)
        except TimeoutError:
            ended = "stalled"
            if request.transport is not None:
                request.transport.abort()
            return response
        except (asyncio.CancelledError, ConnectionError) as exc:
            ended = "taster_gone"
            cut = self.in_flight.cut_error() if isinstance(exc, asyncio.CancelledError) else None
            if cut is None:
                raise
            ended = "error"
            if not response.prepared:
                raise Refused(cut, False) from None
            await response.write((b"" if not attempt.rest else b"\n\n") + sse(cut.body()) + DONE)
            return response
        finally:
            self.in_flight.leave()
            self._end(attempt, ended)

    async def _complete(self, request, attempt: Attempt, deadline, can_move: bool) -> web.Response:
        chunks: list[dict] = []
        ended = "error"
        self.in_flight.enter()
        try:
            while True:
                timeout = None if deadline is None or attempt.answered else max(0.01, deadline - time.monotonic())
                try:
                    events = await attempt.events(timeout)
                except TimeoutError:
                    raise Refused(
                        queue_timeout(attempt.eta or 1, "The wait for a slot passed max_wait."), False
                    ) from None
                except StreamClosed as exc:
                    ended = "tunnel_lost" if exc.code == "tunnel_lost" else "error"
                    error = AgentError(503, "upstream_unavailable", exc.message or "The rig could not be reached.")
                    raise Refused(error, not chunks) from None
                if events is None:
                    break
                for event in events:
                    if not event.startswith(b"data: {"):
                        continue
                    if event.startswith(b'data: {"error"'):
                        raise Refused(chunk_error(event), can_move and not chunks)
                    chunks.append(json.loads(event[6:]))
            ended = "done"
            return web.json_response(completion(chunks), headers={NODE_HEADER: attempt.node_id})
        except (asyncio.CancelledError, ConnectionError) as exc:
            cut = self.in_flight.cut_error() if isinstance(exc, asyncio.CancelledError) else None
            if cut is None:
                ended = "taster_gone"
                raise
            raise Refused(cut, False) from None
        finally:
            self.in_flight.leave()
            self._end(attempt, ended)


def chunk_error(event: bytes) -> AgentError:
    """An agent's error event as the error of a response not yet begun."""
    try:
        error = json.loads(event[6:])["error"]
        code, message = str(error.get("code") or "upstream_error"), str(error.get("message") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = "upstream_error", "The rig's answer could not be read."
    return AgentError(ERROR_STATUS.get(code, 502), code, message)


def completion(chunks: list[dict]) -> dict:
    """The `chat.completion` the agent would have answered, from its stream: content, finish reason, usage and
    the `luckrig` object of its final chunk."""
    content, finish, final = [], None, {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                content.append(piece)
            finish = choice.get("finish_reason") or finish
        if "luckrig" in chunk or "usage" in chunk:
            final = chunk
    first = chunks[0] if chunks else {}
    body = {
        "id": first.get("id", ""),
        "object": "chat.completion",
        "created": first.get("created", int(time.time())),
        "model": first.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(content)},
                "finish_reason": finish or "stop",
            }
        ],
    }
    for key in ("usage", "luckrig"):
        if key in final:
            body[key] = final[key]
    return body

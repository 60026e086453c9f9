"""The taster-facing paths: `/n/<node_id>/v1/chat/completions` (alias `/n/<node_id>/chat/completions`),
`/n/<node_id>/v1/models` and `/n/<node_id>/health`, answered by the node's own agent through its tunnel, byte for
byte. The relay adds only what the agent could not: `503 node_offline` when there is no tunnel, an error chunk then
`[DONE]` when the tunnel drops mid-stream, early refusals of tokens the agent would refuse anyway, a body cap, a
per-IP rate limit, and its witness measurements. It never logs prompt or answer text."""

import asyncio
import hashlib
import json
import logging

from aiohttp import web

from node_agent import cors, frames
from node_agent.errors import AgentError, limited
from relay.tunnels import StreamClosed
from relay.witness import Witness

log = logging.getLogger("luckrig.relay")

# tail of /n/<node_id>/... → (method, the agent's own path)
AGENT_PATHS = {
    "v1/chat/completions": ("POST", "/v1/chat/completions"),
    "chat/completions": ("POST", "/chat/completions"),
    "v1/models": ("GET", "/v1/models"),
    "health": ("GET", "/health"),
}
CHAT_TAILS = ("v1/chat/completions", "chat/completions")
# The agent sends its head with the first queue comment or the first chunk of the answer; a rig that stays
# silent this long (its own upstream timeout is shorter by default) is given up on.
HEAD_TIMEOUT_SEC = 600
# What a taster's request carries to the agent: the credential and the body's type. Nothing else (no cookies, no
# addresses: the agent needs neither).
FORWARD_REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept")
# What an agent's answer may carry to a taster: the headers the agent really sends, and nothing a hostile agent
# could use against the relay's origin (Set-Cookie, Location, Refresh, a CSP of its own...). CORS headers are the
# relay's own (cors.add_cors_headers), as are the security headers below.
PASS_RESPONSE_HEADERS = frozenset(
    {"content-type", "content-length", "cache-control", "retry-after", "www-authenticate", "x-accel-buffering"}
)
SAFE_CONTENT_TYPES = ("application/json", "text/event-stream", "text/plain")
# Added to everything the relay serves: its origin hosts answers written by strangers' agents, never pages.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}
SSE_ERROR_TAIL = b"data: [DONE]\n\n"


def rendezvous_pick(node_id: str, relay_ids) -> str | None:
    """The contract's assignment rule (the tracker uses the same): the live relay with the highest
    sha256("<relay_id>|<node_id>") serves the node. Used here only to point a lost taster at the right relay."""
    best, best_score = None, -1
    for relay_id in relay_ids:
        score = int.from_bytes(hashlib.sha256(f"{relay_id}|{node_id}".encode()).digest(), "big")
        if score > best_score:
            best, best_score = relay_id, score
    return best


def vetted_headers(head: frames.ResponseHead) -> list[tuple[str, str]]:
    """The agent's response head as the taster may see it; StreamClosed for an answer no agent gives (a redirect,
    an informational status, an HTML page)."""
    if not 200 <= head.status <= 599 or 300 <= head.status <= 399:
        raise StreamClosed("upstream_error", f"The rig's agent answered with status {head.status}.")
    out = []
    for name, value in head.headers:
        lower = name.lower()
        if lower not in PASS_RESPONSE_HEADERS:
            continue
        if lower == "content-type" and not value.lower().startswith(SAFE_CONTENT_TYPES):
            raise StreamClosed("upstream_error", "The rig's agent answered with a content type it never sends.")
        out.append((name, value))
    return out


def sse_error(code: str, message: str) -> bytes:
    body = AgentError(503 if code in ("upstream_unavailable", "node_offline") else 502, code, message).body()
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n" + SSE_ERROR_TAIL


def _open(tunnel, head: frames.RequestHead, body: bytes | None) -> tuple:
    """(the stream, None), or (None, StreamClosed) when the tunnel has no room for another."""
    try:
        return tunnel.open(head, body), None
    except StreamClosed as exc:
        return None, exc


async def head_of(stream):
    """The agent's head for `stream`, waited for HEAD_TIMEOUT_SEC at most (TimeoutError), in this task: no task of
    its own (as wait_for would start), and no wait at all when it came with the request's first answer frames."""
    if not stream.head.done():
        async with asyncio.timeout(HEAD_TIMEOUT_SEC):
            await asyncio.shield(stream.head)  # a taster who leaves does not cancel the stream's own future
    return stream.head.result()


class HeadWithFirstBytes(web.StreamResponse):
    """A StreamResponse whose head leaves with its first body bytes, in one write to the taster's socket (as aiohttp
    sends a plain Response), rather than alone at prepare(): the taster wakes once, not twice, for its first token.
    The agent's head comes with its first bytes anyway (its handlers prepare their answer with their first write);
    when none are buffered yet, `_answer` sends the head at once."""

    _send_headers_immediately = False  # aiohttp's own switch (web.Response sets it so)


class Routes:
    def __init__(self, relay):
        self.relay = relay  # relay.server.Relay: config, keys, registry, link, limiter, metrics

    def offline(self, node_id: str) -> AgentError:
        relay = self.relay
        elsewhere = rendezvous_pick(node_id, relay.link.relays)
        if elsewhere and elsewhere != relay.config.relay_id:
            url = relay.link.relays[elsewhere].rstrip("/")
            message = f"This rig is not connected to this relay; try {url}/n/{node_id}/v1."
        else:
            message = "This rig is offline: it has no tunnel to the relay right now."
        return AgentError(503, "node_offline", message, headers={"Retry-After": "10"})

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        relay = self.relay
        node_id, tail = request.match_info["node_id"], request.match_info["tail"]
        route = AGENT_PATHS.get(tail)
        if route is None:
            raise AgentError(404, "not_found", "No such endpoint.")
        if request.method == "OPTIONS":
            return await cors.preflight(request)  # the browser's CORS preflight, as the agent answers it
        if request.method != route[0]:
            raise AgentError(405, "method_not_allowed", "Method not allowed.")
        wait = relay.limiter.take(relay.client_key(request))
        if wait:
            # Says when it lifts (Retry-After, retry_after_sec, resets_at: docs/api.md); the rate is every tier's.
            retry = int(wait) + 1
            raise limited(
                "ip_rate_limited",
                f"Too many requests from your address; try again in {retry} s.",
                retry,
                "This per-address rate of the relay is the same for every tier.",
            )
        claims = None
        if tail in CHAT_TAILS and relay.keys.keys:  # with no keys yet (first start, tracker down) the agent decides
            try:
                claims = relay.keys.tasting(request.headers.get("Authorization"), node_id)
            except AgentError as exc:
                if exc.status == 401:
                    relay.link.unknown_kid_seen()
                raise
        tunnel = relay.registry.get(node_id)
        head = frames.RequestHead(
            route[0], route[1], [(h, request.headers[h]) for h in FORWARD_REQUEST_HEADERS if h in request.headers]
        )
        stream = refused = None
        body = b""
        if tail in CHAT_TAILS:
            if tunnel is not None and self._body_on_its_way(request):
                stream, refused = _open(tunnel, head, None)
            # Read whole even when it is refused below: a taster still writing its body would take a refusal sent
            # before the body was read for a dropped connection.
            body = await self._body(request, tunnel, stream)
        if tunnel is None:
            raise self.offline(node_id)
        if stream is not None:
            tunnel.send_body(stream, body)
        elif refused is None:
            stream, refused = _open(tunnel, head, body)
        if stream is None:
            raise limited("queue_full", refused.message, 5, "This relay limit is the same for every tier.") from refused
        witness = None
        if claims is not None:
            witness = Witness(jti=claims.jti, node_id=node_id, mode=claims.crypto_mode, stream=False)
        return await self._answer(request, tunnel, stream, witness)

    def _body_on_its_way(self, request: web.Request) -> bool:
        """Whether the head goes to the agent before the body: when the body is still on its way (a long
        conversation comes in several segments over a real network) and its announced length is within the cap.
        The agent then starts on the request (token, rules, budget) while the body arrives, as it does for a direct
        taster (docs/relay.md). A body of unknown length, or over the cap, is read first: nothing reaches the agent
        before the relay knows it will pass."""
        length = request.content_length
        return length is not None and length <= self.relay.config.max_body_bytes and not request.content.is_eof()

    async def _body(self, request: web.Request, tunnel, stream) -> bytes:
        """The taster's body; a stream opened before it (`stream`) has its head sent first, and is cancelled at the
        agent when the body fails (past the cap after all, or a taster who leaves meanwhile)."""
        try:
            if stream is not None:
                await tunnel.flush()
            return await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            if stream is not None:
                tunnel.cancel(stream)
            raise AgentError(413, "body_too_large", "The request body is too large.") from exc
        except BaseException:
            if stream is not None:
                tunnel.cancel(stream)
            raise

    async def _answer(self, request, tunnel, stream, witness) -> web.StreamResponse:
        relay = self.relay
        response = None
        ended = "done"
        sse = False
        last_bytes = b"\n\n"
        try:
            try:
                await tunnel.flush()  # inside the try: a taster who leaves meanwhile still cancels the stream
                head = await head_of(stream)
                headers = vetted_headers(head)
            except (StreamClosed, TimeoutError) as exc:
                if isinstance(exc, TimeoutError):
                    exc = StreamClosed("upstream_unavailable", "The rig's agent did not answer in time.")
                ended = "tunnel_lost" if exc.code == "tunnel_lost" else "error"
                if exc.code == "body_too_large":
                    raise AgentError(413, "body_too_large", exc.message) from exc
                if exc.code == "upstream_error":
                    raise AgentError(502, "upstream_error", exc.message) from exc
                raise AgentError(503, "upstream_unavailable", exc.message or "The rig could not be reached.") from exc
            response = HeadWithFirstBytes(status=head.status)
            for name, value in headers:
                response.headers.add(name, value)
            sse = response.headers.get("Content-Type", "").startswith("text/event-stream")
            if witness is not None:
                witness.status = head.status
                witness.stream = sse and head.status == 200
                if head.status >= 400:
                    ended = "error"
            await response.prepare(request)
            if not stream.chunks and not stream.ended:
                request.writer.send_headers()  # nothing buffered to carry the head: it goes now, alone
            stall = relay.config.stall_timeout
            while True:
                try:
                    data = await stream.read()
                except StreamClosed as exc:
                    ended = "tunnel_lost" if exc.code == "tunnel_lost" else "error"
                    if sse:
                        # An event cut in half is closed first, so that the error is an event of its own.
                        prefix = b"" if last_bytes == b"\n\n" else b"\n" if last_bytes[-1:] == b"\n" else b"\n\n"
                        await response.write(prefix + sse_error("upstream_unavailable", exc.message))
                    elif request.transport is not None:
                        # A JSON answer cut short cannot be finished: the connection is dropped, so that the taster
                        # sees a failure rather than a short body that looks whole.
                        request.transport.abort()
                    break
                if data is None:
                    await response.write_eof()
                    break
                if witness is not None:
                    witness.saw(data)
                relay.metrics.bytes_out += len(data)
                last_bytes = (last_bytes + bytes(data[-2:]))[-2:]
                try:
                    # In this task (asyncio.timeout, not wait_for, which starts a task per chunk and costs a turn of
                    # the loop each, the first token's included): a write waits only while the taster reads nothing.
                    async with asyncio.timeout(stall):
                        await response.write(data)
                except TimeoutError:
                    # The taster has read nothing for a whole stall period: the stream is cancelled, the rig's
                    # slot freed, and the connection dropped (a half-written answer cannot be finished cleanly).
                    ended = "stalled"
                    tunnel.cancel(stream)
                    if request.transport is not None:
                        request.transport.abort()
                    break
            return response
        except (asyncio.CancelledError, ConnectionError) as exc:
            ended = "taster_gone"
            if isinstance(exc, asyncio.CancelledError):
                raise
            return response
        finally:
            # Whatever happened, the agent learns that this stream is over: a taster who went away frees the
            # rig's slot within a frame's time.
            if stream.ended and stream.closed is None and ended == "done":
                tunnel.done(stream)
            else:
                tunnel.cancel(stream)
            relay.metrics.streams[ended] = relay.metrics.streams.get(ended, 0) + 1
            if witness is not None:
                relay.link.record(witness.entry(ended))

    async def health(self, request: web.Request) -> web.Response:
        relay = self.relay
        return web.json_response(
            {
                "ok": True,
                "service": "luckrig-relay",
                "relay_id": relay.config.relay_id,
                "version": relay.version,
                "tunnels": sum(1 for t in relay.registry.tunnels.values() if t.usable),
            }
        )

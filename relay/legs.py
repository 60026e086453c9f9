"""The two ways the gateway reaches a rig, behind one small interface: through this relay's own tunnel, in-process
(the stream table `/n/<id>/...` uses: no HTTP hop), or by HTTP to the rig's `endpoint_url` (a direct rig, or a
rig on another relay, through that relay's `/n/` path). Both give the answer's head, then its bytes as they come,
and StreamClosed when the rig is lost; closing a leg that did not end cleanly cancels the request at the rig, so
that its slot is freed."""

import asyncio
import json

import aiohttp

from node_agent.errors import AgentError
from relay.routes import HEAD_TIMEOUT_SEC, head_of, vetted_headers
from relay.tunnels import StreamClosed, Tunnel

MAX_ERROR_BYTES = 64 * 1024  # an agent's error body is small; more is not read


def agent_error(status: int, body: bytes, retry_after: str | None) -> AgentError:
    """An agent's refusal (its OpenAI-shaped error body) as it was, with its Retry-After."""
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"])[:64], str(error.get("message") or "")[:1000]
        extra = {k: error[k] for k in ("retry_after_sec", "resets_at", "earn_more", "tier", "param") if k in error}
    except (ValueError, KeyError, TypeError):
        code, message, extra = "upstream_error", f"The rig answered HTTP {status}.", {}
    if not 400 <= status <= 599:
        status, code = 502, "upstream_error"
    return AgentError(status, code, message, headers={"Retry-After": retry_after} if retry_after else {}, extra=extra)


class Leg:
    async def head(self) -> tuple[int, str, str | None]:
        """(status, content type, Retry-After) of the rig's answer; StreamClosed if it never comes."""
        raise NotImplementedError

    async def read(self):
        """The next bytes of the answer; None at its end; StreamClosed when the rig is lost."""
        raise NotImplementedError

    async def error(self, status: int, retry_after: str | None) -> AgentError:
        body = bytearray()
        try:
            while len(body) < MAX_ERROR_BYTES:
                data = await asyncio.wait_for(self.read(), 10)
                if data is None:
                    break
                body += data
        except (StreamClosed, TimeoutError):
            pass
        self.close(False)
        return agent_error(status, bytes(body), retry_after)

    def close(self, ok: bool) -> None:
        raise NotImplementedError


class TunnelLeg(Leg):
    def __init__(self, tunnel: Tunnel, stream):
        self.tunnel, self.stream = tunnel, stream

    async def head(self):
        try:
            head = await head_of(self.stream)
        except TimeoutError:
            raise StreamClosed("upstream_unavailable", "The rig's agent did not answer in time.") from None
        headers = {name.lower(): value for name, value in vetted_headers(head)}
        return head.status, headers.get("content-type", ""), headers.get("retry-after")

    async def read(self):
        return await self.stream.read()

    def close(self, ok: bool) -> None:
        stream = self.stream
        if ok and stream.ended and stream.closed is None:
            self.tunnel.done(stream)
        else:
            self.tunnel.cancel(stream)  # the agent stops the rig and frees its slot


class HttpLeg(Leg):
    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict, payload: bytes):
        self.session, self.url, self.headers, self.payload = session, url, headers, payload
        self.response: aiohttp.ClientResponse | None = None

    async def head(self):
        try:
            self.response = await self.session.post(
                self.url,
                data=self.payload,
                headers={**self.headers, "Accept": "text/event-stream"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=HEAD_TIMEOUT_SEC),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise StreamClosed("upstream_unavailable", "The rig could not be reached.") from exc
        status = self.response.status
        if not 200 <= status <= 599 or 300 <= status <= 399:
            raise StreamClosed("upstream_error", f"The rig answered with status {status}.")
        return status, self.response.headers.get("Content-Type", ""), self.response.headers.get("Retry-After")

    async def read(self):
        try:
            data = await self.response.content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise StreamClosed("tunnel_lost", "The connection to the rig was lost.") from exc
        return data or None

    def close(self, ok: bool) -> None:
        if self.response is None:
            return
        if ok:
            self.response.release()
        else:
            self.response.close()  # drops the connection: the agent sees a hang-up and frees the slot

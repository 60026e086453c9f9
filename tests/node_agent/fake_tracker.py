"""The tracker as a node agent sees it (FakeTracker) and an OpenAI-Moderation endpoint (FakeModeration), written
from docs/api.md and OpenAI's docs; each runs on 127.0.0.1 in a thread (tests/node_agent/threaded.py) and is
configured by setting attributes from the test. tests/node_agent/fakes.py exports them too."""

import asyncio
import json
import time

from aiohttp import web

from tests.node_agent.threaded import ThreadedApp


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

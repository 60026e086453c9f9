"""The agent's HTTP server (aiohttp): `/health`, `/v1/models`, `/v1/chat/completions` (and its alias
`/chat/completions`). Prompts and completions are never logged: log lines carry tickets, codes and timings.

Against hostile tasters (issue 11): a request's body must arrive within --body-timeout, connections per client
address are bounded (loopback exempt: a reverse proxy on this machine brings every taster from 127.0.0.1), one
token's share of the queue is bounded (node_agent/queue.py), a client that stops reading loses its stream
(node_agent/relay.py), and a flood of one log line is written once with a count (node_agent/logs.py)."""

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography.exceptions import UnsupportedAlgorithm

from node_agent import (
    __version__,
    auth,
    cors,
    identity,
    keys,
    lan,
    lan_announce,
    logs,
    model_identity,
    paired,
    rules_cache,
    upstream,
)
from node_agent.circles import CircleGuard
from node_agent.config import AgentConfig
from node_agent.drain import drain
from node_agent.errors import AgentError, earn_more, errors_middleware, exhausted
from node_agent.ledger import Ledger
from node_agent.policy import Policy
from node_agent.public_key_mode import PublicKeyRelay, user_public_pem
from node_agent.queue import SlotQueue
from node_agent.relay import Relay
from node_agent.tracker_link import TrackerLink
from node_agent.tunnel import TunnelClient

log = logging.getLogger("luckrig.agent")


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.node_id = "" if config.local else config.node_id  # a local rig has no tracker identity to announce
        self.ledger = Ledger(config.state_dir)
        self.queue = SlotQueue(config.max_active, config.max_waiting, max_per_key=config.max_per_token)
        self.queue.earn_more = lambda tier: earn_more(tier, config.tracker)
        self.circles = CircleGuard(
            pinned_visibility=config.visibility,
            pinned_circles=config.pinned_circles,
            state_file=config.state_dir / "circles.json",
        )
        self.session: aiohttp.ClientSession | None = None  # the tracker, the relay's tunnel, moderation
        self.upstream_session: aiohttp.ClientSession | None = None  # the model server
        self.upstream: upstream.Upstream | None = None
        self.policy: Policy | None = None
        self.link: TrackerLink | None = None
        self.tunnel: TunnelClient | None = None
        self.verifier: auth.TokenVerifier | None = None
        self.models: list[str] = []
        self.model_file: dict | None = None  # the served file's identity, once known (node_agent/model_identity.py)
        self._tasks: list[asyncio.Task] = []
        self.background: set[asyncio.Task] = set()  # output moderation in `record` mode
        self.in_flight: dict = {}  # each answer being served (a Relay) and its handler's task: node_agent/drain.py
        self.repeats: logs.RepeatFilter | None = None  # set by serve(): writes the counts of repeated log lines
        self.lan: lan.LanAdvertiser | None = None  # --lan: the mDNS announcement (node_agent/lan.py)
        self.tls = False  # serving HTTPS with the identity key's certificate (a local rig: node_agent/lan_tls.py)
        # The devices paired with this machine (`luckrig-node pair`), re-read when paired.json changes; the checker
        # of their signatures is made at the first signed request (it needs this machine's identity key).
        self.paired = paired.PairedStore(Path(config.config_dir))
        self.signatures: paired.SignatureChecker | None = None
        # Public-key mode needs the node's private key; without it the agent serves plain mode only (and says so
        # in /health) rather than refusing to start: a bad key file must not take a working rig offline.
        self.private_key = None
        self.fingerprint = None
        if config.node_private_key_file:
            try:
                self.private_key = keys.load_private_key(Path(config.node_private_key_file))
                self.fingerprint = keys.fingerprint_of_public_pem(keys.public_pem_of(self.private_key.public_key()))
            except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
                log.warning("public-key mode is off: the node private key could not be read (%s)", type(exc).__name__)

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        cfg = self.config
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
        # The model server has a pool of its own: keep-alive tuned to it (node_agent/upstream.py).
        self.upstream_session = upstream.upstream_session(cfg.max_active)
        backend = cfg.backend
        if not backend:
            detected = await upstream.detect(self.upstream_session, cfg.upstream)
            backend = detected.backend if detected else "openai"
        self.upstream = upstream.Upstream(
            self.upstream_session,
            cfg.upstream,
            backend,
            timeout_sec=cfg.upstream_timeout,
            stall_sec=cfg.stall_timeout,
            count_prompt_tokens=cfg.count_prompt_tokens,
        )
        self.policy = Policy(
            session=self.session,
            moderation_endpoint=cfg.moderation_endpoint,
            moderation_timeout=cfg.moderation_timeout,
            moderate_output=cfg.moderate_output,
            moderation_api_key=cfg.moderation_api_key or None,
            filter_off=cfg.filter_categories_off,
        )
        rules_cache.apply_cached(self.policy, cfg.state_dir)  # the last fetched, until (unless) a tracker answers
        if not cfg.local:
            self.start_link()
            self._set_keys(await self.link.refresh_keys())
        try:
            self.models = [m["id"] for m in await self.upstream.models()]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            self.models = []
        if self.link is not None:
            self._tasks.append(asyncio.create_task(self.link.run()))
        self._tasks.append(asyncio.create_task(self.identify_model(backend)))
        if cfg.local:  # `luckrig-node rules --update` while it runs
            self._tasks.append(asyncio.create_task(rules_cache.follow(self.policy, cfg.state_dir)))
        if self.repeats is not None:
            self._tasks.append(asyncio.create_task(logs.flush_forever(self.repeats)))
        if cfg.relay != "off" and not cfg.local:
            self.tunnel = TunnelClient(
                session=self.session,
                tracker=cfg.tracker,
                node_id=cfg.node_id,
                node_secret=cfg.node_secret,
                max_body_bytes=cfg.max_body_bytes,
                app=app,  # relayed tasters are served by this very application, in process
            )
            self._tasks.append(asyncio.create_task(self.tunnel.run()))
        if cfg.lan:
            self.lan = lan_announce.start(cfg, self.lan_txt)
        if cfg.local and cfg.tracker:
            log.warning("--visibility local: the tracker %s is not contacted (the pin wins)", cfg.tracker)
        log.info(
            "serving %s in front of %s (%s); %s; filtering %s; %s",
            f"node {self.node_id}" if self.node_id else "this rig",
            backend,
            "upstream reachable" if self.models else "upstream not answering yet",
            f"{len(self.verifier.keys)} tracker key(s)" if self.verifier else "no tracker",
            ", ".join(self.policy.categories) or "nothing",
            self.circles.describe(),
        )

    def start_link(self) -> None:
        """The tracker link (heartbeats, keys, usage reports, pushed rules and radius); never made in local mode."""
        cfg = self.config
        self.link = TrackerLink(
            session=self.session,
            tracker=cfg.tracker,
            node_id=cfg.node_id,
            node_secret=cfg.node_secret,
            state_dir=cfg.state_dir,
            ledger=self.ledger,
            heartbeat_interval=cfg.heartbeat_interval,
        )
        self.link.snapshot = self.heartbeat_body
        self.link.queue_view = self.queue.public_view
        self.queue.on_change = self.link.queue_changed
        self.link.on_keys = self._set_keys
        self.link.on_rules = self.policy.set_rules
        self.link.on_circles = self._radius_told

    def lan_txt(self, key: identity.Identity | None = None) -> dict[str, str]:  # key: default, the announced one
        radius = lan.trust_radius(self.config.tracker, self.circles.visibility)
        key = key or (self.lan.identity if self.lan else None)
        return lan.txt_record(
            node_id=self.node_id,
            public_key=key.public_b64 if key else "",
            model=self.served_model(),
            radius=radius,
            version=__version__,
            tls=self.tls,
        )

    def _radius_told(self, message: dict) -> None:
        """The tracker spoke about the rig's radius: apply it, and re-announce when the LAN's view of it changed."""
        self.circles.apply(message)
        if self.lan is not None:
            task = asyncio.create_task(self.lan.update(self.lan_txt()))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def stop(self, app: web.Application) -> None:
        if self.lan is not None:  # first: the goodbye tells the LAN at once that this rig is going
            await self.lan.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.link is not None:
            # One last try, bounded (the stop must fit the unit's timeout); what fails stays in the log for next time.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.link.report_usage_once(), 3)
        for session in (self.session, self.upstream_session):
            if session is not None:
                await session.close()
        self.ledger.close()

    def served_model(self) -> str:
        """The rig is one model: whatever a client names, the node's model answers (an operator's other
        models stay private, and a taster cannot make the server load a huge one)."""
        name = self.config.model or (self.models[0] if self.models else "")
        return name.rsplit("/", 1)[-1]  # a server that names models by file path: the file name only

    async def identify_model(self, backend: str) -> None:
        """The served model file's identity, found and hashed once (model_identity.identify_served): serving
        never waits for it, and the heartbeats carry `model_identity` from then on."""
        model = self.config.model or (self.models[0] if self.models else "")
        self.model_file = await model_identity.identify_served(
            self.session, self.config, backend=backend, model=model, served=self.served_model()
        )

    def _set_keys(self, keys: dict) -> None:
        self.verifier = auth.TokenVerifier(node_id=self.node_id, issuer=self.config.tracker, keys=keys)

    def heartbeat_body(self) -> dict:
        return {
            "queue": self.queue.public_view(),
            "models": [self.served_model()] if self.models or self.config.model else [],
            "telemetry": {
                "backend": self.upstream.backend if self.upstream else "",
                # Shown on the rig's page: what this rig refuses (the operator may switch categories off).
                "filter_categories": self.policy.categories if self.policy else [],
            },
            **({"model_identity": self.model_file} if self.model_file else {}),
        }

    def usage_added(self) -> None:
        if self.link is not None:
            self.link.usage_added()

    async def report_flag(self, claims, stage: str, categories: list[str]) -> None:
        """Tell the tracker a moderation flag was raised (the jti lets a moderator act on its holder)."""
        if claims.local:  # the owner's own device: the tracker issued nothing to act on
            log.info("a paired device's request was flagged (%s): not reported", stage)
            return
        body = {
            "schema_version": 1,
            "jti": claims.jti,
            "stage": stage,
            "categories": categories[:20],
            "mode": claims.crypto_mode,
        }
        if self.link is None:  # local mode: no tracker to tell (and no tracker token reaches a local rig)
            return
        if await self.link.send_flag({k: v for k, v in body.items() if k != "schema_version"}):
            return
        try:
            async with self.session.post(
                self.config.tracker.rstrip("/") + "/api/moderation/flags",
                json=body,
                headers={"Authorization": f"Bearer {self.config.node_secret}"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 202:
                    log.warning("moderation flag not accepted: HTTP %s", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("moderation flag not sent (%s)", type(exc).__name__)

    # --- handlers ---------------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        ok = await self.upstream.healthy()
        return web.json_response(
            {
                "ok": ok,
                "node_id": self.node_id,
                "engine": {"name": "luckrig-node-agent", "version": __version__, "backend": self.upstream.backend},
                "upstream_ok": ok,
                "crypto_modes": ["plain", "public-key"] if self.private_key is not None else ["plain"],
                "queue": self.queue.snapshot(),
                # Published so that tasters can check the key out of band (POST /api/fingerprint/verify).
                "node_public_key_fingerprint": self.fingerprint,
                # How tasters reach this rig: direct, or relayed (and whether the tunnel is open right now).
                "reachability": self.tunnel.status if self.tunnel is not None else {"relay": "off"},
                # --lan: whether the LAN announcement is out, and the radius it says (null when off or nothing to
                # announce). Not the LAN addresses: /health is public through the relay.
                "lan": self.lan.status() if self.lan is not None else None,
                "filter_categories": self.policy.categories,
                # public, unlisted or circle (who may taste it; the circles themselves are the members' business)
                "visibility": self.circles.visibility,
            }
        )

    def tasting_claims(self, request: web.Request):
        """The token's claims once every token check has passed: signature and audience, revocation, and the
        circle check (issue 15: whatever the tracker issued, a circle rig serves its circles only). Here, one place,
        so that it holds for direct tasters, relayed ones (the tunnel hands them to these handlers) and public-key
        mode alike. A local rig has no tracker keys: every token is refused (`local_only`)."""
        if self.verifier is None:
            self.circles.check(None)  # local: 401
        claims = self.verifier.verify(request.headers.get("Authorization"))
        if claims.jti in self.link.revoked:
            raise AgentError(401, "invalid_token", "This tasting token was revoked.")
        self.circles.check(claims.circle, subject=claims.sub)
        return claims

    def paired_claims(self, request: web.Request, body: bytes) -> auth.Claims:
        """A request signed by a paired device (node_agent/paired.py): claims for the owner's own device, or 401
        (`not_paired`, `invalid_signature`, `stale_signature`, `replayed_signature`). No circle or token check: a
        pinned key is this machine's owner's own decision, above any radius."""
        if self.signatures is None:
            if not self.paired.devices():
                raise AgentError(401, "not_paired", "This rig has not paired with any device.")
            own = identity.load_or_create(Path(self.config.config_dir))
            self.signatures = paired.SignatureChecker(self.paired, own.fingerprint)
        device = self.signatures.verify(request.method, request.path_qs, request.headers, body)
        fingerprint = device.fingerprint
        return auth.Claims(
            jti=f"paired:{fingerprint}",
            sub=fingerprint,
            tier="local",
            crypto_mode="plain",
            max_requests=0,
            max_output_tokens=0,
            exp=0,
            raw={"device": device.name},
            local=True,
        )

    async def models_list(self, request: web.Request) -> web.Response:
        # A circle rig tells what it serves to its circles only: its id (guessable, it is made of the gpu, model
        # and quantization) must not get a stranger the model list through a relay. A signed request is checked
        # whatever the radius, so that a paired device hears at once that its pairing no longer holds.
        if paired.is_signed(request.headers):
            self.paired_claims(request, await self.read_body(request))
        elif self.circles.visibility in ("circle", "local"):
            self.tasting_claims(request)
        try:
            data = await self.upstream.models()
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            raise AgentError(503, "upstream_unavailable", "The model server is not reachable.") from exc
        self.models = [m["id"] for m in data]
        served = self.served_model()
        # Only the rig's own model: an operator's other models are not part of what the rig offers.
        shown = [{**m, "id": served} for m in data if m["id"] in (served, self.config.model)][:1] or [
            {"id": served, "object": "model", "created": 0, "owned_by": self.upstream.backend}
        ]
        return web.json_response({"object": "list", "data": shown})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if paired.is_signed(request.headers):
            # The signature covers the body's sha256: the body is read before anything is decided.
            raw = await self.read_body(request)
            claims = self.paired_claims(request, raw)
        else:
            claims = self.tasting_claims(request)
            raw = None
        public_key_mode = claims.crypto_mode == "public-key"
        relay_class, relay_extra = Relay, {}
        if public_key_mode:
            if self.private_key is None:
                raise AgentError(
                    400,
                    "public_key_mode_unavailable",
                    "This node has no private key loaded (--node-private-key-file), so it serves plain mode only.",
                )
            relay_class, relay_extra = PublicKeyRelay, {"user_public_pem": user_public_pem(claims)}
        elif claims.crypto_mode != "plain":
            raise AgentError(401, "invalid_token", "The tasting token names an unknown crypto mode.")
        if raw is None:
            raw = await self.read_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise AgentError(400, "invalid_json", "The body is not valid JSON.") from exc
        messages, params, stream = relay_class.open_request(body, self, claims)
        if claims.local:
            return await self.chat_paired(request, claims, messages, params, stream)

        if not self.ledger.claim_request(claims.jti, claims.max_requests, claims.exp):
            raise exhausted(claims, f"This tasting token's {claims.max_requests} requests are used up.")
        reserved = 0
        try:
            asked = params.get("max_completion_tokens") or params.get("max_tokens")
            reserved = self.ledger.reserve_output_tokens(
                claims.jti, asked, budget=claims.output_budget, cap=claims.per_request_cap
            )
            if reserved <= 0:
                raise exhausted(claims, f"This tasting token's {claims.output_budget} output tokens are used up.")
            max_tokens = reserved
            moderation = await self.screen(messages)
            relay = relay_class(
                self,
                request,
                claims,
                messages,
                params,
                self.served_model(),
                max_tokens,
                truncated_by_budget=asked is None or max_tokens < asked,
                moderation=moderation,
                friend=self.circles.serves(claims.circle),
                **relay_extra,
            )
        except BaseException:
            # Refused before the model ran: neither the request nor the output budget is spent.
            self.ledger.release_request(claims.jti)
            self.ledger.refund_output_tokens(claims.jti, reserved)
            raise
        started = time.monotonic()
        try:
            return await (relay.stream() if stream else relay.complete())
        finally:
            relay.book(reserved)
            log.info(
                "request %s tier=%s mode=%s stream=%s %.0f ms",
                relay.ticket,
                claims.tier,
                claims.crypto_mode,
                stream,
                (time.monotonic() - started) * 1000,
            )

    async def screen(self, messages: list[dict]) -> dict:
        """The filter rules (422) and input moderation (451) every request meets; the moderation state for the
        timing object."""
        self.policy.check_rules([m["content"] for m in messages])
        moderation = await self.policy.check_input("\n".join(m["content"] for m in messages))
        moderation["output"] = self.policy.moderate_output
        return moderation

    async def read_body(self, request: web.Request) -> bytes:
        try:
            # A body trickled byte by byte would hold the connection (and a file descriptor) for ever.
            async with asyncio.timeout(self.config.body_timeout):
                return await request.read()
        except TimeoutError:
            raise AgentError(
                408,
                "request_timeout",
                f"The request body did not arrive within {self.config.body_timeout:g} s.",
                close_connection=True,
            ) from None
        except web.HTTPRequestEntityTooLarge as exc:
            raise AgentError(413, "body_too_large", "The request body is too large.") from exc

    async def chat_paired(self, request, claims, messages, params, stream) -> web.StreamResponse:
        """A paired device's request: the rig's filter and queue as for anyone (first in the queue, as a friend),
        but no token budget in the ledger and no usage reported to the tracker (Relay.book skips it)."""
        asked = params.get("max_completion_tokens") or params.get("max_tokens")
        moderation = await self.screen(messages)
        relay = Relay(
            self,
            request,
            claims,
            messages,
            params,
            self.served_model(),
            asked,
            truncated_by_budget=False,
            moderation=moderation,
            friend=True,
        )
        started = time.monotonic()
        try:
            return await (relay.stream() if stream else relay.complete())
        finally:
            log.info(
                "request %s paired device stream=%s %.0f ms", relay.ticket, stream, (time.monotonic() - started) * 1000
            )


AGENT = web.AppKey("agent", Agent)


def build_app(config: AgentConfig) -> web.Application:
    agent = Agent(config)
    app = web.Application(middlewares=[errors_middleware], client_max_size=config.max_body_bytes)
    app[AGENT] = agent
    app.on_startup.append(agent.start)
    app.on_shutdown.append(lambda _app: drain(agent))
    app.on_cleanup.append(agent.stop)
    app.router.add_get("/health", agent.health)
    app.router.add_get("/v1/models", agent.models_list)
    app.router.add_post("/v1/chat/completions", agent.chat)
    app.router.add_post("/chat/completions", agent.chat)
    # The public tasting panel calls these from the tracker's origin.
    cors.install(app, ["/health", "/v1/models", "/v1/chat/completions", "/chat/completions"])
    return app

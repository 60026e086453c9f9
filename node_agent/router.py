"""The local router (issue 16): `luckrig-node lan` serves one OpenAI-compatible endpoint on this machine over all
the paired rigs it sees on the LAN. No tracker and no internet: the rigs are found by mDNS (node_agent/lan.py) and
each request is signed with this machine's identity key for the rig it goes to (node_agent/paired.py).

Which rigs: the ones whose announced key (TXT `pk`) is pinned in this machine's paired.json, read again on every
request so that `unpair` counts at once, and that announce `tls=1`. The TXT record is only a hint of where a key is:
every request goes over TLS with no CA, and before a byte of it is written the server's certificate key must be the
key pinned in paired.json (node_agent/lan_tls.py), so a device announcing a paired rig's key at its own address gets
nothing and the request moves to another rig. A rig announcing no TLS (a public or circle rig with --lan) is used
only with --allow-plain-http, and then its requests and answers are readable and forgeable on the LAN
(docs/local-mode.md, "Its limits").

Which model a rig serves is what its signed `GET /v1/models` answered, asked again every few seconds, and its TXT
`model` only when it cannot be asked; which rig: the healthy one least busy by its own queue (its `/health`, polled
every 2 s) plus the router's own requests to it since that poll, round-robin among equals (node_agent/
router_load.py). A request moves to the next rig only before the first byte (a connection refused or reset, a 5xx
status, or a 401: the rig does not accept this machine's signature); after that the rig's answer, streamed or not,
goes to the client chunk by chunk as it comes, untouched. A client going away cancels the handler
(handler_cancellation), which closes the request to the rig, whose agent then stops its model server."""

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from node_agent import identity, lan, lan_tls, paired, router_load, router_page
from node_agent.errors import AgentError
from node_agent.server import errors_middleware

log = logging.getLogger("luckrig.agent.router")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8790
CONNECT_TIMEOUT = 3.0  # a rig that is announced but gone must not hold the client: the next one is tried
ROUTER: web.AppKey["Router"] = web.AppKey("router")
CHAT_PATH = "/v1/chat/completions"
PASSED_HEADERS = ("Content-Type", "Cache-Control")  # of the rig's answer; the rest is hop-by-hop or the rig's own


class Router:
    """The rigs seen on the LAN (fed by LanBrowser's on_change, `seen`) and the routing of requests to them."""

    def __init__(
        self,
        agent: identity.Identity,
        store: paired.PairedStore,
        *,
        host: str = DEFAULT_HOST,
        allow_plain_http: bool = False,
    ):
        self.identity, self.store, self.allow_plain_http = agent, store, allow_plain_http
        self.rigs: dict[str, lan.SeenRig] = {}
        self.loads = router_load.RigLoads(agent, ssl_for=self.ssl_for)
        self.poll_interval = router_load.POLL_INTERVAL
        self._turn = itertools.count()
        self.session: aiohttp.ClientSession | None = None
        self.page = router_page.LanPage(self, host)

    def seen(self, name: str, rig: lan.SeenRig | None) -> None:
        """LanBrowser's on_change: a rig announced, changed, or gone (goodbye, expiry or the staleness sweep)."""
        if rig is None:
            self.rigs.pop(name, None)
            self.loads.forget(name)
        else:
            self.rigs[name] = rig

    def pinned(self) -> dict[str, paired.Device]:
        try:
            return self.store.devices()
        except ValueError:
            return {}  # an unreadable paired.json pins nobody (`luckrig-node pair --list` says why)

    def paired_rigs(self) -> list[lan.SeenRig]:
        """The rigs with a pinned key, an address, a port and TLS (or plain HTTP allowed): the ones polled, sorted by
        name so that the round-robin turn is stable."""
        pinned = self.pinned()
        return [
            rig
            for name, rig in sorted(self.rigs.items())
            if rig.fields.get("fingerprint") in pinned
            and rig.addresses
            and rig.port
            and (rig.fields.get("tls") or self.allow_plain_http)
        ]

    def ssl_for(self, rig: lan.SeenRig):
        """aiohttp's `ssl=` for a request to `rig`: TLS pinned to the key paired.json holds for its fingerprint;
        False (plain HTTP) for a rig announcing no TLS, which paired_rigs lets through only when allowed."""
        if not rig.fields.get("tls"):
            return False
        device = self.pinned().get(rig.fields.get("fingerprint"))
        if device is None:  # unpaired since it was listed: a key nobody holds, so nothing is sent
            return lan_tls.PinnedKey(identity.b64(bytes(32)))
        return lan_tls.PinnedKey(device.public_key)

    def usable(self) -> list[lan.SeenRig]:
        """The paired rigs requests may go to: healthy (or not polled yet), serving at least one model."""
        return [rig for rig in self.paired_rigs() if self.loads.state(rig.name).healthy and self.loads.models_of(rig)]

    def models(self) -> list[dict]:
        """The union of the usable rigs' models, by id, in OpenAI's shape; `luckrig` says which rigs serve each and
        whether each one was asked (or only announced it)."""
        union: dict[str, dict] = {}
        for rig in self.usable():
            asked = bool(self.loads.state(rig.name).models)
            for entry in self.loads.models_of(rig):
                model = union.setdefault(entry["id"], {**entry, "object": "model", "luckrig": {"rigs": []}})
                model["luckrig"]["rigs"].append({"rig": rig_label(rig), "asked": asked})
        return [union[m] for m in sorted(union)]

    def candidates(self, model: str) -> list[lan.SeenRig]:
        """The rigs serving `model`, least busy first, round-robin among equals; AgentError 503 when no paired
        healthy rig is seen at all, 404 when none serves `model`."""
        usable = self.usable()
        if not usable:
            raise AgentError(
                503, "no_rig_available", "No paired rig is on the LAN right now (luckrig-node discover lists them)."
            )
        serving = [rig for rig in usable if model in router_load.model_ids(self.loads.models_of(rig))]
        if not serving:
            raise AgentError(404, "model_not_found", f"No paired rig on the LAN serves the model {model!r}.")
        turn = next(self._turn) % len(serving)
        rotated = serving[turn:] + serving[:turn]
        return sorted(rotated, key=lambda rig: self.loads.state(rig.name).load())  # stable: the turn breaks ties

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.page.check_api(request)
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise AgentError(400, "invalid_json", "The body is not valid JSON.") from exc
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            raise AgentError(400, "invalid_request", "The body needs a `model` (GET /v1/models lists them).")
        tried, refused = [], []
        for rig in self.candidates(model):
            fingerprint = rig.fields["fingerprint"]
            headers = paired.sign_headers(self.identity, "POST", CHAT_PATH, raw, recipient=fingerprint)
            url = f"{router_load.RigLoads.base(rig)}{CHAT_PATH}"
            with self.loads.request(rig.name):
                try:
                    upstream = await self.session.post(
                        url, data=raw, headers=headers | {"Content-Type": "application/json"}, ssl=self.ssl_for(rig)
                    )
                except lan_tls.KeyMismatch as exc:  # checked before a byte of the request was written
                    self.loads.wrong_key(rig, exc)
                    refused.append(f"{rig_label(rig)}: not the paired key")
                    tried.append(rig.name)
                    continue
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    log.info("%s unreachable (%s): trying another rig", rig.name, type(exc).__name__)
                    tried.append(rig.name)
                    continue
                # From here on the rig has answered: its status decides, and after the first byte there is no
                # moving on (pass_through cuts the client off when a rig fails mid-answer).
                async with upstream:
                    if upstream.status >= 500:
                        log.info("%s answered %d: trying another rig", rig.name, upstream.status)
                        tried.append(rig.name)
                        continue
                    if upstream.status == 401:
                        # Refused before anything ran: the rig does not accept this machine's signature (it unpaired
                        # this machine, or never pinned it, or the clocks are apart). Another rig may.
                        refused.append(f"{rig_label(rig)}: {await refusal_code(upstream)}")
                        log.info("%s refused this machine's signature: trying another rig", rig.name)
                        tried.append(rig.name)
                        continue
                    return await self.pass_through(request, upstream, rig)
        why = f" Refused: {'; '.join(refused)} (pair both ways)." if refused else ""
        raise AgentError(
            503, "no_rig_available", f"None of the {len(tried)} paired rig(s) serving {model!r} could answer.{why}"
        )

    async def pass_through(self, request: web.Request, upstream: aiohttp.ClientResponse, rig) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name in PASSED_HEADERS:
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        response.headers["X-LuckRig-Rig"] = rig_label(rig)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except aiohttp.ClientError as exc:
            # Too late to move on. The client's connection is cut rather than its answer ended, so that it sees an
            # incomplete answer (as it would from the rig), not a finished one.
            log.warning("%s stopped mid-answer (%s): the client's answer is cut there", rig.name, type(exc).__name__)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def models_list(self, request: web.Request) -> web.Response:
        """The union of what the paired, healthy rigs answer (asked again when older than MODELS_TTL)."""
        self.page.check_api(request)
        await self.loads.refresh_models(self.session, self.usable())
        return web.json_response({"object": "list", "data": self.models()})

    async def poll_forever(self) -> None:
        while True:
            try:
                await self.loads.poll_all(self.session, self.paired_rigs())
            except Exception:  # noqa: BLE001 - the poll must outlive whatever one round meets
                log.exception("polling the rigs failed; trying again")
            await asyncio.sleep(self.poll_interval)


async def refusal_code(response: aiohttp.ClientResponse) -> str:
    """The `error.code` of a rig's refusal, printable and short, or its status."""
    try:
        code = (await response.json(content_type=None))["error"]["code"]
    except (aiohttp.ClientError, ValueError, UnicodeDecodeError, RecursionError, KeyError, TypeError):
        code = None
    return lan.printable(code, 40) if isinstance(code, str) else str(response.status)


def rig_label(rig: lan.SeenRig) -> str:
    """How the router names a rig to its clients: its TXT `node`, else its service name."""
    return rig.fields.get("node") or rig.name


def build_app(router: Router) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])
    app[ROUTER] = router

    async def open_session(app):
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        router.session = aiohttp.ClientSession(timeout=timeout)
        polling = asyncio.create_task(router.poll_forever())
        yield
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await router.session.close()

    app.cleanup_ctx.append(open_session)
    router.page.install(app)
    app.router.add_get("/v1/models", router.models_list)
    app.router.add_post(CHAT_PATH, router.chat)
    app.router.add_post("/chat/completions", router.chat)
    return app


async def run(
    config_dir: Path,
    host: str,
    port: int,
    interface: str = "",
    *,
    allow_plain_http: bool = False,
    ready: Callable | None = None,
) -> None:
    """`luckrig-node lan`: browse the LAN and serve the router until interrupted."""
    agent = identity.load_or_create(config_dir)
    router = Router(agent, paired.PairedStore(config_dir), host=host, allow_plain_http=allow_plain_http)
    if allow_plain_http:
        log.warning("--allow-plain-http: prompts to rigs without TLS are readable and forgeable on the LAN")
    aiozc = lan.browsing_zeroconf(interface)
    browser = lan.LanBrowser(aiozc, on_change=router.seen)
    # `luckrig-node pair` listeners, for the page's Pair button (their TXT `pk` says which rig shows a code).
    listeners = lan.LanBrowser(aiozc, service_type=lan.PAIRING_SERVICE_TYPE, on_change=router.page.listener_seen)
    # A client that goes away cancels its handler, which closes the request to the rig (its model server stops).
    runner = web.AppRunner(build_app(router), handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await browser.start()
        await listeners.start()
        await web.TCPSite(runner, host, port).start()
        log.info("routing to the paired rigs on the LAN at http://%s:%d/v1", host, port)
        if host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("listening on %s: anyone who can reach this port uses your paired rigs as you", host)
        if ready is not None:
            ready()
        await asyncio.Event().wait()
    finally:
        await browser.stop()
        await listeners.stop()
        await runner.cleanup()
        await aiozc.async_close()


def main(args) -> int:
    from node_agent.pair_commands import _config_dir

    with contextlib.suppress(KeyboardInterrupt):
        plain = getattr(args, "allow_plain_http", False)
        asyncio.run(run(_config_dir(args), args.host, args.port, args.lan_interface or "", allow_plain_http=plain))
    return 0

"""What the local router (node_agent/router.py) knows of each paired rig beyond its announcement: whether it answers,
how busy it is by its own queue, and which models it really serves.

Every POLL_INTERVAL seconds the router asks each paired rig's `GET /health` (public on the agent, POLL_TIMEOUT
seconds, all rigs at once). A rig that does not answer 200 with a JSON body in time is unhealthy and gets no new
request until a poll finds it answering again; a rig not polled yet counts as healthy (a rig just announced is used
at once). Its load is (active + waiting) / max_active from its `queue`, plus the router's own requests to it that
started after that poll was sent (the rig could not count them yet), so a rig busy with another client's request is
passed over even though this router sent it nothing.

Which models: the rig's signed `GET /v1/models` (paired.sign_headers), asked again once the answer is MODELS_TTL
seconds old, by the poll and by the router's own `GET /v1/models`. A rig that cannot be asked (no answer, an error
status, a malformed list) keeps its TXT `model` hint.

Every request to a rig, /health included, goes with `ssl_for(rig)` (the router's: TLS pinned to the key in
paired.json, node_agent/lan_tls.py). A rig whose server does not hold that key is unhealthy like one that does not
answer, said once in the log until it answers with the key again."""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import aiohttp

from node_agent import identity, lan, lan_tls, paired

log = logging.getLogger("luckrig.agent.router")

POLL_INTERVAL = 2.0
POLL_TIMEOUT = 1.0
MODELS_TTL = 5.0
MODELS_TIMEOUT = 2.0
MAX_MODELS = 64  # of one rig's answer: a hostile rig must not fill the router's list


@dataclass
class RigState:
    """One rig's health, queue and models as last asked; `started` are the monotonic start times of the router's
    own requests to it that are still in flight."""

    healthy: bool = True
    polled_at: float | None = None  # when the last poll that answered was sent
    active: int = 0
    waiting: int = 0
    max_active: int = 1
    models: list[dict] | None = None  # the entries the rig answered; None: not asked, or it could not be
    models_at: float = float("-inf")  # when last asked, answered or not: a rig that fails is asked again later
    started: list[float] = field(default_factory=list)
    wrong_key: bool = False  # its server did not hold the pinned key (said once in the log)

    def load(self) -> float:
        """(active + waiting + own requests started since the last poll) / max_active."""
        since = self.polled_at if self.polled_at is not None else float("-inf")
        fresh = sum(1 for t in self.started if t >= since)
        return (self.active + self.waiting + fresh) / self.max_active


def _count(value, minimum: int = 0) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= minimum else None


class RigLoads:
    """The state of every rig the router polls, by service name."""

    def __init__(self, agent: identity.Identity, *, clock=time.monotonic, ssl_for=lambda rig: True):
        self.identity, self.clock, self.ssl_for = agent, clock, ssl_for
        self.states: dict[str, RigState] = {}

    def state(self, name: str) -> RigState:
        return self.states.setdefault(name, RigState())

    def forget(self, name: str) -> None:
        self.states.pop(name, None)

    @contextlib.contextmanager
    def request(self, name: str):
        """Counts one of the router's requests to `name` while it is in flight."""
        state, started = self.state(name), self.clock()
        state.started.append(started)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                state.started.remove(started)

    def in_flight(self, name: str) -> int:
        state = self.states.get(name)
        return len(state.started) if state else 0

    @staticmethod
    def base(rig: lan.SeenRig) -> str:
        return rig.url()

    def wrong_key(self, rig: lan.SeenRig, exc: lan_tls.KeyMismatch) -> None:
        """`rig`'s server does not hold the key it announces: no request goes to it until a poll finds the key."""
        state = self.state(rig.name)
        if not state.wrong_key:
            log.warning("%s at %s:%s does not hold the key it announces: it is not used", rig.name, exc.host, exc.port)
        state.wrong_key, state.healthy = True, False

    async def poll(self, http: aiohttp.ClientSession, rig: lan.SeenRig) -> None:
        """Ask `rig`'s /health once; its state says what came back."""
        sent = self.clock()
        state = self.state(rig.name)
        try:
            timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
            async with http.get(self.base(rig) + "/health", timeout=timeout, ssl=self.ssl_for(rig)) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
        except lan_tls.KeyMismatch as exc:
            self.wrong_key(rig, exc)
            return
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError, RecursionError):
            body = None
        queue = body.get("queue") if isinstance(body, dict) else None
        if not isinstance(queue, dict):
            if state.healthy:
                log.info("%s does not answer /health: no new request goes to it", rig.name)
            state.healthy = False
            return
        if not state.healthy:
            log.info("%s answers /health again", rig.name)
        state.healthy, state.polled_at, state.wrong_key = True, sent, False
        state.active = _count(queue.get("active")) or 0
        state.waiting = _count(queue.get("waiting")) or 0
        state.max_active = _count(queue.get("max_active"), 1) or 1

    def models_stale(self, name: str) -> bool:
        return self.clock() - self.state(name).models_at >= MODELS_TTL

    async def ask_models(self, http: aiohttp.ClientSession, rig: lan.SeenRig) -> None:
        """Ask `rig`'s /v1/models, signed for it; on failure its models are unknown (the TXT hint stands)."""
        state = self.state(rig.name)
        headers = paired.sign_headers(self.identity, "GET", "/v1/models", b"", recipient=rig.fields["fingerprint"])
        try:
            timeout = aiohttp.ClientTimeout(total=MODELS_TIMEOUT)
            url, ssl = self.base(rig) + "/v1/models", self.ssl_for(rig)
            async with http.get(url, headers=headers, timeout=timeout, ssl=ssl) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
        except lan_tls.KeyMismatch as exc:
            self.wrong_key(rig, exc)
            body = None
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError, RecursionError):
            body = None
        data = body.get("data") if isinstance(body, dict) else None
        entries = [m for m in data if isinstance(m, dict) and _model_id(m)] if isinstance(data, list) else []
        state.models = entries[:MAX_MODELS] if entries else None
        state.models_at = self.clock()

    async def refresh_models(self, http: aiohttp.ClientSession, rigs: list[lan.SeenRig]) -> None:
        stale = [rig for rig in rigs if self.models_stale(rig.name)]
        await asyncio.gather(*(self.ask_models(http, rig) for rig in stale))

    async def poll_all(self, http: aiohttp.ClientSession, rigs: list[lan.SeenRig]) -> None:
        """One round: every rig's /health at once, then the stale model lists of the healthy ones."""
        await asyncio.gather(*(self.poll(http, rig) for rig in rigs))
        await self.refresh_models(http, [rig for rig in rigs if self.state(rig.name).healthy])

    def models_of(self, rig: lan.SeenRig) -> list[dict]:
        """What `rig` serves: the entries it answered, else its TXT hint in OpenAI's shape."""
        state = self.states.get(rig.name)
        if state is not None and state.models:
            return state.models
        model = rig.fields.get("model")
        return [{"id": model, "object": "model", "created": 0, "owned_by": "announced"}] if model else []


def _model_id(entry: dict) -> str | None:
    model = entry.get("id")
    return model if isinstance(model, str) and 0 < len(model) <= 200 and model.isprintable() else None


def model_ids(entries: list[dict]) -> set[str]:
    return {m["id"] for m in entries}

"""What the gateway can route to: the tracker's catalog of rigs a taster could be sent to now
(`GET /api/relays/<relay_id>/catalog`, polled every few seconds and on a miss), how a request's `model` picks
among them (`rig:<node_id>` or a bare node id: exactly that rig; anything else: a model name matched against the
rigs' normalised model keys and the tracker's alias table), and in which order the rigs serving a model are tried.

The order: least expected wait first (queue over capacity, with this relay's own requests counted as they are now
rather than as the last catalog saw them), then a `busy` status last, then rigs clearly slower than the fastest
(under half its measured speed) behind the rest; among the rest a smooth weighted round robin by capacity
(`max_active`), so that many requests spread over equal rigs in proportion to their slots, exactly rather than by
the luck of a random draw. Rarity only breaks exact ties (the first turn, and the order tried after the pick).
Pure apart from `refresh` (tests/relay/test_gateway_units.py)."""

import asyncio
import collections
import difflib
import logging
import math
import re
import time
from dataclasses import dataclass

import aiohttp

from node_agent.errors import AgentError

log = logging.getLogger("luckrig.relay.catalog")

POLL_SEC = 5.0
MISS_REFRESH_SEC = 1.0  # a cache miss asks the tracker again at most this often
MAX_SUGGESTIONS = 5
MAX_KNOWN_MODELS = 10_000  # model keys ever seen (for "known, but no rig now"), oldest forgotten first
# A rig measured at under this share of the fastest's speed is tried after the others. Not finer: the same paced
# upstream measured 926-1,611 tok/s through twenty rigs on a loaded machine (docs/benchmarks.md "The gateway"),
# and speed classes finer than the noise let one noisy-fast rig take every request.
SLOW_SHARE = 0.5
# How far before the relay asks for the catalog the tracker's copy of a rig's queue may date from (the agent's
# report, coalesced, then written): own requests in flight at any moment since then may be in it.
QUEUE_LAG_SEC = 1.0
MAX_CHANGES = 10_000  # own requests' starts and ends remembered for that, newest last
RIG_PREFIX = "rig:"
_SPACES = re.compile(r"\s+")
_QUANT_SUFFIX = re.compile(r"[-._](?:iq\d_[a-z]+|q\d_k_[smlx]{1,2}|q\d_k|q\d_\d|q\d|bf16|f16|f32|fp16|fp32)$", re.ASCII)
MAX_KEY_LENGTH = 120


def normalise(name: str) -> str:
    """A client's `model` as a model key, by the tracker's rule (docs/api.md "Gateway", "Model keys"): trim,
    lower-case, drop a path or owner before the last `/` and a `.gguf` ending, white space as `-`, drop a trailing
    quantization, keep an ollama tag. The tracker's copy is nodes/model_names.model_key, which the relay cannot
    import (it never imports the tracker); tests/relay/test_gateway_units.py holds the two to the same answers."""
    text = name.strip().lower()[: MAX_KEY_LENGTH * 2]
    text = text.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    base, colon, tag = text.partition(":")
    base = _SPACES.sub("-", base.removesuffix(".gguf")).strip("-")
    base = _QUANT_SUFFIX.sub("", base) or base
    tag = _SPACES.sub("-", tag).strip("-")
    return (base + (colon + tag if tag else ""))[:MAX_KEY_LENGTH]


@dataclass
class Route:
    kind: str  # "rig": exactly that rig, never another; "model": any of `rigs`, tried in order
    name: str  # the node id, or the model key
    rigs: list[dict]


class Catalog:
    def __init__(self, *, session: aiohttp.ClientSession | None, tracker: str, relay_id: str, secret: str):
        self.session, self.tracker, self.relay_id, self.secret = session, tracker.rstrip("/"), relay_id, secret
        self.rigs: dict[str, dict] = {}
        self.aliases: dict[str, str] = {}
        self.by_model: dict[str, list[dict]] = {}
        self.known: collections.OrderedDict = collections.OrderedDict()  # model keys seen, newest last
        self.fetched_at: float | None = None  # time.monotonic() of the last good answer
        self.in_flight: dict[str, int] = {}  # node id → this relay's gateway requests at that rig now
        # node id → the most of them in flight while the last catalog's queue could have been reported: counted
        # in that catalog's `active + waiting` (at most), so taken out of it and replaced by `in_flight`.
        self.own_at_poll: dict[str, int] = {}
        self._changes: collections.deque = collections.deque(maxlen=MAX_CHANGES)  # (monotonic, node id, before, after)
        self._turns: dict[str, float] = {}  # the round robin's running weights, by node id
        self._refreshing: asyncio.Future | None = None
        self._last_miss = 0.0

    # --- the tracker's answer ---------------------------------------------------------------------------

    def load(self, answer: dict, asked_at: float | None = None) -> None:
        """Take a catalog answer (a bad one is ignored whole: the previous catalog stays). `asked_at`: the
        time.monotonic() at which it was asked for (now when not given)."""
        rigs = answer.get("rigs") if isinstance(answer, dict) else None
        if not isinstance(rigs, list):
            raise ValueError("no rigs list")
        by_id, by_model = {}, collections.defaultdict(list)
        for rig in rigs:
            if not isinstance(rig, dict) or not isinstance(rig.get("node_id"), str):
                continue
            key = str(rig.get("model_key") or normalise(str(rig.get("model") or ""))).lower()
            rig = {**rig, "model_key": key}
            by_id[rig["node_id"]] = rig
            if key:
                by_model[key].append(rig)
        aliases = answer.get("aliases") if isinstance(answer.get("aliases"), dict) else {}
        self.rigs, self.by_model = by_id, dict(by_model)
        self.aliases = {str(k).lower(): str(v).lower() for k, v in aliases.items()}
        for key in [*by_model, *self.aliases.values()]:
            self.known[key] = True
            self.known.move_to_end(key)
        while len(self.known) > MAX_KNOWN_MODELS:
            self.known.popitem(last=False)
        self._turns = {k: v for k, v in self._turns.items() if k in by_id}
        self.fetched_at = time.monotonic()
        self.own_at_poll = self._own_since(self.fetched_at if asked_at is None else asked_at)

    def _own_since(self, asked_at: float) -> dict[str, int]:
        """Per rig, the most of this relay's requests in flight at any moment from QUEUE_LAG_SEC before
        `asked_at` until now: an upper bound on how many of them the catalog's queue counts. Taking them out can
        only forget another client's request for one poll, where keeping them would count a slot ours has
        already freed as taken for a whole one."""
        start = asked_at - QUEUE_LAG_SEC
        peak = dict(self.in_flight)
        for when, node_id, before, after in reversed(self._changes):
            if when < start:
                break
            peak[node_id] = max(peak.get(node_id, 0), before, after)
        return {k: v for k, v in peak.items() if v > 0}

    async def refresh(self) -> bool:
        """Fetch the catalog now (one request at a time: concurrent callers share it). False when the tracker
        could not answer: the previous catalog stays in use."""
        if self._refreshing is not None:
            return await asyncio.shield(self._refreshing)
        self._refreshing = asyncio.get_running_loop().create_future()
        ok = False
        asked_at = time.monotonic()
        try:
            async with self.session.get(
                f"{self.tracker}/api/relays/{self.relay_id}/catalog",
                headers={"Authorization": f"Bearer {self.secret}"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                if resp.status == 200:
                    self.load(await resp.json(), asked_at)
                    ok = True
                else:
                    log.warning("catalog refused: HTTP %s", resp.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("catalog fetch failed (%s)", type(exc).__name__)
        finally:
            self._refreshing.set_result(ok)
            self._refreshing = None
        return ok

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(POLL_SEC)

    async def _missed(self) -> bool:
        """A name the catalog does not have: maybe a rig that came up since the last poll. Ask again, at most
        every MISS_REFRESH_SEC (a flood of unknown names must not become a flood of requests to the tracker)."""
        if time.monotonic() - self._last_miss < MISS_REFRESH_SEC or self.session is None:
            return False
        self._last_miss = time.monotonic()
        return await self.refresh()

    # --- from `model` to a route ------------------------------------------------------------------------

    async def route(self, model) -> Route:
        if not isinstance(model, str) or not model.strip():
            raise AgentError(
                400, "invalid_request", "model must be a model name or rig:<node_id>.", extra={"param": "model"}
            )
        for attempt in (0, 1):
            found = self.match(model)
            if found is not None or attempt or not await self._missed():
                break
        if found is None:
            raise self.not_found(model)
        if found.kind == "model" and not found.rigs:
            raise self.no_rig(found.name)
        return found

    def match(self, model: str) -> Route | None:
        """The route `model` names in the current catalog, or None. A known model with no rig now is a route
        with no rigs (503, not 404)."""
        name = model.strip()
        node_id = name[len(RIG_PREFIX) :] if name.lower().startswith(RIG_PREFIX) else name
        rig = self.rigs.get(node_id) or self.rigs.get(node_id.lower())
        if rig is not None:
            return Route("rig", rig["node_id"], [rig])
        if name.lower().startswith(RIG_PREFIX):
            return None
        key = normalise(name)
        if key not in self.by_model:  # a rig's own model key wins over an alias of the same spelling
            key = self.aliases.get(key, key)
        if key in self.by_model:
            return Route("model", key, self.order(self.by_model[key]))
        if key in self.known:
            return Route("model", key, [])
        return None

    def offered(self) -> list[str]:
        return sorted(self.by_model)

    def not_found(self, model: str) -> AgentError:
        wanted = model.strip()
        is_rig = wanted.lower().startswith(RIG_PREFIX)
        if is_rig:
            suggestions = difflib.get_close_matches(wanted, [RIG_PREFIX + n for n in self.rigs], MAX_SUGGESTIONS, 0.4)
        else:  # the models on offer first, then the aliases of models on offer
            key = normalise(wanted)
            offered = difflib.get_close_matches(key, list(self.by_model), MAX_SUGGESTIONS, 0.4)
            aliases = [a for a, k in self.aliases.items() if k in self.by_model]
            more = difflib.get_close_matches(key, aliases, MAX_SUGGESTIONS, 0.4)
            suggestions = list(dict.fromkeys([*offered, *more]))[:MAX_SUGGESTIONS]
        if not suggestions and not is_rig:
            suggestions = self.offered()[:MAX_SUGGESTIONS]
        what = "rig" if is_rig else "model"
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        return AgentError(
            404,
            "model_not_found",
            f"No {what} named {wanted[:100]!r} is offered through LuckRig now.{hint} GET /v1/models lists them.",
            extra={"param": "model", "suggestions": suggestions},
        )

    def no_rig(self, key: str) -> AgentError:
        available = self.offered()
        listed = ", ".join(available[:20]) or "none right now"
        return AgentError(
            503,
            "no_rig_available",
            f"No rig serving {key!r} is available right now. Models available now: {listed}.",
            headers={"Retry-After": "30"},
            extra={"param": "model", "available_models": available},
        )

    # --- the order in which a model's rigs are tried ----------------------------------------------------

    def wait_rounds(self, rig: dict) -> int:
        """How many rounds of the rig's slots a new request would wait for: 0 when a slot is free. The catalog's
        queue is up to a poll old and counts this relay's requests as they were then: those are taken out and
        the ones in flight now put in, so that a slot ours freed is free at once."""
        queue = rig.get("queue") or {}
        slots = max(1, int(queue.get("max_active") or 1))
        node_id = rig["node_id"]
        listed = int(queue.get("active") or 0) + int(queue.get("waiting") or 0)
        load = max(0, listed - self.own_at_poll.get(node_id, 0)) + self.in_flight.get(node_id, 0)
        return 0 if load < slots else (load - slots) // slots + 1

    def expected_wait_sec(self, rig: dict) -> float:
        rounds = self.wait_rounds(rig)
        if rounds == 0:
            return 0.0
        eta = (rig.get("queue") or {}).get("eta_sec")
        return float(eta) if isinstance(eta, int | float) and eta > 0 else 0.0

    def _ranks(self, rigs: list[dict]) -> dict[str, tuple]:
        """Each rig's class: (wait rounds, busy, clearly slow). A rig is clearly slow when it is measured at under
        SLOW_SHARE of the fastest measured rig with the same wait; an unmeasured rig never is (otherwise it would
        never be chosen, so never measured)."""
        waits = {r["node_id"]: (self.wait_rounds(r), self._busy(r)) for r in rigs}
        fastest: dict[tuple, float] = {}
        for r in rigs:
            speed = _speed(r)
            if speed is not None:
                fastest[waits[r["node_id"]]] = max(fastest.get(waits[r["node_id"]], 0.0), speed)
        ranks = {}
        for r in rigs:
            wait, speed = waits[r["node_id"]], _speed(r)
            slow = speed is not None and speed < SLOW_SHARE * fastest[wait]
            ranks[r["node_id"]] = (*wait, slow)
        return ranks

    def _busy(self, rig: dict) -> bool:
        """The tracker's `busy` (every slot taken, nodes/liveness.py) is as old as its queue: when that counted
        requests of this relay's and a slot is free now without them, it is not busy any more."""
        if rig.get("status") != "busy":
            return False
        return not (self.own_at_poll.get(rig["node_id"], 0) and self.wait_rounds(rig) == 0)

    def order(self, rigs: list[dict]) -> list[dict]:
        """The rigs in the order to try them: the best class first, the round robin's pick at its head. Within a
        class the rarer, then the faster, comes first: an exact tie's first turn, and the order after the pick."""
        if not rigs:
            return []
        ranks = self._ranks(rigs)
        ranked = sorted(rigs, key=lambda r: (ranks[r["node_id"]], -_rarity(r), -(_speed(r) or math.inf)))
        best = ranks[ranked[0]["node_id"]]
        equals = [r for r in ranked if ranks[r["node_id"]] == best]
        pick = self._next_turn(equals)
        return [pick, *(r for r in ranked if r is not pick)]

    def _next_turn(self, equals: list[dict]) -> dict:
        """Smooth weighted round robin (nginx's): each rig gains its weight, the leader is picked and pays the
        total. Over n picks each rig gets its share of n to within one."""
        if len(equals) == 1:
            return equals[0]
        total = 0.0
        for rig in equals:
            weight = max(1, int((rig.get("queue") or {}).get("max_active") or 1))
            total += weight
            self._turns[rig["node_id"]] = self._turns.get(rig["node_id"], 0.0) + weight
        pick = max(equals, key=lambda r: self._turns[r["node_id"]])
        self._turns[pick["node_id"]] -= total
        return pick

    def started(self, node_id: str) -> None:
        before = self.in_flight.get(node_id, 0)
        self.in_flight[node_id] = before + 1
        self._changed(node_id, before, before + 1)

    def finished(self, node_id: str) -> None:
        before = self.in_flight.get(node_id, 0)
        left = before - 1
        if left > 0:
            self.in_flight[node_id] = left
        else:
            self.in_flight.pop(node_id, None)
        self._changed(node_id, before, max(0, left))

    def _changed(self, node_id: str, before: int, after: int) -> None:
        now = time.monotonic()
        self._changes.append((now, node_id, before, after))
        # Only a catalog asked for from now on, or one still being fetched, needs them (POLL_SEC bounds a fetch).
        while self._changes and self._changes[0][0] < now - QUEUE_LAG_SEC - POLL_SEC:
            self._changes.popleft()


def _speed(rig: dict) -> float | None:
    speed = rig.get("tok_per_sec_p50")
    return float(speed) if isinstance(speed, int | float) and speed > 0 else None


def _rarity(rig: dict) -> float:
    rarity = rig.get("rarity_score")
    return float(rarity) if isinstance(rarity, int | float) else 0.0

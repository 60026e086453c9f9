"""The gateway's pure parts, in process: model names matched by the tracker's rule, the order in which a model's rigs
are tried (least wait, counting the relay's own requests as they are now; then not clearly slower than the
fastest; an exact capacity-weighted spread among the rest, rarity breaking exact ties), suggestions, and
the token cache (single flight, renewal before expiry and when used up, the relay's own refusals kept from the
client)."""

import asyncio
import collections
import time

import pytest

from nodes.model_names import model_key
from relay.catalog import QUEUE_LAG_SEC, Catalog, normalise
from relay.token_cache import CachedToken, TokenCache, refusal


def rig(node_id: str, model: str = "smollm2-135m-instruct", **fields) -> dict:
    queue = {"active": 0, "waiting": 0, "max_active": 1, "eta_sec": None, **fields.pop("queue", {})}
    return {"node_id": node_id, "model_key": model, "status": "available", "queue": queue, **fields}


def catalog(rigs, aliases=None) -> Catalog:
    c = Catalog(session=None, tracker="http://t", relay_id="r1", secret="lrr_x")
    c.load({"rigs": rigs, "aliases": aliases or {}})
    return c


@pytest.mark.parametrize(
    "name",
    [
        "SmolLM2-135M-Instruct",
        " /models/SmolLM2-135M-Instruct-Q8_0.gguf ",
        "Qwen/Qwen3-8B",
        "Llama 3.1 8B",
        "qwen3:35b",
        "Qwen3:35B-Q4_K_M",
        "q4_0",
        "C:\\models\\Phi-3-mini.F16.gguf",
    ],
)
def test_a_clients_model_name_is_normalised_exactly_as_the_tracker_normalises_rigs(name):
    assert normalise(name) == model_key(name)


def test_model_routes_match_keys_then_aliases_and_rig_routes_match_node_ids():
    c = catalog([rig("a"), rig("b", "qwen3-8b")], {"smollm2": "smollm2-135m-instruct", "qwen3-8b": "elsewhere"})
    assert c.match("Qwen/Qwen3-8B").name == "qwen3-8b"  # a rig's own key wins over an alias
    assert c.match("SMOLLM2").kind == "model" and c.match("smollm2").name == "smollm2-135m-instruct"
    assert c.match("rig:b").kind == "rig" and [r["node_id"] for r in c.match("b").rigs] == ["b"]
    assert c.match("rig:smollm2") is None and c.match("gpt-4o") is None
    error = c.not_found("smollm2-135m")
    assert error.status == 404 and error.extra["suggestions"][0] == "smollm2-135m-instruct"
    assert c.not_found("rig:bb").extra["suggestions"][0] == "rig:b"


def test_the_least_expected_wait_then_not_clearly_slow_then_the_rarest_is_tried_first():
    c = catalog(
        [
            rig("queued", queue={"active": 1, "waiting": 2, "eta_sec": 30}, tok_per_sec_p50=500),
            rig("slow", tok_per_sec_p50=10),
            rig("fast", tok_per_sec_p50=100),
            rig("fast-rare", tok_per_sec_p50=110, rarity_score=2.0),
            rig("full", status="busy", tok_per_sec_p50=900),
        ]
    )
    order = [r["node_id"] for r in c.match("smollm2-135m-instruct").rigs]
    assert order[0] == "fast-rare" and order[-1] == "queued" and order.index("fast") < order.index("slow")
    assert c.expected_wait_sec(c.rigs["queued"]) == 30 and c.expected_wait_sec(c.rigs["fast"]) == 0
    # This relay's own requests in flight count before the next catalog says so.
    c.started("fast-rare")
    assert c.match("smollm2-135m-instruct").rigs[0]["node_id"] == "fast"
    c.finished("fast-rare")
    assert c.in_flight == {}


def test_a_thousand_requests_spread_over_twenty_equal_rigs_by_capacity():
    rigs = [rig(f"r{i}", queue={"max_active": 1 + i % 4}) for i in range(20)]
    c = catalog(rigs)
    picks = collections.Counter(c.match("smollm2-135m-instruct").rigs[0]["node_id"] for _ in range(1000))
    total = sum(1 + i % 4 for i in range(20))
    for i in range(20):
        share = 1000 * (1 + i % 4) / total
        assert abs(picks[f"r{i}"] - share) <= 0.2 * share, (i, picks[f"r{i}"], share)


def picks(c: Catalog, n: int, model: str = "smollm2-135m-instruct") -> collections.Counter:
    return collections.Counter(c.match(model).rigs[0]["node_id"] for _ in range(n))


def test_a_slot_the_relays_own_request_freed_is_free_before_the_next_poll():
    c = catalog([rig("a"), rig("b")])
    c.started("a")  # the poll catches this relay's own request at the one-slot rig "a"
    c.load({"rigs": [rig("a", queue={"active": 1}, status="busy"), rig("b")]})
    assert c.match("smollm2-135m-instruct").rigs[0]["node_id"] == "b"
    c.finished("a")  # ... which then ends: "a" is free now, not at the next poll
    assert c.wait_rounds(c.rigs["a"]) == 0 and picks(c, 100) == {"a": 50, "b": 50}
    # One that ended just before the relay asked may still be in the tracker's copy of the queue.
    c.started("a")
    c.finished("a")
    c.load({"rigs": [rig("a", queue={"active": 1}), rig("b")]})
    assert c.wait_rounds(c.rigs["a"]) == 0
    # Another client's request is not ours: the slot stays taken until the catalog says otherwise.
    c.load(
        {"rigs": [rig("a", queue={"active": 1}, status="busy"), rig("b")]},
        asked_at=time.monotonic() + QUEUE_LAG_SEC + 1,
    )
    assert c.wait_rounds(c.rigs["a"]) == 1 and picks(c, 10) == {"b": 10}
    c.started("a")  # ours beside it, counted at once; when ours ends, the other one still waits
    assert c.wait_rounds(c.rigs["a"]) == 2
    c.load({"rigs": [rig("a", queue={"active": 1, "waiting": 1}), rig("b")]})
    c.finished("a")
    assert c.wait_rounds(c.rigs["a"]) == 1 and c.match("smollm2-135m-instruct").rigs[-1]["node_id"] == "a"


def test_noisy_speeds_of_equal_rigs_still_spread_by_capacity():
    # The same paced upstream measured 926-1,611 tok/s through twenty rigs on a loaded machine (the bench).
    speeds = [926, 1611, 1141, 1477, 985, 1354, 1266, 1000, 1550, 1171]
    rigs = [rig(f"r{i}", queue={"max_active": 1 + i % 4}, tok_per_sec_p50=speeds[i % 10]) for i in range(20)]
    got = picks(catalog(rigs), 1000)
    total = sum(1 + i % 4 for i in range(20))
    for i in range(20):
        share = 1000 * (1 + i % 4) / total
        assert abs(got[f"r{i}"] - share) <= 0.2 * share, (i, got[f"r{i}"], share)


def test_a_rig_under_half_the_best_speed_is_avoided_while_faster_ones_are_free():
    c = catalog(
        [
            rig("fast", tok_per_sec_p50=1000),
            rig("fair", tok_per_sec_p50=600),  # slower, but not clearly: it takes its turns
            rig("slow", tok_per_sec_p50=400, rarity_score=5.0),  # rarity does not make up for it
            rig("new"),  # not measured yet: counts as fast, so that it gets measured
        ]
    )
    assert picks(c, 90) == {"fast": 30, "fair": 30, "new": 30}
    assert c.match("smollm2-135m-instruct").rigs[-1]["node_id"] == "slow"


def test_waits_still_come_before_speed():
    c = catalog(
        [
            rig("fast-full", tok_per_sec_p50=1000, queue={"active": 1, "eta_sec": 4}),
            rig("fast-queued", tok_per_sec_p50=2000, queue={"active": 1, "waiting": 1, "eta_sec": 8}),
            rig("slow-free", tok_per_sec_p50=100),
        ]
    )
    assert [r["node_id"] for r in c.match("smollm2-135m-instruct").rigs] == ["slow-free", "fast-full", "fast-queued"]
    c.started("slow-free")  # now it has a queue of one too: the fast one of the same wait goes first
    assert [r["node_id"] for r in c.match("smollm2-135m-instruct").rigs] == ["fast-full", "slow-free", "fast-queued"]


def tokens_against(answers: list) -> tuple[TokenCache, list]:
    cache = TokenCache(session=None, tracker="http://t", relay_id="r1", secret="lrr_x")
    asked = []

    async def ask(key, ip, node_id):
        asked.append(node_id)
        await asyncio.sleep(0.01)
        lifetime, max_requests = answers.pop(0)
        return CachedToken(
            f"tok{len(asked)}", f"j{len(asked)}", node_id, time.time() + lifetime, lifetime, max_requests
        )

    cache._ask = ask
    return cache, asked


def test_a_burst_makes_one_token_which_is_renewed_when_used_up_or_near_expiry():
    async def scenario():
        cache, asked = tokens_against([(900, 3), (900, 3), (40, None), (40, None)])
        get = lambda: cache.get(contributor_key="lrk_a", client_ip="1.2.3.4", node_id="n")  # noqa: E731
        burst = await asyncio.gather(get(), get(), get())
        assert {t.token for t in burst} == {"tok1"} and len(asked) == 1
        assert (await get()).token == "tok2"  # the first one's 3 requests are used up
        assert (await cache.get(contributor_key="lrk_a", client_ip="1.2.3.4", node_id="n", renew=True)).token == "tok3"
        # A 40 s token is renewed in its last quarter (10 s), not at once for being under a minute.
        assert (await get()).token == "tok3"
        cache.entries[next(iter(cache.entries))].exp = time.time() + 9
        assert (await get()).token == "tok4"
        # Another caller, another token; the key itself is never the cache's key.
        assert all("lrk_a" not in who for who, _ in cache.entries)

    asyncio.run(scenario())


def test_the_trackers_refusals_of_the_client_pass_but_its_refusals_of_the_relay_do_not():
    quota = refusal(429, {"error": "Over quota.", "code": "quota_exceeded", "retry_after_sec": 9}, "9")
    assert (quota.status, quota.code, quota.headers["Retry-After"], quota.extra["retry_after_sec"]) == (
        429,
        "quota_exceeded",
        "9",
        9,
    )
    key = refusal(401, {"error": "Unknown key.", "code": "invalid_credential", "field": "contributor_key"}, None)
    assert (key.status, key.code) == (401, "invalid_credential")
    for status, code in ((401, "invalid_credential"), (403, "wrong_relay"), (502, "bad_gateway")):
        relay_refused = refusal(status, {"error": "no", "code": code}, None)
        assert (relay_refused.status, relay_refused.code) == (503, "tracker_unavailable")
    assert refusal(404, None, None).code == "tracker_unavailable"  # not the tracker's JSON: a proxy's page

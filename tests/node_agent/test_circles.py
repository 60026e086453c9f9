"""Checked twice (issue 15): a circle rig's agent refuses a token not issued through one of the circles it serves,
whatever the tracker issued and whatever the tracker says; the operator's pin wins over the tracker's word, which
arrives in heartbeat replies (over the link and over HTTP) and in pushed `circles` messages. Circle-only hours,
and friends first in the queue.

Most tests run the real agent app in process (aiohttp's test server) in front of a fake upstream and the fake
tracker, which signs the tokens; one runs a real agent process."""

import asyncio
import calendar
import contextlib
import json
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node_agent.circles import CircleGuard
from node_agent.config import AgentConfig
from node_agent.queue import SlotQueue
from node_agent.server import AGENT, build_app
from tests.node_agent.fakes import wait_until

BODY = {"messages": [{"role": "user", "content": "hi"}]}


@contextlib.asynccontextmanager
async def running_agent(fake_tracker, fake_upstream, config_dir: Path, *, tls=None, **settings):
    """The agent's app, started as `serve` starts it, with its link to the fake tracker (over HTTPS with the server
    context `tls`, as a local rig serves)."""
    config = AgentConfig(
        tracker=fake_tracker.base,
        node_id=fake_tracker.node_id,
        node_secret=fake_tracker.node_secret,
        upstream=fake_upstream.base,
        relay="off",
        config_dir=str(config_dir),
        **{"heartbeat_interval": 0.2, **settings},
    )
    app = build_app(config)
    app[AGENT].tls = tls is not None
    server = TestServer(app)
    await server.start_server(ssl=tls)
    async with TestClient(server) as client:
        yield client, app[AGENT]


async def taste(client, token: str) -> tuple[int, dict]:
    r = await client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json()


def refusal(status: int, body: dict) -> tuple[int, str]:
    """(status, code) of an OpenAI-shaped refusal."""
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    assert body["error"]["type"] == "permission_error"
    return status, body["error"]["code"]


async def until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# --- the tracker's word -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ws_mode", ["accept", "no_upgrade"])  # the heartbeat reply over the link, then over HTTP
def test_an_unpinned_agent_told_circle_by_a_heartbeat_reply_refuses_public_tokens(
    fake_tracker, fake_upstream, tmp_path, ws_mode
):
    fake_tracker.ws_mode = ws_mode
    fake_tracker.radius = {"visibility": "circle", "circles": ["c_x"], "circle_only_hours": []}

    async def run():
        async with running_agent(fake_tracker, fake_upstream, tmp_path) as (client, agent):
            assert await until(lambda: agent.circles.visibility == "circle")
            assert refusal(*await taste(client, fake_tracker.token())) == (403, "not_in_circle")
            assert refusal(*await taste(client, fake_tracker.token(circle="c_y"))) == (403, "not_in_circle")
            assert (await taste(client, fake_tracker.token(circle="c_x")))[0] == 200
            assert (await (await client.get("/health")).json())["visibility"] == "circle"
            # What it serves is its circles' business too: /v1/models takes a token that passes the circle check.
            for headers in ({}, {"Authorization": f"Bearer {fake_tracker.token()}"}):
                listed = await client.get("/v1/models", headers=headers)
                assert listed.status in (401, 403) and "data" not in await listed.json()
            member = {"Authorization": f"Bearer {fake_tracker.token(circle='c_x')}"}
            listed = await client.get("/v1/models", headers=member)
            assert listed.status == 200 and (await listed.json())["data"]

    asyncio.run(run())
    assert fake_tracker.http_heartbeats if ws_mode == "no_upgrade" else fake_tracker.messages("heartbeat")


def test_a_pushed_circles_message_applies_at_once_both_ways_for_an_unpinned_agent(
    fake_tracker, fake_upstream, tmp_path
):
    async def run():
        # Heartbeats every minute: only the push can have changed anything within the test.
        async with running_agent(fake_tracker, fake_upstream, tmp_path, heartbeat_interval=60) as (client, agent):
            assert await until(lambda: fake_tracker.open_sockets and fake_tracker.messages("heartbeat"))
            assert (await taste(client, fake_tracker.token()))[0] == 200
            pushed = {"type": "circles", "visibility": "circle", "circles": ["c_x"], "circle_only_hours": []}
            assert await asyncio.to_thread(fake_tracker.push, pushed) == 1
            assert await until(lambda: agent.circles.visibility == "circle", timeout=1)
            assert refusal(*await taste(client, fake_tracker.token())) == (403, "not_in_circle")
            assert (await taste(client, fake_tracker.token(circle="c_x")))[0] == 200
            # Made public again (POST /api/nodes/<id>/publish): an unpinned rig follows the tracker.
            await asyncio.to_thread(fake_tracker.push, {**pushed, "visibility": "public"})
            assert await until(lambda: agent.circles.visibility == "public", timeout=1)
            assert (await taste(client, fake_tracker.token()))[0] == 200

    asyncio.run(run())


def test_a_pinned_circle_rig_is_not_widened_by_a_push_and_serves_its_pinned_circles_only(
    fake_tracker, fake_upstream, tmp_path
):
    async def run():
        pins = {"visibility": "circle", "circle": "c_x", "heartbeat_interval": 60}
        async with running_agent(fake_tracker, fake_upstream, tmp_path, **pins) as (client, agent):
            assert await until(lambda: fake_tracker.open_sockets)
            wrong = {"type": "circles", "visibility": "public", "circles": ["c_y"], "circle_only_hours": []}
            await asyncio.to_thread(fake_tracker.push, wrong)
            assert await until(lambda: agent.circles.told_visibility == "public", timeout=1)
            assert (agent.circles.visibility, agent.circles.circles) == ("circle", {"c_x"})
            assert refusal(*await taste(client, fake_tracker.token())) == (403, "not_in_circle")
            assert refusal(*await taste(client, fake_tracker.token(circle="c_y"))) == (403, "not_in_circle")
            # Public-key mode meets the same check, before anything else is asked of the token.
            sealed = fake_tracker.token(crypto_mode="public-key")
            assert refusal(*await taste(client, sealed)) == (403, "not_in_circle")
            assert (await taste(client, fake_tracker.token(circle="c_x")))[0] == 200

    asyncio.run(run())


# --- circle-only hours ----------------------------------------------------------------------------------------------

HALF_PAST_ONE_PM = calendar.timegm((2026, 1, 1, 13, 30, 0))


def test_during_circle_only_hours_a_public_rig_serves_its_circles_only(fake_tracker, fake_upstream, tmp_path):
    fake_tracker.radius = {"visibility": "public", "circles": ["c_x"], "circle_only_hours": [13, 14, 22]}
    now = [HALF_PAST_ONE_PM]

    async def run():
        async with running_agent(fake_tracker, fake_upstream, tmp_path) as (client, agent):
            agent.circles.clock = lambda: now[0]
            assert await until(lambda: agent.circles.circle_only_hours == {13, 14, 22})
            r = await client.post(
                "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {fake_tracker.token()}"}
            )
            assert refusal(r.status, await r.json()) == (403, "circle_only_now")
            # Until the first hour not in the list: 15:00 UTC, an hour and a half away.
            assert r.headers["Retry-After"] == "5400"
            assert "until 15:00 UTC" in (await r.json())["error"]["message"]
            assert refusal(*await taste(client, fake_tracker.token(circle="c_y"))) == (403, "circle_only_now")
            assert (await taste(client, fake_tracker.token(circle="c_x")))[0] == 200
            now[0] += 1800  # 14:00
            assert refusal(*await taste(client, fake_tracker.token())) == (403, "circle_only_now")
            now[0] += 3600  # 15:00: open to everyone again
            assert (await taste(client, fake_tracker.token()))[0] == 200

    asyncio.run(run())


def test_a_rig_that_is_circle_only_at_every_hour_says_so_without_a_retry_time():
    guard = CircleGuard(clock=lambda: HALF_PAST_ONE_PM)
    guard.apply({"visibility": "public", "circles": ["c_x"], "circle_only_hours": list(range(24))})
    with pytest.raises(Exception) as refused:  # noqa: PT011 - AgentError, checked below
        guard.check(None)
    assert refused.value.code == "circle_only_now" and "Retry-After" not in refused.value.headers
    assert "at every hour of the day" in refused.value.message
    guard.check("c_x")  # a member is served


# --- the guard's own rules ------------------------------------------------------------------------------------------


def test_pins_win_and_the_tracker_can_only_narrow():
    pinned = CircleGuard(pinned_visibility="circle", pinned_circles={"c_x"})
    pinned.apply({"visibility": "public", "circles": ["c_x", "c_y"]})
    assert (pinned.visibility, pinned.circles) == ("circle", {"c_x"})
    # A rig pinned public (or not pinned) becomes a circle rig when the tracker says so: narrowing is always allowed.
    public = CircleGuard(pinned_visibility="public")
    public.apply({"visibility": "circle", "circles": ["c_y"]})
    assert (public.visibility, public.circles) == ("circle", {"c_y"})
    assert not public.serves(None) and public.serves("c_y") and not public.serves("c_x")
    # Pinned circles without a pinned visibility: served first, but the tracker's `public` stands.
    friends = CircleGuard(pinned_circles={"c_x"})
    friends.apply({"visibility": "public", "circles": ["c_y"]})
    assert (friends.visibility, friends.circles) == ("public", {"c_x"})


def test_absent_or_malformed_fields_leave_what_was_known():
    guard = CircleGuard()
    guard.apply({"visibility": "circle", "circles": ["c_x"], "circle_only_hours": [3]})
    for wrong in (
        {},  # a tracker from before circles says nothing
        {"visibility": "everyone", "circles": "c_y", "circle_only_hours": [24]},
        {"visibility": None, "circles": [1, 2], "circle_only_hours": ["3"]},
        {"circles": None, "circle_only_hours": [True]},
        {"circle_only_hours": [-1]},
    ):
        guard.apply(wrong)
        assert (guard.visibility, guard.circles, guard.circle_only_hours) == ("circle", {"c_x"}, {3}), wrong


def test_the_trackers_word_survives_a_restart(tmp_path):
    state = tmp_path / "circles.json"
    CircleGuard(state_file=state).apply({"visibility": "circle", "circles": ["c_x"], "circle_only_hours": [1]})
    assert json.loads(state.read_text()) == {
        "visibility": "circle",
        "circles": ["c_x"],
        "circle_only_hours": [1],
        "owner_id": None,
    }
    again = CircleGuard(state_file=state)  # restarted while the tracker is down: still a circle rig
    assert (again.visibility, again.circles, again.circle_only_hours) == ("circle", {"c_x"}, {1})
    state.write_text("{not json")
    assert CircleGuard(state_file=state).visibility == "public"  # an unreadable file is as if never written


def test_the_rigs_owner_tastes_a_circle_rig_shared_with_no_circle_and_nobody_else_does():
    guard = CircleGuard(pinned_visibility="circle")
    guard.apply({"visibility": "circle", "circles": [], "owner_id": "c_owner"})
    guard.check(None, subject="c_owner")
    for subject in ("c_friend", "anon:0123456789abcdef", None):
        with pytest.raises(Exception) as refused:  # noqa: PT011 - AgentError, checked below
            guard.check(None, subject=subject)
        assert refused.value.code == "not_in_circle"
    # A malformed owner leaves the known one.
    guard.apply({"owner_id": 7})
    guard.apply({"owner_id": ""})
    assert guard.owner_id == "c_owner"


def test_a_bad_visibility_pin_is_refused():
    with pytest.raises(ValueError, match="--visibility must be local, public, unlisted or circle"):
        AgentConfig(visibility="friends")
    assert AgentConfig(circle=["c_x", " c_y "]).pinned_circles == {"c_x", "c_y"}  # agent.json keeps a list


# --- friends first ----------------------------------------------------------------------------------------------------


def test_the_queue_serves_friends_then_contributors_then_limited_tasters_first_come_first_served_within():
    async def run():
        queue = SlotQueue(1, 16, max_per_key=16)
        assert queue.enter("busy", tier="limited") is None  # holds the only slot
        arrivals = [
            ("limited-1", "limited", False),
            ("contributor-1", "contributor", False),
            ("friend-1", "limited", True),
            ("limited-2", "limited", False),
            ("friend-2", "contributor", True),
            ("contributor-2", "contributor", False),
        ]
        for ticket, tier, friend in arrivals:
            assert queue.enter(ticket, tier=tier, key=ticket, friend=friend) is not None
        served = []
        ticket = "busy"
        while queue.waiters or queue.active:
            queue.release(ticket)
            if not queue.active:
                break
            (ticket,) = queue.active
            served.append(ticket)
        return served

    assert asyncio.run(run()) == ["friend-1", "friend-2", "contributor-1", "contributor-2", "limited-1", "limited-2"]


def test_a_token_of_a_served_circle_goes_ahead_of_public_tasters_on_a_shared_public_rig(
    fake_tracker, fake_upstream, tmp_path
):
    fake_tracker.radius = {"visibility": "public", "circles": ["c_x"], "circle_only_hours": []}
    fake_upstream.delay = 0.05  # about 0.6 s an answer: long enough to line up behind

    async def run():
        async with running_agent(fake_tracker, fake_upstream, tmp_path) as (client, agent):
            assert await until(lambda: agent.circles.circles == {"c_x"})
            finished = []

            async def one(name, token):
                assert (await taste(client, token))[0] == 200
                finished.append(name)

            first = asyncio.create_task(one("first", fake_tracker.token("contributor")))
            assert await until(lambda: len(agent.queue.active) == 1)
            public = asyncio.create_task(one("public", fake_tracker.token("contributor")))
            assert await until(lambda: len(agent.queue.waiters) == 1)
            friend = asyncio.create_task(one("friend", fake_tracker.token("limited", circle="c_x")))
            assert await until(lambda: len(agent.queue.waiters) == 2)
            await asyncio.gather(first, public, friend)
            return finished

    assert asyncio.run(run()) == ["first", "friend", "public"]


# --- the agent test the issue asks for: a real agent process ---------------------------------------------------


@pytest.mark.agent
def test_a_circle_rig_is_never_reachable_by_a_public_token_even_when_the_trackers_word_is_wrong(
    fake_tracker, start_linked_agent, fake_upstream
):
    """The operator pinned `--visibility circle --circle c_x`; the tracker's heartbeat replies say the rig is public
    and shared with c_y. The rig still serves c_x only."""
    import requests

    fake_tracker.radius = {"visibility": "public", "circles": ["c_y"], "circle_only_hours": []}
    agent = start_linked_agent(fake_upstream.base, visibility="circle", circle="c_x")
    told = agent.config_dir / "state" / fake_tracker.node_id / "circles.json"
    # The wrong word has arrived (the agent keeps what the tracker last said), and did not widen the rig.
    assert wait_until(lambda: told.exists() and json.loads(told.read_text())["visibility"] == "public", timeout=15)

    def post(token):
        headers = {"Authorization": f"Bearer {token}"}
        return requests.post(agent.v1 + "/chat/completions", json=BODY, headers=headers, timeout=30)

    for token in (fake_tracker.token("contributor"), fake_tracker.token(circle="c_y")):
        r = post(token)
        assert refusal(r.status_code, r.json()) == (403, "not_in_circle")
    assert post(fake_tracker.token(circle="c_x")).status_code == 200
    assert requests.get(agent.base + "/health", timeout=10).json()["visibility"] == "circle"
    assert "visibility circle, 1 circle(s) (pinned)" in agent.log()


def test_review_the_trackers_owner_id_does_not_widen_a_rig_whose_circles_are_pinned():
    """Pins win (issue 15): with its circles pinned, a rig takes tokens of those circles only. The owner's own
    tokens carry one of them (the owner is in every circle the rig is shared with); an owner_id from the tracker
    must not admit a token without one, or a tracker bug naming a stranger as the owner would open the rig."""
    guard = CircleGuard(pinned_visibility="circle", pinned_circles=["c_x"])
    guard.apply({"visibility": "circle", "circles": ["c_x"], "owner_id": "c_stranger"})
    with pytest.raises(Exception) as refused:  # noqa: PT011 - AgentError, checked below
        guard.check(None, subject="c_stranger")
    assert refused.value.code == "not_in_circle"
    guard.check("c_x", subject="c_stranger")
    # Without pinned circles the tracker's word decides the circles anyway: its owner_id admits the owner.
    unpinned = CircleGuard(pinned_visibility="circle")
    unpinned.apply({"visibility": "circle", "circles": [], "owner_id": "c_owner"})
    unpinned.check(None, subject="c_owner")

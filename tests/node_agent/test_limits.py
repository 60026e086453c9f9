"""The pure parts of the agent's defences against hostile tasters, tested directly: what counts as one client
address, one token's share of the queue, response_format's bounds, and the counting of repeated log lines."""

import asyncio
import logging

import pytest

from node_agent.chat import parse_chat
from node_agent.connections import address_key
from node_agent.errors import AgentError
from node_agent.logs import RepeatFilter
from node_agent.queue import SlotQueue


@pytest.mark.parametrize(
    "host, key",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4-mapped address is the IPv4 address
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one household gets a whole /64
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("127.0.0.1", None),  # loopback: relayed tasters, and a reverse proxy on the same machine
        ("::1", None),
        ("::ffff:127.0.0.1", None),
        ("", None),  # not an IP peer (a unix socket)
    ],
)
def test_what_counts_as_one_client_address(host, key):
    assert address_key(host) == key


def test_the_loopback_exemption_can_be_switched_off_for_tests():
    assert address_key("127.0.0.1", exempt_loopback=False) == "127.0.0.1"


def test_one_key_has_at_most_its_share_of_the_queue():
    async def run():
        queue = SlotQueue(1, 8, max_per_key=2)
        assert queue.enter("t1", tier="limited", key="jti-a") is None  # generating
        waiter = queue.enter("t2", tier="limited", key="jti-a")  # waiting
        with pytest.raises(AgentError) as refused:
            queue.enter("t3", tier="limited", key="jti-a")
        assert refused.value.status == 429 and refused.value.code == "token_busy"
        assert int(refused.value.headers["Retry-After"]) >= 1
        assert queue.enter("t4", tier="limited", key="jti-b") is not None  # another token still gets in line
        queue.release("t1")  # one finished (t2 generates now): room for one more of jti-a
        await queue.wait(waiter)
        assert queue.enter("t5", tier="limited", key="jti-a") is not None
        with pytest.raises(AgentError):
            queue.enter("t6", tier="limited", key="jti-a")

    asyncio.run(run())


def test_a_waiter_that_leaves_gives_its_token_room_again():
    async def run():
        queue = SlotQueue(1, 8, max_per_key=1)
        queue.enter("t1", tier="limited", key="jti-x")
        waiter = queue.enter("t2", tier="limited", key="jti-y")
        task = asyncio.ensure_future(queue.wait(waiter))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queue.enter("t3", tier="limited", key="jti-y") is not None

    asyncio.run(run())


def chat_with(response_format):
    return parse_chat({"messages": [{"role": "user", "content": "hi"}], "response_format": response_format})


def nested(levels: int):
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def test_response_format_depth_is_counted_from_the_object_itself():
    # {"type", "json_schema": {"schema": ...}}: the schema starts at level 3.
    ok = {"type": "json_schema", "json_schema": {"schema": nested(14)}}  # the deepest object is level 16
    assert chat_with(ok)[1]["response_format"] == ok
    with pytest.raises(AgentError, match="deeper than 16"):
        chat_with({"type": "json_schema", "json_schema": {"schema": nested(15)}})


def test_a_response_format_nested_far_too_deep_is_refused_without_recursion():
    deep = nested(50_000)  # far past Python's recursion limit: checked iteratively
    with pytest.raises(AgentError, match="response_format"):
        chat_with({"type": "json_schema", "json_schema": {"schema": deep}})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_repeats_of_one_message_are_counted_then_written_once():
    clock = Clock()
    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            written.append(record.getMessage())

    logger = logging.getLogger("luckrig.test.repeats")
    logger.propagate = False
    handler = Collect()
    repeats = RepeatFilter(60, clock=clock)
    handler.addFilter(repeats)
    logger.addHandler(handler)
    try:
        for _ in range(500):
            logger.warning("moderation hook failed (%s)", "ValueError")
        logger.warning("request %s served", "t_1")  # a distinct line is untouched
        assert written == ["moderation hook failed (ValueError)", "request t_1 served"]
        clock.now = 61
        repeats.flush()
        assert written[-1] == "moderation hook failed (ValueError) (repeated 499 times in 60 s)"
        logger.warning("moderation hook failed (%s)", "ValueError")  # a new window: written again
        assert written[-1] == "moderation hook failed (ValueError)" and len(written) == 4
    finally:
        logger.removeHandler(handler)


def test_the_filter_remembers_a_bounded_number_of_messages():
    repeats = RepeatFilter(60, max_messages=10, clock=Clock())
    for i in range(1000):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "line %d", (i,), None)
        assert repeats.filter(record)
    assert len(repeats.seen) <= 10

"""The fan-out's pace (nodes/fanout.py Pace): ten sends a second on average, two in a row at most."""

import random

from nodes.fanout import Pace


def run(arrivals: list[float], pace: Pace) -> list[float]:
    """When each event happens: at its arrival, or as soon as the pace allows (a busy sender, one at a time)."""
    done, free = [], float("-inf")
    for at in arrivals:
        at = max(at, free)
        at += pace.delay(at)
        pace.take(at)
        done.append(at)
        free = at
    return done


def test_changes_at_about_the_pace_itself_never_wait():
    # An agent that coalesces to ten changes a second, with 20 ms of jitter either way.
    rng = random.Random(5)
    arrivals = [i * 0.1 + rng.uniform(-0.02, 0.02) for i in range(1000)]
    done = run(arrivals, Pace(0.1))
    assert max(d - a for d, a in zip(done, arrivals, strict=True)) < 1e-9


def test_a_flood_is_held_to_ten_a_second_with_two_in_a_row_at_most():
    arrivals = [i * 0.001 for i in range(5000)]  # 1,000 a second for 5 s
    done = run(arrivals, Pace(0.1))
    assert done[:2] == arrivals[:2]  # the burst of two goes at once
    assert all(c - a >= 0.1 - 1e-9 for a, c in zip(done, done[2:], strict=False))  # never three in 100 ms
    for start in range(0, 40):  # any one-second window holds at most 10 + the burst of 2
        window = [d for d in done if start * 0.1 <= d < start * 0.1 + 1]
        assert len(window) <= 12

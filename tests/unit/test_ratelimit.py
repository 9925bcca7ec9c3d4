"""The rolling-window budget, on a clock the test moves: never N+1 arrivals in one window."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bridge import ratelimit

WINDOW_S = 10.0


class FakeTime:
    """A clock and a sleep that moves it, so waits take no real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


def budget(t: FakeTime, limit: int) -> ratelimit.RollingWindow:
    return ratelimit.RollingWindow(limit, WINDOW_S, clock=t, sleep=t.sleep)


def most_in_one_window(arrivals: list[float]) -> int:
    """The most arrivals in any ``(a - W, a]``, the way the remote counts them."""
    return max(sum(1 for b in arrivals if a - WINDOW_S < b <= a) for a in arrivals)


@pytest.mark.parametrize(
    "latencies",
    [
        [0.5] + [0.0] * 20,  # the first request slow on the way, the rest instant
        [0.3, 0.0, 1.2, 0.0, 2.0, 0.1] * 4,
    ],
)
async def test_requests_slow_on_the_way_never_put_n_plus_1_in_one_window(
    latencies: list[float],
) -> None:
    t = FakeTime()
    limit = 4
    window = budget(t, limit)
    arrivals = []
    for travel_s in latencies:
        async with window.slot():
            await t.sleep(travel_s)  # on the way to the remote
            arrivals.append(t.now)  # the remote counts it here
            await t.sleep(0.05)  # served, and the answer comes back
    assert most_in_one_window(arrivals) <= limit
    assert len(arrivals) == len(latencies)


async def test_the_window_restarts_when_the_answer_is_back() -> None:
    t = FakeTime()
    window = budget(t, 2)
    starts = []
    for _ in range(3):
        async with window.slot():
            starts.append(t.now)
            await t.sleep(1.0)  # each exchange takes a second
    # The third waits one window after the *first answer* (1001), not after the first start.
    assert starts == [1000.0, 1001.0, 1001.0 + WINDOW_S]


async def test_requests_in_flight_hold_their_slots_however_long_they_take() -> None:
    t = FakeTime()
    window = budget(t, 2)
    async with contextlib.AsyncExitStack() as held:
        await held.enter_async_context(window.slot())
        second = contextlib.AsyncExitStack()
        await second.enter_async_context(window.slot())
        waiting = asyncio.create_task(window.slot().__aenter__())
        t.now += 5 * WINDOW_S  # both answers still outstanding, long after the window
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done(), "a third request went while two were in flight"
        released_at = t.now
        await second.aclose()
        await asyncio.wait_for(waiting, 1)
        assert t.now == released_at + WINDOW_S


async def test_a_failed_or_cancelled_request_still_counts_once() -> None:
    t = FakeTime()
    window = budget(t, 1)
    with pytest.raises(ConnectionError):
        async with window.slot():
            raise ConnectionError  # it may have reached the remote
    before = t.now
    async with window.slot():
        assert t.now == before + WINDOW_S


async def test_zero_disables_the_budget_but_not_a_pause() -> None:
    t = FakeTime()
    window = budget(t, 0)
    for _ in range(100):
        async with window.slot():
            pass
    assert t.now == 1000.0
    window.pause(3.0)
    async with window.slot():
        assert t.now == 1003.0

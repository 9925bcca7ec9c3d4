"""A rolling-window request budget, shared by every caller of one remote account.

HubSpot counts requests in a rolling window (``TEN_SECONDLY_ROLLING``: at most N in any 10 s).
A leaky bucket such as ``aiolimiter`` admits a full burst and then its steady rate, which is
up to twice N inside one such window; this keeps the timestamps of the last N requests and lets
a request go only when the oldest has left the window.

The remote counts a request when it *arrives*, which is some time after we let it go. So a
request holds its slot from the moment it is let go until its answer is back, and only then is
it stamped: the answer left the remote after the request arrived there, so a request let go one
window after that stamp arrives more than one window after the one before it, however long
either spent on the way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable


class RollingWindow:
    """At most ``limit`` requests in any ``window_s`` seconds as the remote counts them.

    A request occupies its slot from :meth:`slot` entry until exit (in flight), then for one
    window after its exit; :meth:`pause` stops all.

    Args:
        limit: Requests allowed per window; 0 disables the budget.
        window_s: The window length in seconds.
        clock: A monotonic clock (tests may pass their own).
        sleep: How to wait (tests pass one that moves their clock).
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._stamps: collections.deque[float] = collections.deque()  # completions in window
        self._in_flight = 0
        self._released = asyncio.Event()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<RollingWindow {self.limit}/{self.window_s}s>"

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait until a request fits the budget; hold its slot while the body runs.

        Use it around the whole exchange, answer read included::

            async with budget.slot():
                async with session.get(url) as response:
                    await response.read()
        """
        counted = await self._acquire()
        try:
            yield
        finally:
            if counted:
                self._release()

    def usage(self) -> tuple[int, float]:
        """(requests counted in the current window or in flight, seconds paused from now)."""
        now = self._clock()
        used = sum(1 for stamp in self._stamps if stamp > now - self.window_s)
        return used + self._in_flight, max(0.0, self._paused_until - now)

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (the remote said its budget is spent)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def _acquire(self) -> bool:
        """Wait for a free slot and take it; returns whether it was counted."""
        if self.limit <= 0 and self._paused_until <= self._clock():
            return False
        async with self._lock:  # first come, first served
            while (wait_s := self._wait_s(self._clock())) != 0:
                if wait_s is None:  # every slot is in flight: the next exit frees one
                    self._released.clear()
                    await self._released.wait()
                    continue
                await self._sleep(wait_s)
            if self.limit <= 0:
                return False
            self._in_flight += 1
            return True

    def _release(self) -> None:
        self._in_flight -= 1
        self._stamps.append(self._clock())
        self._released.set()

    def _wait_s(self, now: float) -> float | None:
        """Seconds until a slot is free at ``now``; ``None`` until a request in flight ends."""
        if self._paused_until > now:
            return self._paused_until - now
        if self.limit <= 0:
            return 0.0
        while self._stamps and self._stamps[0] <= now - self.window_s:
            self._stamps.popleft()
        if len(self._stamps) + self._in_flight < self.limit:
            return 0.0
        if not self._stamps:
            return None
        return max(self._stamps[0] + self.window_s - now, 1e-9)

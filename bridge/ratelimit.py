"""A rolling-window request budget, shared by every caller of one remote account.

HubSpot counts requests in a rolling window (``TEN_SECONDLY_ROLLING``: at most N in any 10 s).
A leaky bucket such as ``aiolimiter`` admits a full burst and then its steady rate, which is
up to twice N inside one such window; this keeps the timestamps of the last N requests and lets
a request go only when the oldest has left the window.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable


class RollingWindow:
    """At most ``limit`` acquisitions in any ``window_s`` seconds; :meth:`pause` stops all.

    Args:
        limit: Requests allowed per window; 0 disables the budget.
        window_s: The window length in seconds.
        clock: A monotonic clock (tests may pass their own).
    """

    def __init__(
        self, limit: int, window_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._stamps: collections.deque[float] = collections.deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def __repr__(self) -> str:
        return f"<RollingWindow {self.limit}/{self.window_s}s>"

    async def acquire(self) -> None:
        """Wait until a request fits the budget, and count it."""
        if self.limit <= 0 and self._paused_until <= self._clock():
            return
        async with self._lock:  # first come, first served
            while True:
                wait_s = self._wait_s(self._clock())
                if wait_s <= 0:
                    break
                self.waited_s += wait_s
                await asyncio.sleep(wait_s)
            if self.limit > 0:
                self._stamps.append(self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (the remote said its budget is spent)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _wait_s(self, now: float) -> float:
        if self._paused_until > now:
            return self._paused_until - now
        if self.limit <= 0:
            return 0.0
        while self._stamps and self._stamps[0] <= now - self.window_s:
            self._stamps.popleft()
        if len(self._stamps) < self.limit:
            return 0.0
        return self._stamps[0] + self.window_s - now

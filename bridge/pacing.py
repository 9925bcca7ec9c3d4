"""Timing decisions: per-row poll pacing, delivery retry delays, and a job-wide backoff gate."""

from __future__ import annotations

import random

from bridge import settings as settings_mod

# A job-wide backoff after a transient Lance failure starts here and doubles up to the cap.
GATE_FIRST_DELAY_S = 1.0
GATE_MAX_DELAY_S = 60.0


def jittered(delay_s: float, jitter: float, rng: random.Random) -> float:
    """``delay_s`` spread by ±``jitter`` (a fraction), never negative."""
    if delay_s <= 0 or jitter <= 0:
        return max(0.0, delay_s)
    return delay_s * rng.uniform(1 - jitter, 1 + jitter)


def poll_delay(age_s: float, config: settings_mod.PollSettings, rng: random.Random) -> float:
    """Seconds until a pending row is polled again.

    Young rows are polled every tick; older ones back off exponentially with jitter, and no
    row ever waits longer than ``max_delay_seconds``.
    """
    base = config.interval_seconds
    if age_s <= config.young_seconds:
        return base
    steps = (age_s - config.young_seconds) / max(base, 1e-3)
    exponent = min(steps, 64.0) ** 0.5  # grows slowly: sqrt of ticks past young
    delay = base * config.backoff_factor**exponent
    return min(
        config.max_delay_seconds, jittered(min(delay, config.max_delay_seconds), config.jitter, rng)
    )


def retry_delay(
    attempts: int,
    schedule_s: tuple[float, ...],
    jitter: float,
    rng: random.Random,
    *,
    at_least_s: float | None = None,
) -> float | None:
    """Delay before the next delivery attempt, or ``None`` when the schedule is exhausted.

    ``attempts`` counts the attempts already made (this failure included). The first entry of
    the schedule is the first attempt itself, so after ``n`` attempts the next waits
    ``schedule_s[n]``.
    """
    if attempts >= len(schedule_s):
        return None
    delay = jittered(schedule_s[attempts], jitter, rng)
    return max(delay, at_least_s or 0.0)


class Gate:
    """A job-wide pause after transient failures (429, 5xx, timeouts).

    Each failure doubles the pause (honouring ``Retry-After`` when longer); a success closes
    the gate. Rows are never dropped while the gate is shut: they simply wait.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.open_at = 0.0
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def is_open(self, now: float) -> bool:
        """Whether work may be attempted at ``now``."""
        return now >= self.open_at

    def fail(self, now: float, retry_after_s: float | None = None) -> float:
        """Record a failure; returns the pause in seconds."""
        self.failures += 1
        pause = min(GATE_MAX_DELAY_S, GATE_FIRST_DELAY_S * 2 ** (self.failures - 1))
        pause = max(jittered(pause, 0.2, self._rng), retry_after_s or 0.0)
        self.open_at = now + pause
        return pause

    def hold(self, now: float, pause_s: float) -> None:
        """Shut the gate for a fixed time (e.g. credits exhausted)."""
        self.open_at = max(self.open_at, now + pause_s)

    def succeed(self) -> None:
        """Record a success: the next failure starts from the shortest pause again."""
        self.failures = 0

"""The jobs on an APScheduler 3 ``AsyncIOScheduler``, supervised.

Each job runs at most one instance at a time (a slow run makes the next one be skipped, not
stacked). A job that raises unexpectedly stops the process with a non-zero exit rather than
leave work that nobody processes; shutdown waits a grace period, then cancels and logs.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler import events  # type: ignore[import-untyped]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from bridge import dispatcher, fetcher, poller, triggerer

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Jobs:
    """The four jobs; each has a single-pass ``run_once()``."""

    triggerer: triggerer.Triggerer
    poller: poller.Poller
    fetcher: fetcher.Fetcher
    dispatcher: dispatcher.Dispatcher

    async def run_all_once(self) -> dict[str, Any]:
        """One pass of every job, in pipeline order (tests and ``demo`` drive the bridge so)."""
        return {
            "trigger": await self.triggerer.run_once(),
            "poll": await self.poller.run_once(),
            "fetch": await self.fetcher.run_once(),
            "deliver": await self.dispatcher.run_once(),
        }


class Supervisor:
    """Runs the jobs on an interval; :attr:`failed` is set when one dies unexpectedly."""

    def __init__(self, schedule: dict[str, tuple[float, Callable[[], Awaitable[Any]]]]) -> None:
        self._schedule = schedule
        self._scheduler = AsyncIOScheduler()
        self._running: set[asyncio.Task[Any]] = set()
        self.skipped: collections.Counter[str] = collections.Counter()
        self._scheduler.add_listener(self._on_skip, events.EVENT_JOB_MAX_INSTANCES)
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether the scheduler is started and no job has died."""
        return bool(self._scheduler.running) and not self.failed.is_set()

    def start(self) -> None:
        """Start every job now and then on its interval."""
        for name, (interval_s, run_once) in self._schedule.items():
            self._scheduler.add_job(
                self._runner(name, run_once),
                IntervalTrigger(seconds=interval_s),
                id=name,
                name=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.datetime.now(tz=datetime.UTC),
            )
        self._scheduler.start()

    def _on_skip(self, event: Any) -> None:
        # A run still busy when the next is due is skipped, never stacked (DESIGN §7).
        self.skipped[event.job_id] += 1

    def _runner(self, name: str, run_once: Callable[[], Awaitable[Any]]) -> Callable[[], Any]:
        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("job %s died", name, extra={"event": "job.died", "job": name})
                self.failure = exc
                self.failed.set()
            finally:
                self._running.discard(task)

        return run

    async def stop(self, grace_s: float) -> None:
        """Stop scheduling, wait up to ``grace_s`` for running jobs, then cancel the rest."""
        if self._scheduler.running:
            self._scheduler.pause()
        running = set(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                logger.warning(
                    "cancelling %s after the grace period",
                    task.get_name(),
                    extra={"event": "job.cancelled"},
                )
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

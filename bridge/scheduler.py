"""The jobs on an APScheduler 3 ``AsyncIOScheduler``, supervised.

Each job runs at most one instance at a time (a slow run makes the next one be skipped, not
stacked). A job that raises unexpectedly stops the process with a non-zero exit rather than
leave work that nobody processes; shutdown waits a grace period, then cancels and logs. Each run
is timed for the metrics and summarized in one debug log line (never one per row).

A job that finds the ledger unavailable (disk full, I/O error) skips that run: /readyz fails
meanwhile and the ledger watch job recovers when a write succeeds again. A ledger file deleted
or replaced while open stops the process with a non-zero exit, like a dead job.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler import events  # type: ignore[import-untyped]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from bridge import dispatcher, errors, fetcher, matcher, poller, resolver, triggerer

logger = logging.getLogger(__name__)
# Keys a LogRecord already has: a report field of that name must not be passed as ``extra``.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_EPOCH = datetime.datetime.fromtimestamp(0, tz=datetime.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Jobs:
    """The jobs; each has a single-pass ``run_once()``."""

    triggerer: triggerer.Triggerer
    poller: poller.Poller
    fetcher: fetcher.Fetcher
    dispatcher: dispatcher.Dispatcher
    resolver: resolver.Resolver
    matcher: matcher.Matcher

    async def run_all_once(self) -> dict[str, Any]:
        """One pass of every job, in pipeline order (tests and ``demo`` drive the bridge so)."""
        return {
            "resolve": await self.resolver.run_once(),
            "match": await self.matcher.run_once(),
            "trigger": await self.triggerer.run_once(),
            "poll": await self.poller.run_once(),
            "fetch": await self.fetcher.run_once(),
            "deliver": await self.dispatcher.run_once(),
        }


class Supervisor:
    """Runs the jobs on an interval; :attr:`failed` is set when one dies unexpectedly.

    Args:
        schedule: Per job name, its interval in seconds and its ``run_once``.
        observe: Called with the job name and duration in seconds after each completed run.
        aligned: Jobs run on a grid of their interval from the Unix epoch, not from start (the
            first run then waits for the next grid point): replicas sharing a ledger then
            run them at the same instants.
    """

    def __init__(
        self,
        schedule: dict[str, tuple[float, Callable[[], Awaitable[Any]]]],
        *,
        observe: Callable[[str, float], None] | None = None,
        aligned: frozenset[str] = frozenset(),
    ) -> None:
        self._schedule = schedule
        self._aligned = aligned
        self._observe = observe
        self._scheduler = AsyncIOScheduler()
        self._running: dict[asyncio.Task[Any], str] = {}  # job name of each running run
        self._draining = False  # set once stop() begins: a cancelled run is the drain's
        self.skipped: collections.Counter[str] = collections.Counter()
        self._scheduler.add_listener(self._on_skip, events.EVENT_JOB_MAX_INSTANCES)
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the scheduler is started and no job has died."""
        return bool(self._scheduler.running) and not self.failed.is_set()

    def start(self) -> None:
        """Start every job now and then on its interval."""
        now = datetime.datetime.now(tz=datetime.UTC)
        for name, (interval_s, run_once) in self._schedule.items():
            trigger = IntervalTrigger(seconds=interval_s)
            first = now
            if name in self._aligned:
                trigger = IntervalTrigger(seconds=interval_s, start_date=_EPOCH)
                first = trigger.get_next_fire_time(None, now)
            self._scheduler.add_job(
                self._runner(name, run_once),
                trigger,
                id=name,
                name=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=first,
            )
        self._scheduler.start()

    def _on_skip(self, event: Any) -> None:
        # A run still busy when the next is due is skipped, never stacked (DESIGN §7).
        self.skipped[event.job_id] += 1

    def _runner(self, name: str, run_once: Callable[[], Awaitable[Any]]) -> Callable[[], Any]:
        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running[task] = name
            started = time.perf_counter()
            try:
                report = await run_once()
            except asyncio.CancelledError:
                if not self._draining:
                    raise
                # Cut by stop() after the grace period, which logged it: the end of a drain,
                # not a failure for the scheduler to report with a traceback.
                return
            except errors.LedgerLostError as exc:
                # The ledger logged it; the work it held is gone, so stop and be restarted.
                self.failure = exc
                self.failed.set()
            except errors.LedgerUnavailableError:
                # Logged once by the ledger; /readyz fails, and the next run tries again.
                logger.debug("%s skipped: ledger unavailable", name, extra={"job": name})
            except Exception as exc:
                logger.exception("job %s died", name, extra={"event": "job.died", "job": name})
                self.failure = exc
                self.failed.set()
            else:
                self._ran(name, report, time.perf_counter() - started)
            finally:
                self._running.pop(task, None)

        return run

    def _ran(self, name: str, report: Any, elapsed_s: float) -> None:
        if self._observe is not None:
            self._observe(name, elapsed_s)
        if logger.isEnabledFor(logging.DEBUG):
            duration_ms = round(elapsed_s * 1000, 1)
            fields = {"event": "job.ran", "job": name, "duration_ms": duration_ms}
            logger.debug(
                "%s ran in %.1f ms", name, duration_ms, extra=fields | _report_fields(report)
            )

    def begin_stop(self, grace_s: float) -> None:
        """Start :meth:`stop` now, without waiting for it (``serve`` calls it at SIGTERM).

        The jobs then drain while the HTTP server closes its connections, both within
        ``drain_seconds``; the later :meth:`stop` of the app's cleanup waits for this drain.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_s))

    async def stop(self, grace_s: float) -> None:
        """Stop scheduling, wait up to ``grace_s`` for running jobs, then cancel the rest.

        A drain already begun (:meth:`begin_stop`) is waited for, not started again.
        """
        self.begin_stop(grace_s)
        assert self._stopping is not None
        await self._stopping

    async def _stop(self, grace_s: float) -> None:
        if self._scheduler.running:
            self._scheduler.pause()
        self._draining = True
        running = dict(self._running)
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                # Each job records what its run had already been told before it ends.
                logger.warning(
                    "cancelling %s after the grace period",
                    running[task],
                    extra={"event": "job.cancelled", "job": running[task]},
                )
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)


def _report_fields(report: Any) -> dict[str, Any]:
    """A job report's counts, as log ``extra`` (``due``, ``requests``, ``terminal`` ...)."""
    if not dataclasses.is_dataclass(report) or isinstance(report, type):
        return {}
    return {k: v for k, v in dataclasses.asdict(report).items() if k not in _RESERVED}

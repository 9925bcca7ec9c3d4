"""The supervisor times every run for the metrics and logs one summary line per run."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bridge import poller, scheduler


async def test_each_run_is_observed_and_summarized_in_one_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran = asyncio.Event()
    observed: list[tuple[str, float]] = []

    async def tick() -> poller.PollReport:
        ran.set()
        return poller.PollReport(due=400, requests=2, updated=400, terminal=390)

    supervisor = scheduler.Supervisor(
        {"poll": (3600.0, tick)}, observe=lambda job, s: observed.append((job, s))
    )
    caplog.set_level(logging.DEBUG, logger="bridge.scheduler")
    supervisor.start()
    await ran.wait()
    await supervisor.stop(grace_s=5.0)  # waits for the run to finish

    assert [job for job, _ in observed] == ["poll"]
    assert observed[0][1] >= 0
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "job.ran"]
    assert record.levelno == logging.DEBUG
    fields = vars(record)
    assert fields["job"] == "poll"
    assert (fields["due"], fields["requests"], fields["terminal"]) == (400, 2, 390)
    assert fields["duration_ms"] >= 0
    assert not supervisor.failed.is_set()


async def test_a_drain_begun_at_sigterm_is_the_one_the_cleanup_waits_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes on its own

    supervisor = scheduler.Supervisor({"deliver": (3600.0, stuck)})
    supervisor.start()
    await started.wait()
    loop = asyncio.get_running_loop()
    began = loop.time()

    supervisor.begin_stop(0.2)  # serve, at the signal
    await asyncio.sleep(0.1)  # the HTTP server shuts down meanwhile
    await supervisor.stop(grace_s=10.0)  # the app's cleanup, with the full drain_seconds

    assert loop.time() - began < 1.0  # one grace period, counted from the signal
    cancelled = [r for r in caplog.records if getattr(r, "event", None) == "job.cancelled"]
    assert len(cancelled) == 1


async def test_a_run_cancelled_by_drain_is_one_warning_naming_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()  # a remote that never answers

    supervisor = scheduler.Supervisor({"deliver": (3600.0, stuck)})
    caplog.set_level(logging.DEBUG)
    supervisor.start()
    await started.wait()
    await supervisor.stop(grace_s=0.0)

    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in problems] == ["cancelling deliver after the grace period"]
    assert problems[0].exc_info is None
    assert not supervisor.failed.is_set()


async def test_an_aligned_job_runs_on_its_intervals_grid_from_the_epoch() -> None:
    async def idle() -> None:
        return None

    supervisor = scheduler.Supervisor(
        {"poll": (3600.0, idle), "deliver": (3600.0, idle)}, aligned=frozenset({"poll"})
    )
    before = time.time()
    supervisor.start()
    try:
        jobs = {job.id: job.next_run_time.timestamp() for job in supervisor._scheduler.get_jobs()}
    finally:
        await supervisor.stop(grace_s=5.0)

    # Every replica's poll runs at the same instants: the next whole hour, then every hour.
    assert jobs["poll"] % 3600 == 0
    assert before < jobs["poll"] <= before + 3600
    assert jobs["deliver"] < before + 1  # the others start at once, as always

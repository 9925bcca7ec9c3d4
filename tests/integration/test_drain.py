"""A job run cancelled by drain keeps what the remote side had already answered.

The receiver acknowledges the first deliveries at once and then stalls every request, like an
endpoint that hangs mid-run; the run is cancelled the way ``Supervisor.stop`` cancels a job
after the grace period. Acknowledged deliveries must be ``delivered`` in the ledger and never
sent again; only the stalled ones (their answer never came) may be.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge import app as app_mod
from bridge import scheduler
from bridge.sim import _http
from bridge.sim import lance as sim
from tests.conftest import SECRET, BridgeFactory, Clock, auth, jobs_of, make_settings, tasks_for

CONCURRENCY = 4
EVENTS = 160
ACK_FIRST = 125  # more than one group commit of outcomes (100, dispatcher.RECORD_EVERY)


class StallingReceiver:
    """Acknowledges (204) the first ``ack_first`` requests, then holds every request open
    until :meth:`release`; after that it acknowledges everything.

    Attributes:
        arrivals: Requests seen per ``webhook-id``.
        acknowledged: ``webhook-id`` of each request answered 204, in order.
        stalled: Requests being held open now.
    """

    def __init__(self, ack_first: int) -> None:
        self.ack_first = ack_first
        self.arrivals: collections.Counter[str] = collections.Counter()
        self.acknowledged: list[str] = []
        self.stalled = 0
        self._released = asyncio.Event()
        self._changed = asyncio.Condition()
        self.app = web.Application()
        self.app.router.add_post("/{path:.*}", self._handle)

    def release(self) -> None:
        """Let held requests go (they are acknowledged) and acknowledge all that follow."""
        self._released.set()

    async def wait_stalled(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until ``count`` requests are held open (the sender's slots are all busy)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.stalled >= count)

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        message_id = request.headers.get("webhook-id", "")
        self.arrivals[message_id] += 1
        if len(self.acknowledged) >= self.ack_first and not self._released.is_set():
            async with self._changed:
                self.stalled += 1
                self._changed.notify_all()
            try:
                await self._released.wait()
            finally:
                self.stalled -= 1
        self.acknowledged.append(message_id)
        return web.Response(status=204)


@pytest.fixture
async def stalling() -> AsyncIterator[tuple[StallingReceiver, str]]:
    receiver = StallingReceiver(ack_first=ACK_FIRST)
    runner = await _http.serve_app(receiver.app, "127.0.0.1", 0)
    yield receiver, _http.base_url(runner)
    receiver.release()
    await runner.cleanup()


async def _cancel_like_drain(task: asyncio.Task[Any]) -> None:
    """What ``Supervisor.stop`` does to a run still busy after the grace period."""
    supervisor = scheduler.Supervisor({})
    supervisor._running.add(task)  # the supervisor's own bookkeeping of its running jobs
    await supervisor.stop(grace_s=0.0)
    assert task.cancelled()


async def test_a_cancelled_delivery_run_records_its_acknowledgements_and_never_resends_them(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    stalling: tuple[StallingReceiver, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    _, lance_url = simulator
    receiver, receiver_url = stalling
    hook = {"name": "hook", "type": "webhook", "url": f"{receiver_url}/hook", "secret": SECRET}
    hook |= {"max_concurrency": CONCURRENCY, "timeout_seconds": 60.0}
    client = await make_bridge(make_settings(tmp_path, lance_url, connectors=[hook]))
    await client.post("/v1/triggers", json={"tasks": tasks_for(EVENTS, "emails")}, headers=auth())
    jobs = jobs_of(client)
    store = client.app[app_mod.BRIDGE].ledger
    for _ in range(10):  # every job but delivery, until all the events wait to be sent
        for job in (jobs.triggerer, jobs.poller, jobs.fetcher):
            await job.run_once()
        clock.advance(2.0)
        [(pending,)] = await store.fetch("SELECT count(*) FROM deliveries")
        if pending == EVENTS:
            break
    assert pending == EVENTS

    run = asyncio.create_task(jobs.dispatcher.run_once())
    # Every slot held open: each acknowledgement before them has reached the dispatcher.
    await receiver.wait_stalled(CONCURRENCY)
    [(written,)] = await store.fetch("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
    assert written >= 100, "outcomes are written while the run goes on"
    await _cancel_like_drain(run)

    acknowledged = set(receiver.acknowledged)
    assert len(acknowledged) == ACK_FIRST
    rows = await store.fetch("SELECT message_id, state, attempts, response_status FROM deliveries")
    delivered = {str(r[0]) for r in rows if r[1] == "delivered"}
    assert delivered == acknowledged, "every acknowledgement is recorded, and only those"
    assert {(r[2], r[3]) for r in rows if r[1] == "delivered"} == {(1, 204)}
    assert {int(r[2]) for r in rows if r[1] == "pending"} == {0}, "unanswered: not counted"

    receiver.release()
    clock.advance(1.0)
    report = await jobs.dispatcher.run_once()
    assert report.delivered == EVENTS - ACK_FIRST
    assert all(receiver.arrivals[m] == 1 for m in acknowledged), "an acknowledged one re-sent"
    assert sum(receiver.arrivals.values()) <= EVENTS + CONCURRENCY  # only the held ones twice
    [(left,)] = await store.fetch("SELECT count(*) FROM deliveries WHERE state != 'delivered'")
    assert left == 0

"""A job run cancelled by drain keeps what the remote side had already answered.

The receiver acknowledges the first deliveries at once and then stalls every request, like an
endpoint that hangs mid-run; the run is cancelled the way ``Supervisor.stop`` cancels a job
after the grace period. Acknowledged deliveries must be ``delivered`` in the ledger and never
sent again; only the stalled ones (their answer never came) may be.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge import runtime, scheduler
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


def _supervise(name: str, run_once: Callable[[], Awaitable[Any]]) -> scheduler.Supervisor:
    """One job on the real supervisor: it runs at once, then not again for an hour."""
    supervisor = scheduler.Supervisor({name: (3600.0, run_once)})
    supervisor.start()
    return supervisor


async def _drain(supervisor: scheduler.Supervisor, caplog: pytest.LogCaptureFixture) -> None:
    """Shutdown with no grace period: the busy run is cancelled, as drain does once it ends."""
    with caplog.at_level(logging.WARNING):
        await supervisor.stop(grace_s=0.0)
    assert any(getattr(r, "event", None) == "job.cancelled" for r in caplog.records)
    assert not supervisor.failed.is_set()


async def test_a_cancelled_delivery_run_records_its_acknowledgements_and_never_resends_them(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    stalling: tuple[StallingReceiver, str],
    tmp_path: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, lance_url = simulator
    receiver, receiver_url = stalling
    hook: dict[str, Any] = {"name": "hook", "type": "webhook", "secret": SECRET}
    hook |= {"url": f"{receiver_url}/hook", "max_concurrency": CONCURRENCY, "timeout_seconds": 60}
    client = await make_bridge(make_settings(tmp_path, lance_url, connectors=[hook]))
    await client.post("/v1/triggers", json={"tasks": tasks_for(EVENTS, "emails")}, headers=auth())
    jobs = jobs_of(client)
    store = client.app[runtime.BRIDGE].ledger
    for _ in range(10):  # every job but delivery, until all the events wait to be sent
        for job in (jobs.triggerer, jobs.poller, jobs.fetcher):
            await job.run_once()
        clock.advance(2.0)
        [(pending,)] = await store.fetch("SELECT count(*) FROM deliveries")
        if pending == EVENTS:
            break
    assert pending == EVENTS

    supervisor = _supervise("deliver", jobs.dispatcher.run_once)
    # Every slot held open: each acknowledgement before them has reached the dispatcher.
    await receiver.wait_stalled(CONCURRENCY)

    async def written() -> int:
        [(rows,)] = await store.fetch("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
        return int(rows)

    # While the run goes on (its group commit is a thread away: poll it, bounded).
    for _ in range(500):
        if await written() >= 100:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("outcomes are written while the run goes on")
    await _drain(supervisor, caplog)

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


class HeldAnswers:
    """A middleware for the Lance simulator: on the paths ``matches`` picks, Lance acts (it
    charges a trigger, reads an entity) but only the first ``answer_first`` answers go back;
    later ones are held until :meth:`release`.

    Attributes:
        calls: Requests per path.
        held: Answers being held now.
    """

    def __init__(self, matches: Callable[[str], bool], answer_first: int) -> None:
        self.matches = matches
        self.answer_first = answer_first
        self.calls: collections.Counter[str] = collections.Counter()
        self.answered: list[str] = []
        self.held = 0
        self._released = asyncio.Event()
        self._changed = asyncio.Condition()

    def release(self) -> None:
        self._released.set()

    async def wait_held(self, count: int, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.held >= count)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.matches(request.path):
            return await handler(request)
        self.calls[request.path] += 1
        response = await handler(request)
        if len(self.answered) >= self.answer_first and not self._released.is_set():
            async with self._changed:
                self.held += 1
                self._changed.notify_all()
            try:
                await self._released.wait()
            finally:
                self.held -= 1
        self.answered.append(request.path)
        return response


@contextlib.asynccontextmanager
async def _lance_with(lance_sim: sim.LanceSimulator, held: HeldAnswers) -> AsyncIterator[str]:
    app = lance_sim.create_app()  # the same simulated Lance, behind one more middleware
    app.middlewares.append(held.middleware)
    runner = await _http.serve_app(app, "127.0.0.1", 0)
    try:
        yield _http.base_url(runner)
    finally:
        held.release()
        await runner.cleanup()


async def _settle_until(
    jobs: scheduler.Jobs, clock: Clock, done: Callable[[], Awaitable[bool]]
) -> None:
    for _ in range(10):
        if await done():
            return
        for job in (jobs.triggerer, jobs.poller):
            await job.run_once()
        clock.advance(2.0)
    raise AssertionError("the rows did not get there")


async def test_a_cancelled_fetch_run_stores_the_values_it_had_read(
    make_bridge: BridgeFactory,
    sim_config: sim.SimConfig,
    tmp_path: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = HeldAnswers(lambda path: path.startswith("/api/v1/entities/"), answer_first=6)
    async with _lance_with(sim.LanceSimulator(sim_config), held) as lance_url:
        client = await make_bridge(make_settings(tmp_path, lance_url, fetch={"concurrency": 2}))
        await client.post("/v1/triggers", json={"tasks": tasks_for(10, "emails")}, headers=auth())
        jobs = jobs_of(client)
        store = client.app[runtime.BRIDGE].ledger

        async def waiting_for_values() -> bool:
            [(rows,)] = await store.fetch("SELECT count(*) FROM enrichments WHERE needs_fetch = 1")
            return bool(rows == 10)

        await _settle_until(jobs, clock, waiting_for_values)
        supervisor = _supervise("fetch", jobs.fetcher.run_once)
        await held.wait_held(2)  # six entities read and answered, two answers held
        await _drain(supervisor, caplog)

        [(stored,)] = await store.fetch(
            "SELECT count(*) FROM enrichments WHERE needs_fetch = 0 AND enriched IS NOT NULL"
        )
        assert stored == 6, "the values read before the cancellation are stored"
        read = set(held.answered)
        held.release()
        report = await jobs.fetcher.run_once()
        assert report.stored == 4
        assert all(held.calls[path] == 1 for path in read), "an entity already read is read again"


async def test_a_trigger_cancelled_while_its_answer_is_on_the_way_is_never_paid_twice(
    make_bridge: BridgeFactory,
    sim_config: sim.SimConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lance_sim = sim.LanceSimulator(sim_config)
    held = HeldAnswers(lambda path: path == sim.BATCH, answer_first=0)
    async with _lance_with(lance_sim, held) as lance_url:
        client = await make_bridge(make_settings(tmp_path, lance_url))
        await client.post("/v1/triggers", json={"tasks": tasks_for(50, "emails")}, headers=auth())
        jobs = jobs_of(client)
        store = client.app[runtime.BRIDGE].ledger
        supervisor = _supervise("trigger", jobs.triggerer.run_once)
        await held.wait_held(1)  # Lance charged the trigger; its answer never arrives
        await _drain(supervisor, caplog)
        assert sum(lance_sim.charges.values()) == 50
        [(marked,)] = await store.fetch(
            "SELECT count(*) FROM enrichments WHERE state = 'queued' AND trigger_sent_at > 0"
        )
        assert marked == 50, "the trigger was recorded as sent before it went"

        held.release()
        await jobs.triggerer.run_once()  # after the restart: ask Lance (free), do not trigger
        assert held.calls[sim.BATCH] == 1
        assert max(lance_sim.charges.values()) == 1
        assert sum(lance_sim.charges.values()) == 50
        [(taken,)] = await store.fetch(
            "SELECT count(*) FROM enrichments WHERE state != 'queued' AND lance_id IS NOT NULL"
        )
        assert taken == 50, "Lance's records of the cut trigger are taken over"

"""The poll job: due in-flight rows → Lance batch status (200 per request) → ledger.

One tick selects the rows whose ``next_poll_at`` has come, packs them 200 per batch-query
request, runs a bounded number of requests at once and writes each request's results in one
transaction. Transient Lance failures shut a job-wide gate; the rows simply stay due.

Where replicas share the ledger (``tick_s``), a tick claims the rows due by the last multiple
of ``tick_s`` on the Unix epoch, whenever within its interval the replica's tick runs: the first
replica to tick after a grid point claims everything due by it, the others find it claimed, so
the replicas together send ⌈due/200⌉ requests per tick, not one partial batch each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
from collections.abc import Callable, Sequence

from bridge import errors, lance, ledger, model, outbox, pacing, progress
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)
# The states' plain string values, bound once: read for every row of the hot paths, where an
# enum attribute lookup (Python 3.11) or a str subclass bound as an SQL parameter (sqlite3
# adapts those one by one) would cost more than the string did.
_PENDING = model.EnrichmentState.PENDING.value
_FAILED = model.EnrichmentState.FAILED.value
_TERMINAL = frozenset(state.value for state in model.TERMINAL)


@dataclasses.dataclass(slots=True)
class PollReport:
    """What one tick did."""

    due: int = 0
    requests: int = 0
    updated: int = 0
    terminal: int = 0
    failed_requests: int = 0
    skipped: bool = False


class Poller:
    """The poll job. :meth:`run_once` is one tick; the scheduler only calls it."""

    def __init__(
        self,
        store: ledger.Ledger,
        client: lance.LanceClient,
        config: settings_mod.PollSettings,
        *,
        batch_size: int = lance.QUERY_BATCH_MAX,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        tick_s: float | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.config = config
        self.batch_size = batch_size
        self.tick_s = tick_s  # the shared tick grid, when replicas share the ledger
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.gate = pacing.Gate(self.rng)
        self._busy = asyncio.Lock()

    async def run_once(self) -> PollReport:
        """Poll every due row once (up to the per-tick request limit)."""
        if self._busy.locked():
            return PollReport(skipped=True)
        async with self._busy:
            now = self.clock()
            if not self.gate.is_open(now):
                return PollReport(skipped=True)
            limit = self.config.max_requests_per_tick * self.batch_size
            due_by = now if self.tick_s is None else math.floor(now / self.tick_s) * self.tick_s
            rows = await self.store.due_for_poll(due_by, limit, tick=self.tick_s is not None)
            # In id order: an entity's fields, accepted together, have neighbouring ids, so
            # they share a request and their results commit together (the entity is then
            # read once, a CRM record written once); and the ledger updates rows in the
            # order they are stored, not scattered over the table (several times slower).
            rows.sort(key=_row_id)
            batches = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
            slots = asyncio.Semaphore(self.config.concurrency)
            reports = await asyncio.gather(*(self._poll(batch, slots) for batch in batches))
            if rows:
                await self.store.set_meta("last_poll_at", outbox.iso(now))
            return _total(len(rows), reports)

    async def _poll(self, rows: Sequence[ledger.PollRow], slots: asyncio.Semaphore) -> PollReport:
        async with slots:
            if not self.gate.is_open(self.clock()):
                return PollReport()
            try:
                found = await self.client.query((r.entity_type, r.entity_id, r.field) for r in rows)
            except errors.LancePermanentError as exc:
                if _is_row_problem(exc):
                    return await self._isolate(rows, exc)
                return await self._failed(rows, exc)
            except errors.LanceError as exc:
                return await self._failed(rows, exc)
            self.gate.succeed()
        # The slot bounds requests to Lance only: results wait for the ledger outside it, so
        # while one transaction commits the next requests' results gather into a larger one.
        now = self.clock()
        changes = [self._change(row, found.get(_key(row)), now) for row in rows]
        await self.store.apply(changes, now)
        terminal = sum(change.state in _TERMINAL for change in changes)
        return PollReport(requests=1, updated=len(changes), terminal=terminal)

    async def _isolate(self, rows: Sequence[ledger.PollRow], exc: errors.LanceError) -> PollReport:
        """Lance refused a batch over its content: halve it until the refused rows are found.

        Each half is retried at once (a few extra requests, ~2·log2(200) per bad row), so one
        row Lance will never accept cannot hold its 199 neighbours back forever.
        """
        if len(rows) == 1:
            reason = f"Lance refused to report on it: {exc.message}"
            await self.store.apply(
                [ledger.Change(rows[0].id, _FAILED, error=reason)],
                self.clock(),
            )
            return PollReport(requests=1, updated=1, terminal=1, failed_requests=1)
        middle = len(rows) // 2
        unlimited = asyncio.Semaphore(2)
        halves = [await self._poll(half, unlimited) for half in (rows[:middle], rows[middle:])]
        return _total(0, [PollReport(requests=1, failed_requests=1), *halves])

    def _change(
        self, row: ledger.PollRow, record: lance.Enrichment | None, now: float
    ) -> ledger.Change:
        age_s = now - row.started_at
        if record is None:
            return progress.missing(row.id, age_s, now, config=self.config, rng=self.rng)
        change = progress.interpret(row.id, record, age_s, now, config=self.config, rng=self.rng)
        if change.state == _PENDING and row.has_record:
            # A still-pending record says nothing new; not rewriting it keeps the tick cheap.
            return change._replace(record=None)
        return change

    async def _failed(self, rows: Sequence[ledger.PollRow], exc: errors.LanceError) -> PollReport:
        """Shut the gate; the rows stay due, for whichever replica polls next."""
        now = self.clock()
        if isinstance(exc, errors.LanceAuthError):
            self.gate.hold(now, pacing.GATE_MAX_DELAY_S)
        else:
            self.gate.fail(now, exc.retry_after_s)
        logger.warning(
            "poll request failed: %s",
            exc.message,
            extra={"event": "poll.failed", "status": exc.status},
        )
        await self.store.release([row.id for row in rows], now)
        return PollReport(requests=1, failed_requests=1)


def _is_row_problem(exc: errors.LanceError) -> bool:
    # A 400 about the organization is a setup problem of the whole account, not of a row.
    return exc.status == 400 and "organization" not in exc.message.lower()


def _key(row: ledger.PollRow) -> lance.Key:
    return (row.entity_type, row.entity_id, row.field)


def _row_id(row: ledger.PollRow) -> int:
    return row.id


def _total(due: int, reports: Sequence[PollReport]) -> PollReport:
    total = PollReport(due=due)
    for report in reports:
        total.requests += report.requests
        total.updated += report.updated
        total.terminal += report.terminal
        total.failed_requests += report.failed_requests
    return total

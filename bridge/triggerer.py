"""The trigger job: queued rows → Lance batch triggers (100 person ids per field per request).

Lance returns an existing pending or finished enrichment instead of charging again, so a
trigger repeated after a crash costs nothing; rows only leave ``queued`` once Lance answered.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import random
from collections.abc import Callable, Sequence

from bridge import errors, lance, ledger, model, outbox, pacing, progress
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)
HOLD_META_KEY = "trigger_held"
_UNPUBLISHED = "\0unknown"  # never a hold reason
# The states' plain string values, bound once: read for every row of the hot paths, where an
# enum attribute lookup (Python 3.11) or a str subclass bound as an SQL parameter (sqlite3
# adapts those one by one) would cost more than the string did.
_PENDING = model.EnrichmentState.PENDING.value
_FAILED = model.EnrichmentState.FAILED.value


@dataclasses.dataclass(slots=True)
class TriggerReport:
    """What one run did."""

    requests: int = 0
    triggered: int = 0
    failed: int = 0
    held: str | None = None


class Triggerer:
    """The trigger job. :meth:`run_once` sends every queued row once (up to a limit)."""

    def __init__(
        self,
        store: ledger.Ledger,
        client: lance.LanceClient,
        config: settings_mod.TriggerSettings,
        poll_config: settings_mod.PollSettings,
        *,
        batch_size: int = lance.TRIGGER_BATCH_MAX,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.config = config
        self.poll_config = poll_config
        self.batch_size = batch_size
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.gate = pacing.Gate(self.rng)
        self.hold_reason: str | None = None
        # What the ledger says is unknown at start: it may hold the hold of a process that
        # crashed, so the first run always writes the current state over it.
        self._published: str | None = _UNPUBLISHED

    async def run_once(self) -> TriggerReport:
        """Trigger queued rows, oldest first, one request per 100 ids of a field."""
        report = TriggerReport()
        if self.gate.is_open(self.clock()):
            self.hold_reason = None
            await self._run(report)
        report.held = self.hold_reason
        if report.held != self._published:
            # Operators see a hold in `lance-bridge status`; written only when it changes.
            stamp = f"{outbox.iso(self.clock())}: {report.held}" if report.held else ""
            await self.store.set_meta(HOLD_META_KEY, stamp)
            self._published = report.held
        return report

    async def _run(self, report: TriggerReport) -> None:
        queued = await self.store.queued(self.config.max_requests_per_run * self.batch_size)
        for field, rows in queued.items():
            unsent = await self._resume(field, [r for r in rows if r.sent_at is not None])
            if unsent is None:
                return
            fresh = [r for r in rows if r.sent_at is None] + unsent
            for start in range(0, len(fresh), self.batch_size):
                if not await self._trigger(field, fresh[start : start + self.batch_size], report):
                    return

    async def _resume(
        self, field: str, rows: Sequence[ledger.QueuedRow]
    ) -> list[ledger.QueuedRow] | None:
        """Rows whose trigger went out unanswered (a crash): take over what Lance has.

        Asking costs no credit; triggering again would charge again if Lance's record has
        failed meanwhile. Returns the rows Lance has no record of (to trigger), or ``None``
        when Lance could not be asked.
        """
        unsent: list[ledger.QueuedRow] = []
        for start in range(0, len(rows), lance.QUERY_BATCH_MAX):
            chunk = rows[start : start + lance.QUERY_BATCH_MAX]
            try:
                found = await self.client.query(("person", r.entity_id, field) for r in chunk)
            except errors.LanceError as exc:
                self._hold(exc)
                return None
            now = self.clock()
            changes = []
            for row in chunk:
                record = found.get(("person", row.entity_id, field))
                if record is not None and _answers(record, row.sent_at or 0.0):
                    changes.append(self._change(row.id, record, now))
                else:
                    unsent.append(row)
            await self.store.apply(changes, now)
        return unsent

    async def _trigger(
        self, field: str, rows: Sequence[ledger.QueuedRow], report: TriggerReport
    ) -> bool:
        report.requests += 1
        await self.store.mark_sent([row.id for row in rows], self.clock())
        try:
            records = await self.client.trigger_batch(field, [row.entity_id for row in rows])
        except errors.LancePermanentError as exc:
            await self._reject(rows, exc)
            report.failed += len(rows)
            return True
        except errors.LanceError as exc:
            self._hold(exc)
            return False
        self.gate.succeed()
        now = self.clock()
        by_person = {
            record.get("entityId"): record
            for record in records
            if record.get("field", field) == field
        }
        changes = [self._change(row.id, by_person.get(row.entity_id), now) for row in rows]
        await self.store.apply(changes, now)
        report.triggered += len(rows)
        return True

    def _change(self, row_id: int, record: lance.Enrichment | None, now: float) -> ledger.Change:
        if record is None:
            # Not in the answer: poll for it; if Lance never shows a record it becomes `lost`.
            return ledger.Change(row_id, _PENDING, next_poll_at=now, from_queue=True)
        change = progress.interpret(row_id, record, 0.0, now, config=self.poll_config, rng=self.rng)
        return change._replace(from_queue=True)

    async def _reject(self, rows: Sequence[ledger.QueuedRow], exc: errors.LanceError) -> None:
        logger.error(
            "Lance rejected a trigger of %d rows: %s",
            len(rows),
            exc.message,
            extra={
                "event": "trigger.rejected",
                "status": exc.status,
                "enrichment_ids": [row.id for row in rows],
            },
        )
        reason = f"Lance rejected the trigger: {exc.message}"
        changes = [ledger.Change(row.id, _FAILED, error=reason) for row in rows]
        await self.store.apply(changes, self.clock())

    def _hold(self, exc: errors.LanceError) -> None:
        now = self.clock()
        if isinstance(exc, errors.LanceCreditsError):
            self.gate.hold(now, self.config.credits_backoff_seconds)
            self.hold_reason = "insufficient Lance credits"
        elif isinstance(exc, errors.LanceAuthError):
            self.gate.hold(now, pacing.GATE_MAX_DELAY_S)
            self.hold_reason = "Lance token rejected"
        else:
            self.gate.fail(now, exc.retry_after_s)
            self.hold_reason = "Lance unavailable"
        logger.warning(
            "trigger held (%s): %s",
            self.hold_reason,
            exc.message,
            extra={"event": "trigger.held", "status": exc.status},
        )


# Lance's clock and ours may differ a little; a record created this long before our trigger
# went out is still taken for its answer.
CLOCK_SKEW_S = 10.0


def _answers(record: lance.Enrichment, sent_at: float) -> bool:
    """Whether ``record`` was created by (or after) a trigger sent at ``sent_at``.

    An older record belongs to an earlier enrichment; if it is not reusable, a new trigger
    is needed. A record without a readable ``createdAt`` is taken as the answer: mistaking it
    costs a wrong answer, which Lance's own reuse makes unlikely, never a second charge.
    """
    try:
        created = datetime.datetime.fromisoformat(str(record.get("createdAt"))).timestamp()
    except ValueError:
        return True
    return created >= sent_at - CLOCK_SKEW_S

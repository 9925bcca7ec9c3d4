"""The delivery job: due outbox rows → connectors → per-item outcomes → ledger.

Retries follow a fixed schedule with jitter (DESIGN §8); throttling and timeouts wait at least
a minute; permanent failures and exhausted retries end ``dead`` with the reason, replayable.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

from bridge import batching, classify, connector, ledger, model, pacing
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)
# A delivery held back (to merge with its record's other results, or to fill a batch) is
# looked at again this much later.
HOLD_STEP_S = 0.5
# The states' plain string values, bound once: read for every row of the hot paths, where an
# enum attribute lookup (Python 3.11) or a str subclass bound as an SQL parameter (sqlite3
# adapts those one by one) would cost more than the string did.
_PENDING = model.DeliveryState.PENDING.value
_DELIVERED = model.DeliveryState.DELIVERED.value
_DEAD = model.DeliveryState.DEAD.value
# The outcome an attempt's new delivery state records (metrics label).
OUTCOMES = {_DELIVERED: "delivered", _PENDING: "retry", _DEAD: "dead"}
# Outcomes are written while the run goes on, once this many arrived (a transaction each): a
# run cut short keeps them, and a run of a thousand events costs ten commits, not a thousand.
RECORD_EVERY = 100
# A run keeps reading due deliveries while full batches come back, for at most this long: a
# backlog drains at the receivers' pace instead of one batch per tick, and the run still ends
# (drain and the next tick see a job that finishes). Other jobs run meanwhile on the loop.
RUN_BUDGET_S = 5.0


@dataclasses.dataclass(slots=True)
class DeliveryReport:
    """What one run did."""

    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0


class Dispatcher:
    """The delivery job. :meth:`run_once` attempts every due delivery once.

    Attributes:
        attempts: Recorded attempts by (connector, outcome, HTTP status): outcome ``delivered``,
            ``retry`` (scheduled again) or ``dead``; status ``"none"`` when no answer came.
    """

    def __init__(
        self,
        store: ledger.Ledger,
        connectors: Mapping[str, connector.Connector],
        config: settings_mod.DeliverySettings,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.connectors = connectors
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.attempts: collections.Counter[tuple[str, str, str]] = collections.Counter()

    async def run_once(self) -> DeliveryReport:
        """Send due deliveries, grouped by connector, and record every outcome.

        Batches of ``batch_size`` follow one another while full batches are due and something
        went out, within :data:`RUN_BUDGET_S`.
        """
        started = time.monotonic()
        total = DeliveryReport()
        while True:
            due, report = await self._round()
            total.attempted += report.attempted
            total.delivered += report.delivered
            total.retrying += report.retrying
            total.dead += report.dead
            more = due >= self.config.batch_size and report.attempted > 0
            if not more or time.monotonic() - started >= RUN_BUDGET_S:
                return total

    async def _round(self) -> tuple[int, DeliveryReport]:
        """One batch: how many were due, and what was done with them."""
        now = self.clock()
        due = await self.store.due_deliveries(now, self.config.batch_size)
        by_connector: dict[str, list[model.Delivery]] = {}
        for delivery in due:
            by_connector.setdefault(delivery.connector, []).append(delivery)
        held: list[int] = []
        for name, items in list(by_connector.items()):
            ready = await self._ready(name, items, now)
            going = {d.id for d in ready}
            held += [d.id for d in items if d.id not in going]
            if ready:
                by_connector[name] = ready
            else:
                del by_connector[name]
        if held:
            # Held rows step aside (they are the oldest due): the next run reads newer ones.
            await self.store.defer(held, now + HOLD_STEP_S)
        outcomes = _Outcomes(self.store, self.clock, self.attempts)
        try:
            await asyncio.gather(
                *(self._send(name, items, outcomes) for name, items in by_connector.items())
            )
            await outcomes.finish()
        except asyncio.CancelledError:
            # Drain cancelled the run: what the remotes acknowledged must not be sent again.
            await outcomes.save_before_exit()
            raise
        return len(due), _report(outcomes.recorded)

    async def _ready(
        self, name: str, items: list[model.Delivery], now: float
    ) -> list[model.Delivery]:
        """What goes now, for a connector that writes records in batches.

        - A record whose other enrichments are still in flight waits for them (up to
          ``merge_wait_seconds``), so one write carries all of its results: a contact's emails
          and phones finish moments apart and would otherwise cost two updates.
        - Completions trickle in; sending each run's few as a request of their own would cost
          a request per run instead of one per full batch. The partial batch (counted in
          records) waits until its oldest delivery is ``linger_seconds`` old.
        """
        target = self.connectors.get(name)
        linger = self.config.linger_seconds
        if target is None or target.max_batch <= 1:
            return items
        records: dict[tuple[str, str], list[model.Delivery]] = {}
        for delivery in items:
            records.setdefault((delivery.object_type, delivery.object_id), []).append(delivery)
        if target.needs_record and self.config.merge_wait_seconds > 0:
            young = [
                key
                for key, group in records.items()
                if now - min(d.created_at for d in group) < self.config.merge_wait_seconds
            ]
            for key in await self.store.records_in_flight(name, young) if young else ():
                del records[key]
        if linger <= 0:
            return [delivery for group in records.values() for delivery in group]
        groups = list(records.values())
        full = len(groups) // target.max_batch * target.max_batch
        rest = groups[full:]
        if rest and now - min(d.created_at for group in rest for d in group) < linger:
            groups = groups[:full]
        return [delivery for group in groups for delivery in group]

    async def _send(self, name: str, items: Sequence[model.Delivery], outcomes: _Outcomes) -> None:
        target = self.connectors.get(name)
        if target is None:
            reason = f"connector {name!r} is not configured"
            outcomes.add(name, [ledger.Attempt(d.id, _DEAD, None, reason, None) for d in items])
            return

        def received(indexes: Sequence[int], results: Sequence[classify.Outcome]) -> None:
            now = self.clock()
            attempts = [
                self._attempt(items[i], o, now) for i, o in zip(indexes, results, strict=True)
            ]
            outcomes.add(name, attempts)

        await target.send(items, on_outcomes=received)

    def _attempt(
        self, delivery: model.Delivery, outcome: classify.Outcome, now: float
    ) -> ledger.Attempt:
        if outcome.kind == "delivered":
            return ledger.Attempt(delivery.id, _DELIVERED, None, None, outcome.status)
        if outcome.kind == "retry":
            delay = pacing.retry_delay(
                delivery.attempts + 1,
                self.config.retry_schedule_seconds,
                self.config.jitter,
                self.rng,
                at_least_s=outcome.retry_after_s,
            )
            if delay is not None:
                return ledger.Attempt(
                    delivery.id, _PENDING, now + delay, outcome.error, outcome.status
                )
            error = f"retries exhausted after {delivery.attempts + 1} attempts: {outcome.error}"
        else:
            error = outcome.error or "permanent failure"
        logger.warning(
            "delivery dead: %s",
            error,
            extra={
                "event": "delivery.dead",
                "delivery_id": delivery.id,
                "connector": delivery.connector,
            },
        )
        return ledger.Attempt(delivery.id, _DEAD, None, error, outcome.status)


class _Outcomes:
    """The attempts of one run, written to the ledger as they arrive, in group commits.

    At most one write is in progress; outcomes arriving meanwhile wait for the next, so the
    ledger sees a few transactions per run however fast the answers come.

    Attributes:
        recorded: The attempts written so far.
    """

    def __init__(
        self,
        store: ledger.Ledger,
        clock: Callable[[], float],
        counts: collections.Counter[tuple[str, str, str]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._counts = counts
        self._waiting: list[tuple[str, ledger.Attempt]] = []
        self._writer: asyncio.Task[None] | None = None
        self._final = False  # set by finish(): from then on, write whatever waits
        self.recorded: list[ledger.Attempt] = []

    def add(self, name: str, attempts: Sequence[ledger.Attempt]) -> None:
        """Take the attempts of connector ``name``; start a write once enough wait."""
        self._waiting += [(name, attempt) for attempt in attempts]
        if len(self._waiting) >= RECORD_EVERY:
            self._start_writer()

    async def finish(self) -> None:
        """Write everything still waiting (raising what a write raised).

        Writes run in a task of their own: a caller cancelled meanwhile does not cut one
        short (its transaction would roll back, losing outcomes already taken from the queue).
        """
        self._final = True
        if self._waiting:
            self._start_writer()
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def save_before_exit(self) -> None:
        """:meth:`finish` for a run being cancelled: shielded, bounded, never raising."""
        unrecorded = f"outcomes of {len(self._waiting)} deliveries (to be sent again)"
        await batching.finish_within(self.finish(), unrecorded)

    def _start_writer(self) -> None:
        # A failed write stays for finish() to raise; no later write is started after it.
        task = self._writer
        if task is None or (task.done() and not task.cancelled() and not task.exception()):
            self._writer = asyncio.create_task(self._write_waiting())

    async def _write_waiting(self) -> None:
        while self._waiting and (self._final or len(self._waiting) >= RECORD_EVERY):
            await self._write()

    async def _write(self) -> None:
        batch, self._waiting = self._waiting, []
        attempts = [attempt for _, attempt in batch]
        await self._store.record_attempts(attempts, self._clock())
        self.recorded += attempts
        self._counts.update(
            (name, OUTCOMES[a.state], "none" if a.status is None else str(a.status))
            for name, a in batch
        )


def _report(attempts: Sequence[ledger.Attempt]) -> DeliveryReport:
    report = DeliveryReport(attempted=len(attempts))
    for attempt in attempts:
        if attempt.state == _DELIVERED:
            report.delivered += 1
        elif attempt.state == _DEAD:
            report.dead += 1
        else:
            report.retrying += 1
    return report

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
from collections.abc import Callable, Mapping, Sequence

from bridge import connector, ledger, outbox, pacing
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)
# A delivery held back (to merge with its record's other results, or to fill a batch) is
# looked at again this much later.
HOLD_STEP_S = 0.5
# The outcome an attempt's new delivery state records (metrics label).
OUTCOMES = {"delivered": "delivered", "pending": "retry", "dead": "dead"}


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
        """Send due deliveries, grouped by connector, and record every outcome."""
        now = self.clock()
        due = await self.store.due_deliveries(now, self.config.batch_size)
        by_connector: dict[str, list[outbox.Delivery]] = {}
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
        groups = await asyncio.gather(
            *(self._send(name, items) for name, items in by_connector.items())
        )
        attempts = [attempt for group in groups for attempt in group]
        await self.store.record_attempts(attempts, self.clock())
        for name, group in zip(by_connector, groups, strict=True):
            self.attempts.update(
                (name, OUTCOMES[a.state], "none" if a.status is None else str(a.status))
                for a in group
            )
        return _report(attempts)

    async def _ready(
        self, name: str, items: list[outbox.Delivery], now: float
    ) -> list[outbox.Delivery]:
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
        records: dict[tuple[str, str], list[outbox.Delivery]] = {}
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

    async def _send(self, name: str, items: Sequence[outbox.Delivery]) -> list[outbox.Attempt]:
        target = self.connectors.get(name)
        if target is None:
            reason = f"connector {name!r} is not configured"
            return [outbox.Attempt(d.id, "dead", None, reason, None) for d in items]
        events = [_event(d) for d in items]
        outcomes = await target.send(events)
        now = self.clock()
        return [self._attempt(d, o, now) for d, o in zip(items, outcomes, strict=True)]

    def _attempt(
        self, delivery: outbox.Delivery, outcome: connector.Outcome, now: float
    ) -> outbox.Attempt:
        if outcome.kind == "delivered":
            return outbox.Attempt(delivery.id, "delivered", None, None, outcome.status)
        if outcome.kind == "retry":
            delay = pacing.retry_delay(
                delivery.attempts + 1,
                self.config.retry_schedule_seconds,
                self.config.jitter,
                self.rng,
                at_least_s=outcome.retry_after_s,
            )
            if delay is not None:
                return outbox.Attempt(
                    delivery.id, "pending", now + delay, outcome.error, outcome.status
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
        return outbox.Attempt(delivery.id, "dead", None, error, outcome.status)


def _event(delivery: outbox.Delivery) -> connector.Event:
    return connector.Event(
        delivery_id=delivery.id,
        message_id=delivery.message_id,
        event_type=delivery.event_type,
        body=delivery.body,
        target=delivery.target(),
        attempt=delivery.attempts,
    )


def _report(attempts: Sequence[outbox.Attempt]) -> DeliveryReport:
    report = DeliveryReport(attempted=len(attempts))
    for attempt in attempts:
        if attempt.state == "delivered":
            report.delivered += 1
        elif attempt.state == "dead":
            report.dead += 1
        else:
            report.retrying += 1
    return report

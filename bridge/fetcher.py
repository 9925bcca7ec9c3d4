"""The fetch job: enrichments that finished with data → read the entity once → values + events.

Lance's enrichment records carry no values; a finished enrichment with ``dataFound: true`` has
added them to the person (emails, phones) or company (summary). Several finished fields of one
entity are served by a single read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from bridge import batching, errors, lance, ledger, outbox, pacing
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class FetchReport:
    """What one run did."""

    entities: int = 0
    stored: int = 0
    failed: int = 0


class Fetcher:
    """The fetch job. :meth:`run_once` reads each waiting entity once."""

    def __init__(
        self,
        store: ledger.Ledger,
        client: lance.LanceClient,
        config: settings_mod.FetchSettings,
        *,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.config = config
        self.clock = clock
        self.gate = pacing.Gate(rng)

    async def run_once(self) -> FetchReport:
        """Read the entities of up to ``batch_size`` waiting rows and store their values."""
        if not self.gate.is_open(self.clock()):
            return FetchReport()
        waiting = await self.store.awaiting_values(
            self.config.batch_size, hold_after=self.clock() - self.config.merge_wait_seconds
        )
        slots = asyncio.Semaphore(self.config.concurrency)
        values: list[tuple[int, dict[str, Any]]] = []

        async def read(entity: tuple[str, str], rows: Sequence[tuple[int, str]]) -> bool:
            found = await self._read(entity, rows, slots)
            values.extend(found or ())
            return found is not None

        try:
            results = await asyncio.gather(
                *(read(entity, rows) for entity, rows in waiting.items())
            )
        except asyncio.CancelledError:
            # Shutdown cancelled the run: keep the values already read rather than ask again.
            stored = self.store.store_values(values, self.clock())
            await batching.finish_within(stored, f"values read for {len(values)} enrichments")
            raise
        await self.store.store_values(values, self.clock())
        return FetchReport(entities=len(waiting), stored=len(values), failed=results.count(False))

    async def _read(
        self,
        entity: tuple[str, str],
        rows: Sequence[tuple[int, str]],
        slots: asyncio.Semaphore,
    ) -> list[tuple[int, dict[str, Any]]] | None:
        async with slots:
            if not self.gate.is_open(self.clock()):
                return None
            try:
                found = await self.client.entity(*entity)
            except errors.LanceError as exc:
                self.gate.fail(self.clock(), exc.retry_after_s)
                logger.warning(
                    "entity read failed: %s",
                    exc.message,
                    extra={
                        "event": "fetch.failed",
                        "entity_type": entity[0],
                        "entity_id": entity[1],
                        "status": exc.status,
                    },
                )
                return None
        self.gate.succeed()
        if found is None:
            logger.warning(
                "Lance has no %s %s; delivering without values",
                *entity,
                extra={"event": "fetch.missing", "entity_type": entity[0], "entity_id": entity[1]},
            )
        return [(row_id, outbox.values_of(field, found or {})) for row_id, field in rows]

"""The ``resolve`` job: reads the CRM records that inbound events named without properties.

Events that name a record without its properties (a HubSpot ``contact.creation``) wait in the
ledger as lookups; :meth:`Resolver.run_once` reads those records in batches through their
connector and accepts the tasks they ask for.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from bridge import connector, errors, ledger
from bridge import settings as settings_mod

# The logger name these lines have always carried, which operators' log filters match.
logger = logging.getLogger("bridge.inbound")
PRUNE_EVERY_S = 3600.0


@dataclasses.dataclass(slots=True)
class ResolveReport:
    """What one run did."""

    looked_up: int = 0
    accepted: int = 0
    skipped: int = 0
    pruned: int = 0
    matching: int = 0  # records without a Lance id, left to the match job


class Resolver:
    """The ``resolve`` job. :meth:`run_once` reads the records waiting lookups name."""

    def __init__(
        self,
        store: ledger.Ledger,
        connectors: Mapping[str, connector.Connector],
        config: settings_mod.InboundSettings,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.connectors = connectors
        self.config = config
        self.clock = clock
        self._pruned_at = float("-inf")

    async def run_once(self) -> ResolveReport:
        """Resolve up to ``lookup_batch_size`` waiting events per connector; prune old ones."""
        report = ResolveReport()
        for item in self.connectors.values():
            if item.hook_path is None:
                continue
            waiting = await self.store.lookups(item.name, self.config.lookup_batch_size)
            if waiting:
                await self._resolve(item, waiting, report)
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            report.pruned = await self.store.prune_inbound(
                now - self.config.retention_days * 86_400
            )
        return report

    async def _resolve(
        self,
        item: connector.Connector,
        waiting: Sequence[tuple[str, str, str]],
        report: ResolveReport,
    ) -> None:
        records = list(
            dict.fromkeys((object_type, object_id) for _, object_type, object_id in waiting)
        )
        try:
            found = await item.lookup(records)
        except (aiohttp.ClientError, TimeoutError, errors.BridgeError) as exc:
            logger.warning(
                "record lookup failed: %s",
                exc,
                extra={"event": "lookup.failed", "connector": item.name},
            )
            return
        resolved = []
        for key, object_type, object_id in waiting:
            answer = found.get((object_type, object_id))
            if answer is None:
                continue
            resolved.append(connector.inbound_of(key, answer, (object_type, object_id)))
        result = await self.store.resolve(item.name, resolved, self.clock())
        report.looked_up += len(records)
        report.accepted += len(result.accepted)
        report.skipped += result.skipped
        report.matching += result.matching

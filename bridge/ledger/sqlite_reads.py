"""The SQLite ledger's reads: the views the HTTP API, the CLI and the metrics show.

Each runs on the reader connection, which WAL lets run beside the writer: API reads never wait
for a write transaction.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Sequence
from typing import Any

from bridge import ledger, model, outbox
from bridge.ledger import sqlite_db

ENRICHMENT_COLUMNS = (
    "id, entity_type, entity_id, field, mode, state, lance_id, record, data_found, needs_fetch,"
    " enriched, error, polls, created_at, updated_at, finished_at"
)
DELIVERY_LIST_COLUMNS = (
    "id, enrichment_id, connector, object_type, object_id, event_type, message_id, state,"
    " attempts, next_attempt_at, last_error, response_status, created_at, updated_at"
)

# One statement, so every figure comes from the same snapshot of the ledger: counted in two
# statements, a commit in between (a state change with its deliveries) could show up in one
# count and not in the other and fake a broken invariant. Columns: kind, a, b, n.
_SNAPSHOT = """
SELECT 'state', state, '', count(*) FROM enrichments GROUP BY state
UNION ALL
SELECT 'awaiting', '', '', count(*) FROM enrichments WHERE needs_fetch = 1
UNION ALL
SELECT 'delivery', state, connector, count(*) FROM deliveries GROUP BY state, connector
UNION ALL
SELECT 'target', e.state, t.connector, count(*)
  FROM targets t CROSS JOIN enrichments e ON e.id = t.enrichment_id
  WHERE e.state NOT IN ('queued', 'pending') AND e.needs_fetch = 0
  GROUP BY e.state, t.connector
UNION ALL
SELECT 'first_in_flight', created_at, '', id FROM enrichments
  WHERE id = (SELECT min(id) FROM enrichments WHERE state IN ('queued', 'pending'))
UNION ALL
SELECT 'last_id', '', '', coalesce(max(id), 0) FROM enrichments
"""

_CHARGED = (
    "SELECT field, count(*) FROM enrichments WHERE id > ? AND id <= ?"
    " AND json_extract(record, '$.creditTransactionId') IS NOT NULL GROUP BY field"
)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else outbox.iso(ts)


def enrichment_json(row: Sequence[Any], targets: Iterable[model.Target] = ()) -> dict[str, Any]:
    """A row of :data:`ENRICHMENT_COLUMNS` in the API shape."""
    (
        row_id,
        etype,
        eid,
        field,
        mode,
        state,
        lance_id,
        record,
        found,
        needs_fetch,
        enriched,
        error,
        polls,
        created,
        updated,
        finished,
    ) = row
    return {
        "id": row_id,
        "entityType": etype,
        "entityId": eid,
        "field": field,
        "mode": mode,
        "state": state,
        "lanceId": lance_id,
        "dataFound": None if found is None else bool(found),
        "awaitingValues": bool(needs_fetch),
        "values": json.loads(enriched) if enriched else None,
        "error": error,
        "polls": polls,
        "record": json.loads(record) if record else None,
        "targets": [t.as_json() for t in targets],
        "createdAt": _iso(created),
        "updatedAt": _iso(updated),
        "finishedAt": _iso(finished),
    }


def delivery_json(row: Sequence[Any]) -> dict[str, Any]:
    """A row of :data:`DELIVERY_LIST_COLUMNS` in the API shape."""
    (
        row_id,
        enrichment_id,
        name,
        otype,
        oid,
        event_type,
        message_id,
        state,
        attempts,
        next_at,
        error,
        status,
        created,
        updated,
    ) = row
    return {
        "id": row_id,
        "enrichmentId": enrichment_id,
        "connector": name,
        "target": model.target_json(name, otype, oid),
        "eventType": event_type,
        "messageId": message_id,
        "state": state,
        "attempts": attempts,
        "nextAttemptAt": _iso(next_at),
        "lastError": error,
        "responseStatus": status,
        "createdAt": _iso(created),
        "updatedAt": _iso(updated),
    }


class Reads:
    """The read verbs of :class:`~bridge.ledger.sqlite.SQLiteLedger`, on the reader connection."""

    db: sqlite_db.Db

    async def enrichments(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Enrichments by id, with their targets."""
        if not ids:
            return {}
        id_list = json.dumps(sorted(set(ids)))
        rows = await self.db.fetch(
            f"SELECT {ENRICHMENT_COLUMNS} FROM enrichments"  # noqa: S608 - constant columns
            " WHERE id IN (SELECT value FROM json_each(?))",
            (id_list,),
        )
        targets = await self._targets(id_list)
        return {int(row[0]): enrichment_json(row, targets.get(int(row[0]), ())) for row in rows}

    async def _targets(self, id_list: str) -> dict[int, list[model.Target]]:
        found: dict[int, list[model.Target]] = {}
        for row in await self.db.fetch(
            "SELECT enrichment_id, connector, object_type, object_id FROM targets"
            " WHERE enrichment_id IN (SELECT value FROM json_each(?))",
            (id_list,),
        ):
            found.setdefault(int(row[0]), []).append(model.Target(row[1], row[2], row[3]))
        return found

    async def list_enrichments(
        self,
        *,
        state: str | None,
        after: int,
        limit: int,
        entity_id: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[dict[str, Any]]:
        """A page of enrichments in id order, starting after ``after``.

        ``created_after`` / ``created_before`` bound ``created_at`` (Unix seconds, inclusive).
        """
        clauses: list[str] = ["id > ?"]
        params: list[str | float] = [after]
        for clause, value in (
            ("state = ?", state),
            ("entity_id = ?", entity_id),
            ("created_at >= ?", created_after),
            ("created_at <= ?", created_before),
        ):
            if value is not None and value != "":
                clauses.append(clause)
                params.append(value)
        rows = await self.db.fetch(
            f"SELECT id FROM enrichments WHERE {' AND '.join(clauses)}"  # noqa: S608 - fixed clauses
            " ORDER BY id LIMIT ?",
            (*params, limit),
        )
        found = await self.enrichments([int(row[0]) for row in rows])
        return [found[int(row[0])] for row in rows]

    async def latest_for_keys(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], dict[str, Any]]:
        """The newest ledger row of each (entityType, entityId, field) that has one."""
        if not keys:
            return {}
        rows = await self.db.fetch(
            "SELECT max(e.id) FROM enrichments e JOIN json_each(?) k"
            " ON e.entity_type = json_extract(k.value, '$[0]')"
            " AND e.entity_id = json_extract(k.value, '$[1]')"
            " AND e.field = json_extract(k.value, '$[2]')"
            " GROUP BY e.entity_type, e.entity_id, e.field",
            (json.dumps([list(key) for key in keys]),),
        )
        found = await self.enrichments([int(row[0]) for row in rows])
        return {(e["entityType"], e["entityId"], e["field"]): e for e in found.values()}

    async def list_deliveries(
        self,
        *,
        state: str | None = None,
        connector: str | None = None,
        enrichment_id: int | None = None,
        after: int = 0,
        limit: int = 100,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> list[dict[str, Any]]:
        """A page of deliveries in id order, starting after ``after``.

        ``updated_after`` / ``updated_before`` bound ``updated_at`` (Unix seconds, inclusive): the
        last attempt or change, so for a dead delivery the time it died.
        """
        clauses: list[str] = ["id > ?"]
        params: list[str | float] = [after]
        for clause, value in (
            ("state = ?", state),
            ("connector = ?", connector),
            ("enrichment_id = ?", enrichment_id),
            ("updated_at >= ?", updated_after),
            ("updated_at <= ?", updated_before),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        rows = await self.db.fetch(
            f"SELECT {DELIVERY_LIST_COLUMNS} FROM deliveries"  # noqa: S608 - fixed clauses
            f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            (*params, limit),
        )
        return [delivery_json(row) for row in rows]

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery, or ``None``."""
        rows = await self.db.fetch(
            f"SELECT {DELIVERY_LIST_COLUMNS} FROM deliveries WHERE id = ?",  # noqa: S608
            (delivery_id,),
        )
        return delivery_json(rows[0]) if rows else None

    async def counts(self) -> dict[str, Any]:
        """Counts by state, the oldest in-flight age and the last poll, for ``status``."""
        rows = await self.db.fetch("SELECT state, count(*) FROM enrichments GROUP BY 1")
        by_state = {str(state): int(n) for state, n in rows}
        deliveries: dict[str, dict[str, int]] = {}
        for name, state, n in await self.db.fetch(
            "SELECT connector, state, count(*) FROM deliveries GROUP BY 1, 2"
        ):
            deliveries.setdefault(str(name), {})[str(state)] = int(n)
        oldest = await self.db.fetch(
            "SELECT min(created_at) FROM enrichments WHERE state IN ('queued', 'pending')"
        )
        return {
            "enrichments": by_state,
            "deliveries": deliveries,
            "oldestInFlightCreatedAt": oldest[0][0] if oldest else None,
            "lastPollAt": await self.get_meta("last_poll_at"),
            # Nothing queued, nothing held: a hold left by a process that stopped means nothing.
            "triggersHeld": (await self.get_meta("trigger_held") or None)
            if by_state.get(model.EnrichmentState.QUEUED)
            else None,
        }

    async def get_meta(self, key: str) -> str | None:
        """A value from the ``meta`` table."""
        rows = await self.db.fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def count_enrichments(self, state: model.EnrichmentState) -> int:
        """How many enrichments are in ``state`` (read from ``enrichments_by_state``)."""
        rows = await self.db.fetch(
            "SELECT count(*) FROM enrichments WHERE state = ?", (state.value,)
        )
        return int(rows[0][0])

    async def count_deliveries(self, state: model.DeliveryState) -> int:
        """How many deliveries are in ``state`` (read from ``deliveries_by_state``)."""
        rows = await self.db.fetch(
            "SELECT count(*) FROM deliveries WHERE state = ?", (state.value,)
        )
        return int(rows[0][0])

    async def snapshot(self) -> ledger.Snapshot:
        """The metrics' counts, from one statement (see :data:`_SNAPSHOT`)."""
        by_kind: dict[str, dict[tuple[str, str], int]] = collections.defaultdict(dict)
        first_in_flight: tuple[float, int] | None = None
        last_id = 0
        for kind, a, b, n in await self.db.fetch(_SNAPSHOT):
            if kind == "first_in_flight":
                first_in_flight = (float(a), int(n))
            elif kind == "last_id":
                last_id = int(n)
            else:
                by_kind[kind][str(a), str(b)] = int(n)
        return ledger.Snapshot(
            states={state: n for (state, _), n in by_kind["state"].items()},
            awaiting=sum(by_kind["awaiting"].values()),
            deliveries={(name, state): n for (state, name), n in by_kind["delivery"].items()},
            targets=by_kind["target"],
            first_in_flight=first_in_flight,
            last_id=last_id,
        )

    async def charged(self, after: int, upto: int) -> dict[str, int]:
        """Rows with ids in (after, upto] whose record carries a ``creditTransactionId``."""
        rows = await self.db.fetch(_CHARGED, (after, upto))
        return {str(field): int(n) for field, n in rows}

    async def inbound_counts(self) -> dict[tuple[str, str], int]:
        """Inbound events kept, by (source, state)."""
        rows = await self.db.fetch("SELECT source, state, count(*) FROM inbound GROUP BY 1, 2")
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    async def progress(self) -> ledger.Progress:
        """Ended enrichments whose events are written, acknowledged and other deliveries."""
        terminal = await self.db.fetch(
            "SELECT count(*) FROM enrichments WHERE state NOT IN ('queued', 'pending')"
            " AND needs_fetch = 0"
        )
        deliveries = await self.db.fetch(
            "SELECT count(*) FILTER (WHERE state = 'delivered'),"
            " count(*) FILTER (WHERE state != 'delivered') FROM deliveries"
        )
        return ledger.Progress(int(terminal[0][0]), int(deliveries[0][0]), int(deliveries[0][1]))

"""The PostgreSQL ledger's reads: the views the HTTP API, the CLI and the metrics show.

The API shapes are the SQLite backend's own (:func:`~bridge.ledger.sqlite_reads.enrichment_json`
and :func:`~bridge.ledger.sqlite_reads.delivery_json`), so both backends answer alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from bridge import ledger, model
from bridge.ledger import postgres_db
from bridge.ledger.sqlite_reads import (
    DELIVERY_LIST_COLUMNS,
    ENRICHMENT_COLUMNS,
    delivery_json,
    enrichment_json,
)


class Reads:
    """The read verbs of :class:`~bridge.ledger.postgres.PostgresLedger`."""

    db: postgres_db.Db

    async def enrichments(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Enrichments by id, with their targets."""
        if not ids:
            return {}
        wanted = sorted(set(ids))
        rows = await self.db.fetch(
            f"SELECT {ENRICHMENT_COLUMNS} FROM enrichments WHERE id = ANY(%s)",  # noqa: S608
            (wanted,),
        )
        targets: dict[int, list[model.Target]] = {}
        for row in await self.db.fetch(
            "SELECT enrichment_id, connector, object_type, object_id FROM targets"
            " WHERE enrichment_id = ANY(%s) ORDER BY 1, 2, 3, 4",
            (wanted,),
        ):
            targets.setdefault(int(row[0]), []).append(model.Target(row[1], row[2], row[3]))
        return {int(row[0]): enrichment_json(row, targets.get(int(row[0]), ())) for row in rows}

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
        """A page of enrichments in id order, starting after ``after``."""
        clauses = ["id > %s"]
        params: list[Any] = [after]
        for clause, value in (
            ("state = %s", state),
            ("entity_id = %s", entity_id),
            ("created_at >= %s", created_after),
            ("created_at <= %s", created_before),
        ):
            if value is not None and value != "":
                clauses.append(clause)
                params.append(value)
        rows = await self.db.fetch(
            f"SELECT id FROM enrichments WHERE {' AND '.join(clauses)}"  # noqa: S608
            " ORDER BY id LIMIT %s",
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
            "SELECT max(e.id) FROM enrichments e"
            " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k (entity_type, entity_id, field)"
            " USING (entity_type, entity_id, field) GROUP BY e.entity_type, e.entity_id, e.field",
            [list(column) for column in zip(*keys, strict=True)],
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
        """A page of deliveries in id order, starting after ``after``."""
        clauses = ["id > %s"]
        params: list[Any] = [after]
        for clause, value in (
            ("state = %s", state),
            ("connector = %s", connector),
            ("enrichment_id = %s", enrichment_id),
            ("updated_at >= %s", updated_after),
            ("updated_at <= %s", updated_before),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        rows = await self.db.fetch(
            f"SELECT {DELIVERY_LIST_COLUMNS} FROM deliveries"  # noqa: S608 - fixed clauses
            f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [delivery_json(row) for row in rows]

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery, or ``None``."""
        rows = await self.db.fetch(
            f"SELECT {DELIVERY_LIST_COLUMNS} FROM deliveries WHERE id = %s",  # noqa: S608
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
            "triggersHeld": (await self.get_meta("trigger_held") or None)
            if by_state.get(model.EnrichmentState.QUEUED)
            else None,
        }

    async def get_meta(self, key: str) -> str | None:
        """A value from the ``meta`` table."""
        rows = await self.db.fetch("SELECT value FROM meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    async def snapshot(self) -> ledger.Snapshot:
        """The metrics' counts, from one REPEATABLE READ transaction (one snapshot)."""
        async with self.db.transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            states = await _all(conn, "SELECT state, count(*) FROM enrichments GROUP BY 1")
            awaiting = await _all(conn, "SELECT count(*) FROM enrichments WHERE needs_fetch = 1")
            deliveries = await _all(
                conn, "SELECT connector, state, count(*) FROM deliveries GROUP BY 1, 2"
            )
            targets = await _all(
                conn,
                "SELECT e.state, t.connector, count(*) FROM targets t"
                " JOIN enrichments e ON e.id = t.enrichment_id"
                " WHERE e.state NOT IN ('queued', 'pending') AND e.needs_fetch = 0 GROUP BY 1, 2",
            )
            first = await _all(
                conn,
                "SELECT created_at, id FROM enrichments WHERE state IN ('queued', 'pending')"
                " ORDER BY id LIMIT 1",
            )
            last = await _all(conn, "SELECT coalesce(max(id), 0) FROM enrichments")
        return ledger.Snapshot(
            states={str(s): int(n) for s, n in states},
            awaiting=int(awaiting[0][0]),
            deliveries={(str(c), str(s)): int(n) for c, s, n in deliveries},
            targets={(str(s), str(c)): int(n) for s, c, n in targets},
            first_in_flight=(float(first[0][0]), int(first[0][1])) if first else None,
            last_id=int(last[0][0]),
        )

    async def charged(self, after: int, upto: int) -> dict[str, int]:
        """Rows with ids in (after, upto] whose record carries a ``creditTransactionId``."""
        rows = await self.db.fetch(
            "SELECT field, count(*) FROM enrichments WHERE id > %s AND id <= %s"
            " AND record::jsonb ->> 'creditTransactionId' IS NOT NULL GROUP BY field",
            (after, upto),
        )
        return {str(field): int(n) for field, n in rows}

    async def inbound_counts(self) -> dict[tuple[str, str], int]:
        """Inbound events kept, by (source, state)."""
        rows = await self.db.fetch("SELECT source, state, count(*) FROM inbound GROUP BY 1, 2")
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    async def count_enrichments(self, state: model.EnrichmentState) -> int:
        """How many enrichments are in ``state``."""
        rows = await self.db.fetch(
            "SELECT count(*) FROM enrichments WHERE state = %s", (state.value,)
        )
        return int(rows[0][0])

    async def count_deliveries(self, state: model.DeliveryState) -> int:
        """How many deliveries are in ``state``."""
        rows = await self.db.fetch(
            "SELECT count(*) FROM deliveries WHERE state = %s", (state.value,)
        )
        return int(rows[0][0])

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


async def _all(conn: psycopg.AsyncConnection[Any], sql: str) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql)
    return await cursor.fetchall()

"""The PostgreSQL ledger's reads: the views the HTTP API, the CLI and the metrics show.

The API shapes and the reads whose SQL is the same in both backends are
:mod:`bridge.ledger.reads`; these are the ones PostgreSQL answers its own way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from bridge import ledger, model
from bridge.ledger import postgres_db, reads


class Reads(reads.Reads):
    """The read verbs of :class:`~bridge.ledger.postgres.PostgresLedger`."""

    PARAM = "%s"
    MINUTE = "floor({} / 60)::bigint"
    db: postgres_db.Db

    async def enrichments(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Enrichments by id, with their targets."""
        if not ids:
            return {}
        wanted = sorted(set(ids))
        rows = await self.db.fetch(
            f"SELECT {reads.ENRICHMENT_COLUMNS} FROM enrichments WHERE id = ANY(%s)",  # noqa: S608
            (wanted,),
        )
        targets: dict[int, list[model.Target]] = {}
        for row in await self.db.fetch(
            "SELECT enrichment_id, connector, object_type, object_id FROM targets"
            " WHERE enrichment_id = ANY(%s) ORDER BY 1, 2, 3, 4",
            (wanted,),
        ):
            targets.setdefault(int(row[0]), []).append(model.Target(row[1], row[2], row[3]))
        return {
            int(row[0]): reads.enrichment_json(row, targets.get(int(row[0]), ())) for row in rows
        }

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


async def _all(conn: psycopg.AsyncConnection[Any], sql: str) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql)
    return await cursor.fetchall()

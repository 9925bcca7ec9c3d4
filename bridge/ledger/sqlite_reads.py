"""The SQLite ledger's reads: the views the HTTP API, the CLI and the metrics show.

Each runs on the reader connection, which WAL lets run beside the writer: API reads never wait
for a write transaction.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Sequence
from typing import Any

from bridge import ledger, model
from bridge.ledger import reads, sqlite_db

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


# A creation-time range with at most this many rows is read through its index (and its ids
# sorted); a wider one walks the ids in order, where matches are dense.
CREATED_PROBE_ROWS = 20_000


class Reads(reads.Reads):
    """The read verbs of :class:`~bridge.ledger.sqlite.SQLiteLedger`, on the reader connection."""

    PARAM = "?"
    MINUTE = "CAST({} / 60 AS INTEGER)"
    db: sqlite_db.Db

    async def enrichments(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Enrichments by id, with their targets."""
        if not ids:
            return {}
        id_list = json.dumps(sorted(set(ids)))
        rows = await self.db.fetch(
            f"SELECT {reads.ENRICHMENT_COLUMNS} FROM enrichments"  # noqa: S608 - constant columns
            " WHERE id IN (SELECT value FROM json_each(?))",
            (id_list,),
        )
        targets = await self._targets(id_list)
        return {
            int(row[0]): reads.enrichment_json(row, targets.get(int(row[0]), ())) for row in rows
        }

    async def _targets(self, id_list: str) -> dict[int, list[model.Target]]:
        found: dict[int, list[model.Target]] = {}
        for row in await self.db.fetch(
            "SELECT enrichment_id, connector, object_type, object_id FROM targets"
            " WHERE enrichment_id IN (SELECT value FROM json_each(?))",
            (id_list,),
        ):
            found.setdefault(int(row[0]), []).append(model.Target(row[1], row[2], row[3]))
        return found

    async def _created_plan(self, after: float | None, before: float | None) -> tuple[str, str]:
        """The plan SQLite lacks the statistics to choose for a creation-time filter.

        A narrow range (few rows, wherever they are) is read through ``enrichments_by_created``
        and sorted; a wide one by walking the ids with the range as a plain filter (``+``), so
        the first page comes at once instead of after sorting every match. Counting up to
        :data:`CREATED_PROBE_ROWS` index entries decides which.
        """
        if after is None and before is None:
            return "", "created_at"
        rows = await self.db.fetch(
            "SELECT count(*) FROM (SELECT 1 FROM enrichments WHERE created_at >= ?"
            " AND created_at <= ? LIMIT ?)",
            (
                -math.inf if after is None else after,
                math.inf if before is None else before,
                CREATED_PROBE_ROWS + 1,
            ),
        )
        if int(rows[0][0]) <= CREATED_PROBE_ROWS:
            return "INDEXED BY enrichments_by_created", "created_at"
        return "", "+created_at"

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

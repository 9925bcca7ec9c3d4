"""The SQLite ledger's matching verbs: events waiting for a person search, the match table
and the write-backs of found ids (DESIGN §12)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiosqlite

from bridge import ledger, model
from bridge.ledger import match_rows, sqlite_db, sqlite_reads, sqlite_rows

_MATCHED = model.InboundState.MATCHED.value


class Matching(sqlite_reads.Reads):
    """The matching verbs of :class:`~bridge.ledger.sqlite.SQLiteLedger`."""

    db: sqlite_db.Db

    async def waiting_matches(self, now: float, limit: int) -> list[ledger.Waiting]:
        """Events waiting for a person search whose attempt is due, oldest first."""
        rows = await self.db.fetch(
            "SELECT source, key, match_key, request, attempts FROM inbound"
            " WHERE state = 'matching' AND (attempt_at IS NULL OR attempt_at <= ?)"
            " ORDER BY received_at LIMIT ?",
            (now, limit),
            writer=True,
        )
        return match_rows.waiting(rows)

    async def settle_matches(
        self, settled: Sequence[tuple[ledger.Waiting, ledger.Found]], now: float
    ) -> model.Received:
        """Record what the searches found, with the tasks and write-backs, in one transaction."""
        if not settled:
            return model.Received()
        async with self.db.transaction() as db:
            await _cache(db, [found for _, found in settled], now)
            await db.executemany(
                "UPDATE inbound SET detail = ?, attempts = attempts + 1, attempt_at = ?,"
                " updated_at = ? WHERE source = ? AND key = ? AND state = 'matching'",
                [
                    (found.reason, found.retry_at, now, event.source, event.key)
                    for event, found in settled
                    if found.outcome == match_rows.RETRY
                ],
            )
            done = [(event, found) for event, found in settled if found.outcome != match_rows.RETRY]
            await db.executemany(
                "UPDATE inbound SET state = ?, detail = ?, entity_id = ?, candidates = ?,"
                " attempts = attempts + 1, attempt_at = NULL, updated_at = ?"
                " WHERE source = ? AND key = ? AND state = 'matching'",
                [
                    (
                        found.outcome,
                        found.reason,
                        found.entity_id,
                        json.dumps(list(found.candidates)),
                        now,
                        event.source,
                        event.key,
                    )
                    for event, found in done
                ],
            )
            matched = [(e, f.entity_id) for e, f in done if f.outcome == _MATCHED and f.entity_id]
            accepted = await sqlite_rows.accept_in(
                db, [(event.match.tasks(entity_id), now) for event, entity_id in matched]
            )
            await db.executemany(
                "INSERT OR IGNORE INTO write_backs (source, object_type, object_id, entity_id,"
                " state, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                [
                    (*record, entity_id, now, now, now)
                    for record, entity_id in match_rows.write_backs_of(matched).items()
                ],
            )
        return model.Received(
            events=len(done), accepted=tuple(row for rows in accepted for row in rows)
        )

    async def due_write_backs(self, now: float, limit: int) -> list[ledger.WriteBack]:
        """Write-backs whose next attempt has come, oldest first."""
        rows = await self.db.fetch(
            "SELECT source, object_type, object_id, entity_id, attempts FROM write_backs"
            " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
            writer=True,
        )
        return [ledger.WriteBack(*row) for row in rows]

    async def record_write_backs(
        self, results: Sequence[ledger.WriteBackResult], now: float
    ) -> None:
        """Write the outcomes of one round of write-backs in one transaction."""
        if not results:
            return
        async with self.db.transaction() as db:
            await db.executemany(
                "UPDATE write_backs SET state = ?, attempts = attempts + 1, error = ?,"
                " next_attempt_at = coalesce(?, next_attempt_at), updated_at = ?"
                " WHERE source = ? AND object_type = ? AND object_id = ? AND state = 'pending'",
                [
                    (
                        match_rows.write_back_state(r.state),
                        r.error,
                        r.next_attempt_at,
                        now,
                        *r.item[:3],
                    )
                    for r in results
                ],
            )


async def _cache(db: aiosqlite.Connection, found: Sequence[ledger.Found], now: float) -> None:
    await db.executemany(
        "INSERT OR REPLACE INTO matches"
        " (key, outcome, entity_id, candidates, reason, searched_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(*row, now) for row in match_rows.cacheable(found)],
    )

"""The PostgreSQL ledger's matching verbs: events waiting for a person search, the match
table and the write-backs of found ids (DESIGN §12).

Waiting events and write-backs are claimed like the other jobs' rows (``FOR UPDATE SKIP
LOCKED`` and a lease), so two replicas never search for the same event or write the same id;
a settlement for an event another replica has claimed since is refused (fenced).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from bridge import ledger, model
from bridge.ledger import match_rows, postgres_db, postgres_reads, postgres_rows

_MATCHED = model.InboundState.MATCHED.value


class Matching(postgres_reads.Reads):
    """The matching verbs of :class:`~bridge.ledger.postgres.PostgresLedger`."""

    db: postgres_db.Db
    replica: str
    lease_s: float

    async def waiting_matches(self, now: float, limit: int) -> list[ledger.Waiting]:
        """Claim events waiting for a person search whose attempt is due, oldest first."""
        rows = await self.db.fetch(
            "WITH due AS (SELECT source, key FROM inbound WHERE state = 'matching'"
            " AND (attempt_at IS NULL OR attempt_at <= %(now)s)"
            " AND (claimed_by IS NULL OR claimed_by = %(me)s OR claim_expires_at <= %(now)s)"
            " ORDER BY received_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " UPDATE inbound i SET claimed_by = %(me)s, claim_expires_at = %(until)s"
            " FROM due WHERE i.source = due.source AND i.key = due.key"
            " RETURNING i.source, i.key, i.match_key, i.request, i.attempts, i.received_at",
            {"now": now, "me": self.replica, "limit": limit, "until": now + self.lease_s},
        )
        rows.sort(key=lambda r: (r[5], r[0], r[1]))
        return match_rows.waiting(rows)

    async def settle_matches(
        self, settled: Sequence[tuple[ledger.Waiting, ledger.Found]], now: float
    ) -> model.Received:
        """Record what the searches found, with the tasks and write-backs, in one transaction."""
        if not settled:
            return model.Received()
        async with self.db.transaction() as conn:
            await _cache(conn, [found for _, found in settled], now)
            retry = [(e, f) for e, f in settled if f.outcome == match_rows.RETRY]
            if retry:
                await conn.execute(
                    "UPDATE inbound i SET detail = r.detail, attempts = i.attempts + 1,"
                    " attempt_at = r.at, updated_at = %(now)s, claimed_by = NULL,"
                    " claim_expires_at = NULL FROM unnest(%(sources)s::text[], %(keys)s::text[],"
                    " %(details)s::text[], %(at)s::float8[]) AS r (source, key, detail, at)"
                    " WHERE i.source = r.source AND i.key = r.key AND i.state = 'matching'"
                    " AND (i.claimed_by IS NULL OR i.claimed_by = %(me)s)",
                    {
                        "now": now,
                        "me": self.replica,
                        "sources": [e.source for e, _ in retry],
                        "keys": [e.key for e, _ in retry],
                        "details": [f.reason for _, f in retry],
                        "at": [f.retry_at for _, f in retry],
                    },
                )
            done = [(e, f) for e, f in settled if f.outcome != match_rows.RETRY]
            kept: set[tuple[str, str]] = set()
            if done:
                cursor = await conn.execute(
                    "UPDATE inbound i SET state = r.state, detail = r.detail,"
                    " entity_id = r.entity_id, candidates = r.candidates,"
                    " attempts = i.attempts + 1, attempt_at = NULL, updated_at = %(now)s,"
                    " claimed_by = NULL, claim_expires_at = NULL"
                    " FROM unnest(%(sources)s::text[], %(keys)s::text[], %(states)s::text[],"
                    " %(details)s::text[], %(ids)s::text[], %(candidates)s::text[])"
                    " AS r (source, key, state, detail, entity_id, candidates)"
                    " WHERE i.source = r.source AND i.key = r.key AND i.state = 'matching'"
                    " AND (i.claimed_by IS NULL OR i.claimed_by = %(me)s)"
                    " RETURNING i.source, i.key",
                    {
                        "now": now,
                        "me": self.replica,
                        "sources": [e.source for e, _ in done],
                        "keys": [e.key for e, _ in done],
                        "states": [f.outcome for _, f in done],
                        "details": [f.reason for _, f in done],
                        "ids": [f.entity_id for _, f in done],
                        "candidates": [json.dumps(list(f.candidates)) for _, f in done],
                    },
                )
                kept = {(str(r[0]), str(r[1])) for r in await cursor.fetchall()}
            matched = [
                (e, f.entity_id)
                for e, f in done
                if f.outcome == _MATCHED and f.entity_id and (e.source, e.key) in kept
            ]
            accepted = await postgres_rows.accept_in(
                conn, [(event.match.tasks(entity_id), now) for event, entity_id in matched]
            )
            writes = match_rows.write_backs_of(matched)
            if writes:
                await conn.execute(
                    "INSERT INTO write_backs (source, object_type, object_id, entity_id, state,"
                    " next_attempt_at, created_at, updated_at)"
                    " SELECT w.source, w.object_type, w.object_id, w.entity_id, 'pending',"
                    " %(now)s, %(now)s, %(now)s FROM unnest(%(sources)s::text[],"
                    " %(types)s::text[], %(ids)s::text[], %(entities)s::text[])"
                    " AS w (source, object_type, object_id, entity_id)"
                    " ON CONFLICT (source, object_type, object_id) DO NOTHING",
                    {
                        "now": now,
                        "sources": [r[0] for r in writes],
                        "types": [r[1] for r in writes],
                        "ids": [r[2] for r in writes],
                        "entities": list(writes.values()),
                    },
                )
        return model.Received(
            events=len(kept), accepted=tuple(row for rows in accepted for row in rows)
        )

    async def due_write_backs(self, now: float, limit: int) -> list[ledger.WriteBack]:
        """Claim write-backs whose next attempt has come, oldest first."""
        rows = await self.db.fetch(
            "WITH due AS (SELECT source, object_type, object_id FROM write_backs"
            " WHERE state = 'pending' AND next_attempt_at <= %(now)s"
            " AND (claimed_by IS NULL OR claimed_by = %(me)s OR claim_expires_at <= %(now)s)"
            " ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " UPDATE write_backs w SET claimed_by = %(me)s, claim_expires_at = %(until)s"
            " FROM due WHERE w.source = due.source AND w.object_type = due.object_type"
            " AND w.object_id = due.object_id"
            " RETURNING w.source, w.object_type, w.object_id, w.entity_id, w.attempts,"
            " w.next_attempt_at",
            {"now": now, "me": self.replica, "limit": limit, "until": now + self.lease_s},
        )
        rows.sort(key=lambda r: (r[5], r[0], r[1], r[2]))
        return [ledger.WriteBack(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def record_write_backs(
        self, results: Sequence[ledger.WriteBackResult], now: float
    ) -> None:
        """Write the outcomes of one round of write-backs in one transaction (fenced)."""
        if not results:
            return
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE write_backs w SET state = r.state, attempts = w.attempts + 1,"
                " error = r.error, next_attempt_at = coalesce(r.next_at, w.next_attempt_at),"
                " updated_at = %(now)s, claimed_by = NULL, claim_expires_at = NULL"
                " FROM unnest(%(sources)s::text[], %(types)s::text[], %(ids)s::text[],"
                " %(states)s::text[], %(errors)s::text[], %(next)s::float8[])"
                " AS r (source, object_type, object_id, state, error, next_at)"
                " WHERE w.source = r.source AND w.object_type = r.object_type"
                " AND w.object_id = r.object_id AND w.state = 'pending'"
                " AND (w.claimed_by IS NULL OR w.claimed_by = %(me)s)",
                {
                    "now": now,
                    "me": self.replica,
                    "sources": [r.item.source for r in results],
                    "types": [r.item.object_type for r in results],
                    "ids": [r.item.object_id for r in results],
                    "states": [match_rows.write_back_state(r.state) for r in results],
                    "errors": [r.error for r in results],
                    "next": [r.next_attempt_at for r in results],
                },
            )


async def _cache(conn: postgres_rows.Conn, found: Sequence[ledger.Found], now: float) -> None:
    rows = match_rows.cacheable(found)
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        "INSERT INTO matches (key, outcome, entity_id, candidates, reason, searched_at)"
        " SELECT k, o, e, c, r, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::text[]) AS m (k, o, e, c, r) ON CONFLICT (key) DO UPDATE"
        " SET outcome = excluded.outcome, entity_id = excluded.entity_id,"
        " candidates = excluded.candidates, reason = excluded.reason,"
        " searched_at = excluded.searched_at",
        (now, *[list(c) for c in columns]),
    )

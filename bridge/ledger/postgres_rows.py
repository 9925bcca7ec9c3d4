"""The SQL of the PostgreSQL ledger's batch writes: accepting tasks, inbound events, outbox rows.

Every batch is one statement over ``unnest`` arrays (one round trip, whatever its size), and
every uniqueness the ledger promises is the database's own: the partial unique index on
in-flight rows, the inbound primary key, the one-delivery-per-target constraint. So replicas
writing at once cannot break them. Each function runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from bridge import ledger, model, outbox
from bridge.ledger import accepts, events

_QUEUED = model.EnrichmentState.QUEUED.value
_PENDING = model.EnrichmentState.PENDING.value
_FINISHED = model.EnrichmentState.FINISHED.value

Conn = psycopg.AsyncConnection[Any]

_INSERT_NEW = (
    "INSERT INTO enrichments (entity_type, entity_id, field, mode, state, created_at,"
    " updated_at, started_at, next_poll_at)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::float8[], %b::float8[], %b::float8[], %b::float8[])"
    " ON CONFLICT (entity_type, entity_id, field) WHERE state IN ('queued', 'pending')"
    " DO NOTHING RETURNING id, entity_type, entity_id, field, state, mode"
)
_IN_FLIGHT = (
    "SELECT e.id, e.entity_type, e.entity_id, e.field, e.state, e.mode FROM enrichments e"
    " JOIN unnest(%b::text[], %b::text[], %b::text[]) AS k (entity_type, entity_id, field)"
    " USING (entity_type, entity_id, field) WHERE e.state IN ('queued', 'pending')"
)


def _new_row(task: model.Task, now: float) -> tuple[Any, ...]:
    if task.mode == "track":
        return (*task.key, "track", _PENDING, now, now, now, now)
    return (*task.key, "trigger", _QUEUED, now, now, None, None)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows turned into one list per column: the arrays ``unnest`` takes."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


async def _rows(conn: Conn, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall()


async def accept_in(
    conn: Conn, groups: Sequence[tuple[Sequence[model.Task], float]]
) -> list[list[model.Accepted]]:
    """Accept each group's tasks inside the caller's transaction."""
    new_rows: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for tasks, now in groups:
        for task in tasks:
            new_rows.setdefault(task.key, _new_row(task, now))
    if not new_rows:
        return [[] for _ in groups]
    returned = await _rows(conn, _INSERT_NEW, _columns(list(new_rows.values()), 9))
    ids = {(r[1], r[2], r[3]): (int(r[0]), str(r[4]), str(r[5])) for r in returned}
    created = {row_id for row_id, _, _ in ids.values()}
    attached = [key for key in new_rows if key not in ids]
    if attached:
        # A conflict waited for the other transaction's commit; this statement now sees it.
        found = await _rows(conn, _IN_FLIGHT, _columns(attached, 3))
        ids.update({(r[1], r[2], r[3]): (int(r[0]), str(r[4]), str(r[5])) for r in found})
    targets = accepts.target_rows(groups, ids)
    if targets:
        await conn.execute(
            "INSERT INTO targets SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[],"
            " %b::text[]) ON CONFLICT DO NOTHING",
            _columns(sorted(set(targets)), 4),
        )
    return accepts.answers(groups, ids, created)


async def insert_inbound(
    conn: Conn, source: str, events: Sequence[model.Inbound], now: float
) -> set[str]:
    """Insert events not seen before (the primary key decides); returns the new keys."""
    if not events:
        return set()
    rows = [
        (source, e.key, e.state, *(e.lookup or e.record), e.detail, now, now, *e.match_columns)
        for e in events
    ]
    returned = await _rows(
        conn,
        "INSERT INTO inbound (source, key, state, object_type, object_id, detail, received_at,"
        " updated_at, match_key, request) SELECT * FROM unnest(%b::text[], %b::text[],"
        " %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::float8[],"
        " %b::text[], %b::text[])"
        " ON CONFLICT (source, key) DO NOTHING RETURNING key",
        _columns(rows, 10),
    )
    return {str(row[0]) for row in returned}


async def emit(conn: Conn, router: outbox.Router, ready: Sequence[tuple[int, float]]) -> int:
    """Write the deliveries caused by terminal enrichments; returns how many."""
    if not ready:
        return 0
    when = dict(ready)
    ids = list(when)
    rows = await _rows(
        conn,
        "SELECT id, entity_type, entity_id, field, state, record, enriched, error"
        " FROM enrichments WHERE id = ANY(%s)",
        (ids,),
    )
    return await emit_rows(conn, router, rows, when)


async def emit_rows(
    conn: Conn, router: outbox.Router, rows: Sequence[Sequence[Any]], when: dict[int, float]
) -> int:
    """:func:`emit` of rows already read, as an UPDATE returned them: (id, entity_type,
    entity_id, field, state, record, enriched, error) of each, and when each changed."""
    if not rows:
        return 0
    ids = [int(row[0]) for row in rows]
    named: dict[int, list[tuple[str, str, str]]] = {}
    for row in await _rows(
        conn,
        "SELECT enrichment_id, connector, object_type, object_id FROM targets"
        " WHERE enrichment_id = ANY(%s)",
        (ids,),
    ):
        named.setdefault(int(row[0]), []).append((row[1], row[2], row[3]))
    new = events.delivery_rows(rows, named, when, router)
    if new:
        await conn.execute(
            "INSERT INTO deliveries (enrichment_id, connector, object_type, object_id,"
            " event_type, message_id, body, next_attempt_at, created_at, updated_at, state)"
            " SELECT *, 'pending' FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[],"
            " %b::text[], %b::text[], %b::bytea[], %b::float8[], %b::float8[], %b::float8[])"
            " ON CONFLICT DO NOTHING",
            _columns(new, 10),
        )
    return len(new)


# -- state changes and delivery rows (the poll, trigger and delivery jobs) ---------------


def needs_fetch(change: ledger.Change) -> bool:
    return change.state == _FINISHED and bool((change.record or {}).get("dataFound"))


# Rows staying pending, or leaving `queued` for it. A change to a row another replica has
# claimed since is refused (the fence: the claim's holder, or anyone once nobody holds it).
_PENDING_UPDATE = (
    "UPDATE enrichments e SET state = 'pending', record = coalesce(c.record, e.record),"
    " lance_id = coalesce(c.lance_id, e.lance_id), next_poll_at = c.next_at,"
    " polls = e.polls + 1, updated_at = c.now,"
    " started_at = coalesce(e.started_at, c.now), claimed_by = NULL,"
    " claim_expires_at = NULL"
    " FROM unnest(%(ids)b::bigint[], %(records)b::text[], %(lance)b::text[],"
    " %(next)b::float8[], %(now)b::float8[]) AS c (id, record, lance_id, next_at, now)"
    " WHERE e.id = c.id AND (e.claimed_by IS NULL OR e.claimed_by = %(me)s)"
)
STILL_PENDING = _PENDING_UPDATE + " AND e.state = 'pending'"
TO_PENDING = _PENDING_UPDATE + " AND e.state = 'queued'"


TO_TERMINAL = (
    "UPDATE enrichments e SET state = c.state, record = coalesce(c.record, e.record),"
    " lance_id = coalesce(c.lance_id, e.lance_id), data_found = coalesce(c.found, e.data_found),"
    " error = coalesce(c.error, e.error), needs_fetch = c.needs_fetch, next_poll_at = NULL,"
    " polls = e.polls + 1, updated_at = c.now, finished_at = c.now,"
    " started_at = coalesce(e.started_at, c.now), claimed_by = NULL, claim_expires_at = NULL"
    " FROM unnest(%(ids)b::bigint[], %(states)b::text[], %(records)b::text[],"
    " %(lance)b::text[], %(found)b::int[], %(errors)b::text[], %(fetch)b::int[],"
    " %(now)b::float8[]) AS c (id, state, record, lance_id, found, error, needs_fetch, now)"
    " WHERE e.id = c.id AND e.state IN ('queued', 'pending')"
    " AND (e.claimed_by IS NULL OR e.claimed_by = %(me)s)"
    # The rows it moved, ready for their events without reading them again.
    " RETURNING e.id, e.entity_type, e.entity_id, e.field, e.state, e.record, e.enriched,"
    " e.error, e.needs_fetch"
)


def _record_json(change: ledger.Change) -> str | None:
    return None if change.record is None else orjson.dumps(change.record).decode()


def pending_params(changes: Sequence[tuple[ledger.Change, float]], me: str) -> dict[str, Any]:
    """The arrays of :data:`STILL_PENDING` / :data:`TO_PENDING`: (change, its time) pairs."""
    return {
        "me": me,
        "ids": [c.id for c, _ in changes],
        "records": [_record_json(c) for c, _ in changes],
        "lance": [None if c.record is None else c.record.get("id") for c, _ in changes],
        "next": [c.next_poll_at for c, _ in changes],
        "now": [now for _, now in changes],
    }


def terminal_params(changes: Sequence[tuple[ledger.Change, float]], me: str) -> dict[str, Any]:
    """The arrays of :data:`TO_TERMINAL`: (change, its time) pairs."""
    found = [None if c.record is None else c.record.get("dataFound") for c, _ in changes]
    return {
        "me": me,
        "ids": [c.id for c, _ in changes],
        "states": [c.state for c, _ in changes],
        "records": [_record_json(c) for c, _ in changes],
        "lance": [None if c.record is None else c.record.get("id") for c, _ in changes],
        "found": [None if f is None else int(bool(f)) for f in found],
        "errors": [c.error for c, _ in changes],
        "fetch": [int(needs_fetch(c)) for c, _ in changes],
        "now": [now for _, now in changes],
    }

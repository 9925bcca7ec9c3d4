"""The SQL of the SQLite ledger's hot writes: accepting tasks and inbound events, state changes.

Each function runs inside the caller's transaction (or, for a lone INSERT, under its lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite
import orjson

from bridge import ledger, model
from bridge.ledger import accepts

# SQLite's bound-parameter limit is 32766; stay well under it.
MAX_PARAMS = 30_000
# The states' plain string values, bound once: read for every row of the hot paths, where an
# enum attribute lookup (Python 3.11) or a str subclass bound as an SQL parameter (sqlite3
# adapts those one by one) would cost more than the string did.
_QUEUED = model.EnrichmentState.QUEUED.value
_PENDING = model.EnrichmentState.PENDING.value
_FINISHED = model.EnrichmentState.FINISHED.value


def _new_row(task: model.Task, now: float) -> tuple[Any, ...]:
    key = task.key_bytes()
    if task.mode == "track":
        return (*task.key, key, "track", _PENDING, now, now, now, now)
    return (*task.key, key, "trigger", _QUEUED, now, now, None, None)


def needs_fetch(change: ledger.Change) -> bool:
    return change.state == _FINISHED and bool((change.record or {}).get("dataFound"))


# State updates take their rows as one VALUES list per statement (c.column1 = the row id):
# the driver binds a whole chunk at once and SQLite then runs without the GIL, instead of
# taking it back for every row as executemany does, which stalls against a busy event loop.
PENDING_COLUMNS = 5  # id, record, lance_id, next_poll_at, now
STILL_PENDING = (
    "UPDATE enrichments SET record = coalesce(c.column2, record),"
    " lance_id = coalesce(c.column3, lance_id), next_poll_at = c.column4, polls = polls + 1,"
    " updated_at = c.column5, started_at = coalesce(started_at, c.column5)"
    " FROM (VALUES {rows}) AS c WHERE enrichments.id = c.column1 AND state = 'pending'"
)
TO_PENDING = (
    "UPDATE enrichments SET state = 'pending', record = coalesce(c.column2, record),"
    " lance_id = coalesce(c.column3, lance_id), next_poll_at = c.column4, polls = polls + 1,"
    " updated_at = c.column5, started_at = coalesce(started_at, c.column5)"
    " FROM (VALUES {rows}) AS c WHERE enrichments.id = c.column1 AND state = 'queued'"
)
TERMINAL_COLUMNS = 8  # id, state, record, lance_id, data_found, error, needs_fetch, now
TO_TERMINAL = (
    "UPDATE enrichments SET state = c.column2, record = coalesce(c.column3, record),"
    " lance_id = coalesce(c.column4, lance_id), data_found = coalesce(c.column5, data_found),"
    " error = coalesce(c.column6, error), needs_fetch = c.column7, next_poll_at = NULL,"
    " polls = polls + 1, updated_at = c.column8, finished_at = c.column8,"
    " started_at = coalesce(started_at, c.column8)"
    " FROM (VALUES {rows}) AS c WHERE enrichments.id = c.column1"
    " AND state IN ('queued', 'pending')"
)


def pending_params(change: ledger.Change, now: float) -> tuple[Any, ...]:
    record = change.record
    return (
        change.id,
        None if record is None else orjson.dumps(record).decode(),
        None if record is None else record.get("id"),
        change.next_poll_at,
        now,
    )


def terminal_params(change: ledger.Change, now: float) -> tuple[Any, ...]:
    record = change.record
    found = None if record is None else record.get("dataFound")
    return (
        change.id,
        change.state,
        None if record is None else orjson.dumps(record).decode(),
        None if record is None else record.get("id"),
        None if found is None else int(bool(found)),
        change.error,
        int(needs_fetch(change)),
        now,
    )


async def update_rows(
    db: aiosqlite.Connection, template: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``template`` over ``rows`` (each ``width`` values), a parameter-limit chunk at a time."""
    step = MAX_PARAMS // width
    row_marks = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        sql = template.format(rows=",".join([row_marks] * len(chunk)))
        await db.execute(sql, [value for row in chunk for value in row])


_NEW_ROW_COLUMNS = (
    "entity_type, entity_id, field, key, mode, state, created_at, updated_at, started_at,"
    " next_poll_at"
)
_NEW_ROW_PARAMS = 10
INSERT_CHUNK = MAX_PARAMS // _NEW_ROW_PARAMS  # rows one INSERT statement takes


async def _insert_new(
    db: aiosqlite.Connection, rows: Sequence[tuple[Any, ...]]
) -> dict[tuple[str, str, str], tuple[int, str, str]]:
    """Insert rows whose key is not in flight; returns the created ones by key.

    One multi-row statement with RETURNING per chunk: the usual single-task request costs
    one round trip to the ledger's thread, not one per statement of a longer dance.
    """
    created: dict[tuple[str, str, str], tuple[int, str, str]] = {}
    step = INSERT_CHUNK
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        marks = ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
        returned = await db.execute_fetchall(
            f"INSERT INTO enrichments ({_NEW_ROW_COLUMNS})"  # noqa: S608 - placeholders only
            f" SELECT * FROM (VALUES {marks}) AS v WHERE NOT EXISTS (SELECT 1 FROM enrichments"
            " WHERE key = v.column4 AND state IN ('queued', 'pending'))"
            " RETURNING id, entity_type, entity_id, field, state, mode",
            [value for row in chunk for value in row],
        )
        created.update({(r[1], r[2], r[3]): (int(r[0]), r[4], r[5]) for r in returned})
    return created


async def _in_flight_ids(
    db: aiosqlite.Connection, keys: set[tuple[str, str, str]]
) -> dict[tuple[str, str, str], tuple[int, str, str]]:
    wanted = {model.key_bytes(*key): key for key in keys}
    ordered = sorted(wanted)
    found: dict[tuple[str, str, str], tuple[int, str, str]] = {}
    for start in range(0, len(ordered), MAX_PARAMS):
        chunk = ordered[start : start + MAX_PARAMS]
        rows = await db.execute_fetchall(
            "SELECT id, key, state, mode FROM enrichments"  # noqa: S608 - placeholders only
            " WHERE state IN ('queued', 'pending')"
            f" AND key IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        found.update({wanted[bytes(r[1])]: (int(r[0]), str(r[2]), str(r[3])) for r in rows})
    return found


async def insert_inbound(
    db: aiosqlite.Connection, source: str, events: Sequence[model.Inbound], now: float
) -> set[str]:
    """Insert events not seen before; returns the keys that were new."""
    fresh: set[str] = set()
    step = MAX_PARAMS // 10
    for start in range(0, len(events), step):
        chunk = events[start : start + step]
        marks = ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
        returned = await db.execute_fetchall(
            "INSERT OR IGNORE INTO inbound"  # noqa: S608 - placeholders only
            " (source, key, state, object_type, object_id, detail, received_at, updated_at,"
            f" match_key, request) VALUES {marks} RETURNING key",
            [
                value
                for event in chunk
                for value in (
                    source,
                    event.key,
                    event.state,
                    *(event.lookup or event.record),
                    event.detail,
                    now,
                    now,
                    *event.match_columns,
                )
            ],
        )
        fresh.update(str(row[0]) for row in returned)
    return fresh


async def accept_in(
    db: aiosqlite.Connection, groups: Sequence[tuple[Sequence[model.Task], float]]
) -> list[list[model.Accepted]]:
    """Accept each group's tasks inside the caller's transaction."""
    new_rows: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for tasks, now in groups:
        for task in tasks:
            new_rows.setdefault(task.key, _new_row(task, now))
    if not new_rows:
        return [[] for _ in groups]
    ids = await _insert_new(db, list(new_rows.values()))
    created = {row_id for row_id, _, _ in ids.values()}
    attached = new_rows.keys() - ids.keys()
    if attached:
        ids.update(await _in_flight_ids(db, attached))
    targets = accepts.target_rows(groups, ids)
    if targets:
        await db.executemany("INSERT OR IGNORE INTO targets VALUES (?,?,?,?)", targets)
    return accepts.answers(groups, ids, created)

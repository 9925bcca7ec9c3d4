"""The SQLite ledger's outbox: completion events, written in the state change's transaction.

:func:`emit` turns terminal enrichments into delivery rows, one per enrichment and target, using
the :class:`~bridge.outbox.Router` built from the configured connectors. Each row holds the exact
event bytes and a message id that stays the same across retries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiosqlite

from bridge import outbox
from bridge.ledger import events

DELIVERY_COLUMNS = (
    "id, enrichment_id, connector, object_type, object_id, event_type, message_id, body, attempts,"
    " created_at"
)


async def emit(
    db: aiosqlite.Connection, router: outbox.Router, ready: Sequence[tuple[int, float]]
) -> int:
    """Write the deliveries caused by terminal enrichments; returns how many.

    Args:
        db: The connection of the transaction that changed their state.
        router: Who receives which event.
        ready: (enrichment id, time of its state change) pairs; one query serves them all.
    """
    if not ready:
        return 0
    when = dict(ready)
    id_list = json.dumps(list(when))
    rows = await db.execute_fetchall(
        "SELECT id, entity_type, entity_id, field, state, record, enriched, error"
        " FROM enrichments WHERE id IN (SELECT value FROM json_each(?))",
        (id_list,),
    )
    named: dict[int, list[tuple[str, str, str]]] = {}
    for row in await db.execute_fetchall(
        "SELECT enrichment_id, connector, object_type, object_id FROM targets"
        " WHERE enrichment_id IN (SELECT value FROM json_each(?))",
        (id_list,),
    ):
        named.setdefault(int(row[0]), []).append((row[1], row[2], row[3]))
    new = events.delivery_rows(rows, named, when, router)
    if new:
        await db.executemany(
            "INSERT OR IGNORE INTO deliveries (enrichment_id, connector, object_type, object_id,"
            " event_type, message_id, body, state, next_attempt_at, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,'pending',?,?,?)",
            new,
        )
    return len(new)

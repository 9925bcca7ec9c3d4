"""The SQLite ledger's outbox: completion events, written in the state change's transaction.

:func:`emit` turns terminal enrichments into delivery rows, one per enrichment and target, using
the :class:`~bridge.outbox.Router` built from the configured connectors. Each row holds the exact
event bytes and a message id that stays the same across retries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import aiosqlite
import orjson

from bridge import model, outbox

DELIVERY_COLUMNS = (
    "id, enrichment_id, connector, object_type, object_id, event_type, message_id, body, attempts,"
    " created_at"
)


def delivery_of(row: Sequence[Any]) -> model.Delivery:
    """A delivery from a row of :data:`DELIVERY_COLUMNS`."""
    return model.Delivery(
        int(row[0]),
        int(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        str(row[5]),
        str(row[6]),
        bytes(row[7]),
        int(row[8]),
        float(row[9] or 0.0),
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
    new = []
    for row in rows:
        event_type = f"enrichment.{row[4]}"
        now = when[int(row[0])]
        for target in router.targets(event_type, named.get(int(row[0]), [])):
            message_id = f"msg_{uuid.uuid4().hex}"
            body = _event_body(row, event_type, message_id, outbox.iso(now), target)
            new.append((int(row[0]), *target, event_type, message_id, body, now, now, now))
    if new:
        await db.executemany(
            "INSERT OR IGNORE INTO deliveries (enrichment_id, connector, object_type, object_id,"
            " event_type, message_id, body, state, next_attempt_at, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,'pending',?,?,?)",
            new,
        )
    return len(new)


def _event_body(
    row: Sequence[Any], event_type: str, message_id: str, stamp: str, target: tuple[str, str, str]
) -> bytes:
    row_id, entity_type, entity_id, field, state, record, enriched, error = row
    lance_record = (
        orjson.loads(record)
        if record
        else {
            "entityId": entity_id,
            "entityType": entity_type,
            "field": field,
            "status": None,
        }
    )
    event = {
        "type": event_type,
        "id": message_id,
        "timestamp": stamp,
        "data": {
            "ledgerId": row_id,
            "state": state,
            "reason": error,
            "enrichment": lance_record,
            "values": json.loads(enriched) if enriched else {},
            "target": model.target_json(*target),
        },
    }
    return orjson.dumps(event)

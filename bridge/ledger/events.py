"""What a terminal enrichment causes, the same in every backend: its delivery rows and the exact
event body each delivery sends (the webhook payload of DESIGN §8), and a delivery read back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from bridge import model, outbox

# A new delivery row: enrichment id, connector, object type, object id, event type, message id,
# body, next attempt, created, updated.
DeliveryRow = tuple[Any, ...]


def delivery_rows(
    rows: Iterable[Sequence[Any]],
    named: Mapping[int, Sequence[tuple[str, str, str]]],
    when: Mapping[int, float],
    router: outbox.Router,
) -> list[DeliveryRow]:
    """The deliveries of terminal enrichments.

    Args:
        rows: (id, entity_type, entity_id, field, state, record, enriched, error) of each.
        named: The targets each one names: (connector, object type, object id).
        when: The time of each one's state change.
        router: Who receives which event.
    """
    new = []
    for row in rows:
        event_type = f"enrichment.{row[4]}"
        now = when[int(row[0])]
        for target in router.targets(event_type, named.get(int(row[0]), [])):
            message_id = f"msg_{uuid.uuid4().hex}"
            body = _event_body(row, event_type, message_id, outbox.iso(now), target)
            new.append((int(row[0]), *target, event_type, message_id, body, now, now, now))
    return new


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

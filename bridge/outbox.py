"""The outbox: completion events written in the same transaction as the state change.

:func:`emit` turns terminal enrichments into delivery rows, one per enrichment and target, using
a :class:`Router` built from the configured connectors. Each row holds the exact event bytes
and a message id that stays the same across retries.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from collections.abc import Sequence
from typing import Any

import aiosqlite
import orjson

from bridge import model

DELIVERY_COLUMNS = (
    "id, enrichment_id, connector, object_type, object_id, event_type, message_id, body, attempts,"
    " created_at"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """What a configured connector receives.

    A connector that ``needs_record`` (a CRM) gets the events of enrichments whose targets name
    it; any other connector gets every event its ``events`` filter matches.
    """

    name: str
    needs_record: bool
    events: frozenset[str]


class Router:
    """The routes of all configured connectors."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self._by_name = {route.name: route for route in routes}

    def route(self, name: str) -> Route | None:
        """The route of the connector named ``name``, if it is configured."""
        return self._by_name.get(name)

    def targets(
        self, event_type: str, named: Sequence[tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        """The (connector, objectType, objectId) targets an event goes to.

        Targets naming a connector that is no longer configured still get a delivery row, so
        the dispatcher can mark it dead with a reason instead of dropping it silently.
        """
        chosen: list[tuple[str, str, str]] = []
        for route in self.routes:
            if event_type not in route.events:
                continue
            if route.needs_record:
                chosen += [t for t in named if t[0] == route.name]
            else:
                chosen.append((route.name, "", ""))
        chosen += [t for t in named if t[0] not in self._by_name]
        return chosen


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A pending delivery as the dispatcher reads it."""

    id: int
    enrichment_id: int
    connector: str
    object_type: str
    object_id: str
    event_type: str
    message_id: str
    body: bytes
    attempts: int
    created_at: float = 0.0

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Delivery:
        """Build from a row of :data:`DELIVERY_COLUMNS`."""
        return cls(
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

    def target(self) -> dict[str, str] | None:
        """The CRM record this delivery updates, if any."""
        if not (self.object_type or self.object_id):
            return None
        return model.target_json(self.connector, self.object_type, self.object_id)


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one delivery attempt, as the ledger stores it."""

    delivery_id: int
    state: str  # a model.DeliveryState value, as a plain string (bound per row)
    next_attempt_at: float | None
    error: str | None
    status: int | None


def iso(ts: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds, like Lance's timestamps."""
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def values_of(field: str, entity: dict[str, Any]) -> dict[str, Any]:
    """The enriched values of ``field`` in a Lance person or company object."""
    value = entity.get(field)
    if field == "summary":
        return {"summary": value if isinstance(value, str) and value else None}
    return {field: [v for v in value if isinstance(v, str)] if isinstance(value, list) else []}


async def emit(db: aiosqlite.Connection, router: Router, ready: Sequence[tuple[int, float]]) -> int:
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
            body = _event_body(row, event_type, message_id, iso(now), target)
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

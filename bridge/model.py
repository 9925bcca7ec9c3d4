"""The domain values every layer shares: tasks, targets, inbound events and the states.

Storage, the connectors and the web layer all import this module, and it imports none of
them (nor any driver), so a connector built against the contract never pulls in the ledger.
States are :class:`enum.StrEnum`: each member *is* its string, so the ledger stores, JSON
prints and metrics label them exactly as before, and comparing a row's string to a member
costs what comparing two strings does.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
import uuid
from typing import Any, Literal


class EnrichmentState(enum.StrEnum):
    """Where an enrichment is (DESIGN §7): two in-flight states, then one terminal state."""

    QUEUED = "queued"
    PENDING = "pending"
    FINISHED = "finished"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LOST = "lost"
    EXPIRED = "expired"


# Ordered as the CLI, ``status`` and the metrics list them.
IN_FLIGHT = (EnrichmentState.QUEUED, EnrichmentState.PENDING)
TERMINAL = (
    EnrichmentState.FINISHED,
    EnrichmentState.FAILED,
    EnrichmentState.TIMEOUT,
    EnrichmentState.CANCELLED,
    EnrichmentState.LOST,
    EnrichmentState.EXPIRED,
)


class DeliveryState(enum.StrEnum):
    """Where a delivery is: waiting for an attempt, acknowledged, or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class InboundState(enum.StrEnum):
    """How the ledger records an inbound CRM event."""

    ACCEPTED = "accepted"
    LOOKUP = "lookup"
    SKIPPED = "skipped"


# Plain string values, bound once: Inbound.state is read and stored for every event received,
# where an enum attribute lookup (Python 3.11) or binding a str subclass costs more.
_ACCEPTED = InboundState.ACCEPTED.value
_LOOKUP = InboundState.LOOKUP.value
_SKIPPED = InboundState.SKIPPED.value


EventType = Literal[
    "enrichment.finished",
    "enrichment.failed",
    "enrichment.timeout",
    "enrichment.cancelled",
    "enrichment.expired",
    "enrichment.lost",
]
EVENT_TYPES: tuple[EventType, ...] = typing.get_args(EventType)


def target_json(connector: str, object_type: str = "", object_id: str = "") -> dict[str, str]:
    """The API and event shape of a target: the record's keys only when there is a record."""
    shape = {"connector": connector}
    if object_type or object_id:
        shape |= {"objectType": object_type, "objectId": object_id}
    return shape


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A place a result goes: a connector, and for CRMs the record to update."""

    connector: str
    object_type: str = ""
    object_id: str = ""

    def as_json(self) -> dict[str, str]:
        """The API shape of the target."""
        return target_json(self.connector, self.object_type, self.object_id)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One pending delivery: read from the ledger, sent by a connector, its outcome recorded.

    Attributes:
        id: The ledger's delivery id.
        enrichment_id: The enrichment whose event this is.
        connector: The configured connector it goes to.
        object_type: For CRMs, the record to update (empty for other connectors).
        object_id: See ``object_type``.
        event_type: One of :data:`EVENT_TYPES`.
        message_id: Stable across retries; receivers dedupe on it (``webhook-id``).
        body: The exact JSON bytes of the event, stored at creation and re-sent on each retry.
        attempts: Attempts made so far.
        created_at: When the event was written (Unix seconds).
        target: The CRM record to update (``{"connector", "objectType", "objectId"}``), or
            ``None`` for connectors that need no record.
    """

    id: int
    enrichment_id: int
    connector: str
    object_type: str
    object_id: str
    event_type: str
    message_id: str
    body: bytes = dataclasses.field(repr=False)  # the enriched values: personal data
    attempts: int = 0
    created_at: float = 0.0
    # The CRM record this delivery updates, or None for connectors that need none. Built
    # once: a CRM connector reads it several times per delivery (batching, payload, outcome).
    target: dict[str, str] | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        record = self.object_type or self.object_id
        target = target_json(self.connector, self.object_type, self.object_id) if record else None
        object.__setattr__(self, "target", target)  # frozen: set once, here

    def payload(self) -> dict[str, Any]:
        """The decoded event body."""
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One accepted trigger task."""

    entity_type: str
    entity_id: str
    field: str
    mode: str = "trigger"
    targets: tuple[Target, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        """(entityType, entityId, field): Lance's identity of an enrichment."""
        return (self.entity_type, self.entity_id, self.field)

    def key_bytes(self) -> bytes:
        """The compact form of :attr:`key` the ledger indexes."""
        return key_bytes(*self.key)


_ENTITY_CODES = {"person": 1, "company": 2}
_FIELD_CODES = {"emails": 1, "phones": 2, "summary": 3}


def key_bytes(entity_type: str, entity_id: str, field: str) -> bytes:
    """18 bytes: the entity UUID, then one byte each for the entity type and the field."""
    codes = bytes((_ENTITY_CODES[entity_type], _FIELD_CODES[field]))
    return uuid.UUID(entity_id).bytes + codes


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """The in-flight row a task landed on."""

    id: int
    created: bool
    state: str
    mode: str


@dataclasses.dataclass(frozen=True, slots=True)
class Inbound:
    """One event a CRM sent to ``/hooks/*``: its identity and what it asks for.

    Exactly one of: ``tasks`` to accept now; ``lookup``, a (objectType, objectId) record to
    read before the tasks are known (a creation event carries no properties); or ``skipped``,
    why it triggers nothing. An event whose ``key`` was already received stores nothing.
    """

    key: str
    tasks: tuple[Task, ...] = ()
    lookup: tuple[str, str] | None = None
    skipped: str | None = None
    record: tuple[str, str] = ("", "")

    @property
    def state(self) -> str:
        """How the ledger records it: the value of an :class:`InboundState`."""
        if self.lookup is not None:
            return _LOOKUP
        return _SKIPPED if self.skipped is not None or not self.tasks else _ACCEPTED


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """What one inbound request did."""

    events: int = 0
    duplicates: int = 0
    skipped: int = 0
    lookups: int = 0
    accepted: tuple[Accepted, ...] = ()

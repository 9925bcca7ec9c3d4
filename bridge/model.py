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
from collections.abc import Sequence
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
    # A record without a Lance id, waiting for the ``match`` job's person search (DESIGN §12),
    # then what the search found: one person (enriched), nobody, or several (nothing spent).
    MATCHING = "matching"
    MATCHED = "matched"
    UNMATCHED = "unmatched"
    AMBIGUOUS = "ambiguous"


# The settled outcomes of a person search, as the match table keeps them.
MATCH_OUTCOMES = (InboundState.MATCHED, InboundState.UNMATCHED, InboundState.AMBIGUOUS)


# Plain string values, bound once: Inbound.state is read and stored for every event received,
# where an enum attribute lookup (Python 3.11) or binding a str subclass costs more.
_ACCEPTED = InboundState.ACCEPTED.value
_LOOKUP = InboundState.LOOKUP.value
_SKIPPED = InboundState.SKIPPED.value
_MATCHING = InboundState.MATCHING.value
_UNMATCHED = InboundState.UNMATCHED.value


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
class Match:
    """A CRM record without a Lance id: how to find its person, and what to do once found.

    Attributes:
        key: The normalised search key, the match table's identity of the search:
            ``linkedin:<canonical profile URL>`` or ``name:<full name>\\t<company>`` (both
            lowercased). Empty when ``problem`` says why the record cannot be searched.
        fields: The person fields to enrich once exactly one person is found.
        targets: Where the results go; the first names the record itself.
        write_back: Whether the found id is written to the record's Lance-id property.
        problem: Why the record's value cannot be searched (junk in its LinkedIn property):
            the event is ``unmatched`` with this reason and no search is made.
    """

    key: str = dataclasses.field(repr=False)  # a LinkedIn URL or a name: personal data
    fields: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    write_back: bool = False
    problem: str | None = None

    def tasks(self, entity_id: str) -> tuple[Task, ...]:
        """The trigger tasks once the person ``entity_id`` is found."""
        return tuple(
            Task("person", entity_id, field, "trigger", self.targets) for field in self.fields
        )

    def as_json(self) -> str:
        """The form the ledger stores with a waiting event."""
        return json.dumps(
            {
                "fields": list(self.fields),
                "targets": [list(dataclasses.astuple(t)) for t in self.targets],
                "writeBack": self.write_back,
            }
        )

    @classmethod
    def of_json(cls, key: str, text: str) -> Match:
        """The match :meth:`as_json` stored for ``key``."""
        data = json.loads(text)
        targets = tuple(Target(*t) for t in data.get("targets") or ())
        fields = tuple(data.get("fields") or ())
        return cls(key, fields, targets, bool(data.get("writeBack")))


@dataclasses.dataclass(frozen=True, slots=True)
class Inbound:
    """One event a CRM sent to ``/hooks/*``: its identity and what it asks for.

    Exactly one of: ``tasks`` to accept now; ``lookup``, a (objectType, objectId) record to
    read before the tasks are known (a creation event carries no properties); ``match``, a
    record without a Lance id whose person is searched first (DESIGN §12); or ``skipped``,
    why it triggers nothing. An event whose ``key`` was already received stores nothing.
    """

    key: str
    tasks: tuple[Task, ...] = ()
    lookup: tuple[str, str] | None = None
    skipped: str | None = None
    record: tuple[str, str] = ("", "")
    match: Match | None = None

    @property
    def state(self) -> str:
        """How the ledger records it: the value of an :class:`InboundState`."""
        if self.lookup is not None:
            return _LOOKUP
        if self.match is not None:
            return _UNMATCHED if self.match.problem is not None else _MATCHING
        return _SKIPPED if self.skipped is not None or not self.tasks else _ACCEPTED

    @property
    def detail(self) -> str | None:
        """Why it triggers nothing (skipped, or a record that cannot be searched)."""
        return self.match.problem if self.match is not None else self.skipped

    @property
    def match_columns(self) -> tuple[str | None, str | None]:
        """(match key, stored match request) for the ledger; ``None`` without a match."""
        if self.match is None or self.match.problem is not None:
            return (None, None)
        return (self.match.key, self.match.as_json())


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """What one inbound request did."""

    events: int = 0
    duplicates: int = 0
    skipped: int = 0
    lookups: int = 0
    accepted: tuple[Accepted, ...] = ()
    matching: int = 0

    @classmethod
    def of(
        cls, events: int, stored: Sequence[Inbound], accepted: Sequence[Sequence[Accepted]]
    ) -> Received:
        """The summary of ``events`` events of which ``stored`` were new (the rest were
        duplicates), with the rows their tasks were accepted as (one sequence per event)."""
        return cls(
            events=events,
            duplicates=events - len(stored),
            skipped=sum(event.state == _SKIPPED for event in stored),
            lookups=sum(event.state == _LOOKUP for event in stored),
            accepted=tuple(row for rows in accepted for row in rows),
            matching=sum(event.state == _MATCHING for event in stored),
        )


def distinct(events: Sequence[Inbound]) -> list[Inbound]:
    """One event per ``key`` (the last sent), in the order the keys first came."""
    return list({event.key: event for event in events}.values())

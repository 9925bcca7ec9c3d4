"""The ledger: the interface every storage backend implements, and :func:`open`, which picks one.

The jobs, the web layer, the CLI and the metrics speak only to :class:`Ledger`; no driver type
crosses it and no caller hands it SQL. A backend (:mod:`bridge.ledger.sqlite`, the embedded
default, or :mod:`bridge.ledger.postgres`) holds all of its SQL and translates its driver's
errors to :class:`~bridge.errors.LedgerError` at one seam of its own.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import os
import secrets
import socket
import typing
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge import errors, model, outbox
from bridge import settings as settings_mod

# How often the ledger watch job checks that the store is still there and, after a failure,
# whether it can be written again.
WATCH_INTERVAL_S = 1.0
# How often a replica records that it is alive and renews the leases of the rows it holds:
# several times within one lease, so a replica that is alive never loses a claim to another.
HEARTBEAT_INTERVAL_S = 15.0
# Backend name → the module that implements it (each has an ``open`` like :func:`open`'s).
BACKENDS = {"sqlite": "bridge.ledger.sqlite", "postgres": "bridge.ledger.postgres"}


class Change(typing.NamedTuple):
    """A new state for an in-flight enrichment, written by the trigger and poll jobs.

    ``state`` is the ledger state; ``record`` the Lance Enrichment object when one was seen;
    ``next_poll_at`` reschedules a row that stays pending. A named tuple, not a frozen
    dataclass: the poll job builds one per row of every tick, and it builds several times
    faster.
    """

    id: int
    state: str
    record: Mapping[str, Any] | None = None
    next_poll_at: float | None = None
    error: str | None = None
    from_queue: bool = False  # the trigger job's rows: still `queued` in the ledger


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedRow:
    """A queued row: ``sent_at`` is set when a trigger naming it went out unanswered."""

    id: int
    entity_id: str
    sent_at: float | None


class PollRow(typing.NamedTuple):
    """An in-flight row due for a status check (a named tuple: one per due row per tick)."""

    id: int
    entity_type: str
    entity_id: str
    field: str
    started_at: float
    polls: int
    has_record: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one delivery attempt, as the ledger stores it."""

    delivery_id: int
    state: str  # a model.DeliveryState value, as a plain string (bound per row)
    next_attempt_at: float | None
    error: str | None
    status: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The counts of one consistent read of the ledger, for the metrics.

    Attributes:
        states: Enrichment rows by state.
        awaiting: Rows that finished with data and whose values are not read yet.
        deliveries: Delivery rows by (connector, state).
        targets: Target rows of terminal enrichments whose events are out, by (state, connector).
        first_in_flight: (created_at, id) of the oldest queued or pending row, if any.
        last_id: The highest enrichment id (0 when there is none).
    """

    states: dict[str, int]
    awaiting: int
    deliveries: dict[tuple[str, str], int]
    targets: dict[tuple[str, str], int]
    first_in_flight: tuple[float, int] | None
    last_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """How far the work in the ledger got (``demo`` watches it).

    Attributes:
        terminal: Enrichments that ended and whose events are written.
        delivered: Deliveries acknowledged.
        unsettled: Deliveries not (yet) acknowledged.
    """

    terminal: int
    delivered: int
    unsettled: int


@dataclasses.dataclass(frozen=True, slots=True)
class Replica:
    """A ``serve`` process sharing the ledger, as ``status`` and ``/metrics`` show it.

    Attributes:
        id: Its name on its claims (``ledger.replica_id`` or hostname-pid-random).
        started_at: When it first registered (epoch seconds).
        last_heartbeat: When it last said it is alive (epoch seconds).
        held: Rows (enrichments, deliveries, inbound events) whose claim it holds now.
    """

    id: str
    started_at: float
    last_heartbeat: float
    held: int


@dataclasses.dataclass(frozen=True, slots=True)
class Waiting:
    """An inbound event waiting for the ``match`` job: its identity and what it asks for."""

    source: str
    key: str
    match: model.Match
    attempts: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """What a person search found for one normalised key (or why it has to be asked again).

    Attributes:
        key: The normalised search key (:attr:`bridge.model.Match.key`).
        outcome: ``matched``, ``unmatched`` or ``ambiguous`` (a :data:`~bridge.model.
            MATCH_OUTCOMES` value), or ``retry``: the search failed and is asked again later.
        entity_id: The one person's Lance id when ``matched``.
        candidates: The Lance ids of every person found.
        reason: Why, for anything but a clean match (kept on the event, shown by the API).
        cached: Kept in the match table, so the key is never searched again; only answers
            Lance gave cleanly are.
        retry_at: When a ``retry`` is due (epoch seconds).
    """

    key: str
    outcome: str
    entity_id: str | None = None
    candidates: tuple[str, ...] = ()
    reason: str | None = None
    cached: bool = True
    retry_at: float | None = None


class WriteBack(typing.NamedTuple):
    """A Lance id found for a CRM record, to be written to its Lance-id property."""

    source: str
    object_type: str
    object_id: str
    entity_id: str
    attempts: int = 0


class WriteBackResult(typing.NamedTuple):
    """The outcome of writing one :class:`WriteBack`: ``done``, ``dead`` or ``retry`` (due
    again at ``next_attempt_at``)."""

    item: WriteBack
    state: str
    error: str | None = None
    next_attempt_at: float | None = None


def replica_id(config: settings_mod.LedgerSettings) -> str:
    """This process's replica name: ``ledger.replica_id``, else hostname-pid-random."""
    if config.replica_id:
        return config.replica_id
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Ledger(abc.ABC):
    """What the jobs, the web layer, the CLI and the metrics ask of the ledger.

    Attributes:
        path: Where the ledger is, for messages (never credentials).
        router: Decides which deliveries a completion causes.
    """

    path: Path
    router: outbox.Router
    replica: str = "local"  # this process's replica id (set by the backend's ``open``)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connections and the ``serve`` lock."""

    # -- health ---------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def problem(self) -> str | None:
        """Why the ledger cannot store work now (``None`` when it can); no path, no data."""

    @abc.abstractmethod
    def check(self) -> str | None:
        """:attr:`problem`, after a cheap check that the store is still the one opened."""

    @abc.abstractmethod
    async def watch(self) -> str | None:
        """The ledger watch job's single pass: notice a lost store; after a failure, try a
        write and recover if it succeeds.

        Raises:
            errors.LedgerLostError: the store was deleted or replaced; the process should exit.
        """

    # -- accepting work and inbound CRM events --------------------------------------------

    @abc.abstractmethod
    async def accept(self, tasks: Sequence[model.Task], now: float) -> list[model.Accepted]:
        """Record ``tasks`` durably; a task already in flight attaches its targets to that row.

        Returns:
            For each task, in order, its row and whether this call created it.
        """

    @abc.abstractmethod
    async def receive(
        self, source: str, events: Sequence[model.Inbound], now: float
    ) -> model.Received:
        """Record the events a CRM sent and accept their tasks, in one transaction.

        An event whose ``key`` this source already sent (a retry, a duplicate) changes
        nothing, so it can never trigger a second paid enrichment.
        """

    @abc.abstractmethod
    async def lookups(self, source: str, limit: int) -> list[tuple[str, str, str]]:
        """(key, objectType, objectId) of events waiting for a record read, oldest first.

        Where replicas share the ledger the events returned are claimed (leased like the other
        jobs' rows), so no two replicas read the same record.
        """

    @abc.abstractmethod
    async def resolve(
        self, source: str, resolved: Sequence[model.Inbound], now: float
    ) -> model.Received:
        """Settle looked-up events: accept their tasks or record why they were skipped."""

    @abc.abstractmethod
    async def prune_inbound(self, before: float) -> int:
        """Forget settled inbound events received before ``before``; returns how many."""

    # -- matching CRM records to Lance people (DESIGN §12) --------------------------------

    @abc.abstractmethod
    async def waiting_matches(self, now: float, limit: int) -> list[Waiting]:
        """Events waiting for a person search whose attempt is due, oldest first.

        Where replicas share the ledger the events returned are claimed (leased), so no two
        replicas search for the same event.
        """

    @abc.abstractmethod
    async def known_matches(self, keys: Sequence[str]) -> dict[str, Found]:
        """The match table's outcomes for those of ``keys`` searched before."""

    @abc.abstractmethod
    async def settle_matches(
        self, settled: Sequence[tuple[Waiting, Found]], now: float
    ) -> model.Received:
        """Record what the searches found, in one transaction: the match table, each event's
        new state and reason, the tasks of matched events, and their write-backs."""

    @abc.abstractmethod
    async def due_write_backs(self, now: float, limit: int) -> list[WriteBack]:
        """Write-backs whose next attempt has come, oldest first (claimed on replicas)."""

    @abc.abstractmethod
    async def record_write_backs(self, results: Sequence[WriteBackResult], now: float) -> None:
        """Write the outcomes of one round of write-backs in one transaction."""

    @abc.abstractmethod
    async def accept_trigger(
        self,
        tasks: Sequence[model.Task],
        source: str,
        events: Sequence[model.Inbound],
        now: float,
    ) -> list[model.Accepted]:
        """One ``POST /v1/triggers`` request in one transaction: :meth:`accept` ``tasks``,
        marking the ``ambiguous`` or ``unmatched`` inbound events of the records they name as
        ``matched`` (a manual trigger with an explicit Lance id settles them), and
        record ``events`` (its ``match`` tasks) from ``source`` as :meth:`receive` does.

        Either all of it is stored or, when this raises, none of it.

        Returns:
            For each task, in order, its row and whether this call created it.
        """

    @abc.abstractmethod
    async def list_inbound(
        self,
        *,
        state: str | None,
        source: str | None = None,
        after: tuple[float, str, str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """A page of inbound events in (receivedAt, source, key) order, after ``after``."""

    # -- trigger, poll and fetch jobs -----------------------------------------------------

    @abc.abstractmethod
    async def queued(self, limit: int) -> dict[str, list[QueuedRow]]:
        """Queued rows to trigger, oldest first, grouped by field."""

    @abc.abstractmethod
    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        """Record, before a trigger request goes out, that it names ``ids``."""

    @abc.abstractmethod
    async def due_for_poll(self, now: float, limit: int, *, tick: bool = False) -> list[PollRow]:
        """Pending rows whose next poll has come, most overdue first.

        ``tick``: ``now`` is a point of the poll job's tick grid, which replicas share; once
        one replica claimed a point's rows (all of them, below ``limit``), the point is done,
        and a row written due by it since waits for the next point like every later one.
        """

    async def release(self, ids: Sequence[int], now: float) -> None:
        """Give up this replica's claim on rows it could not poll (their request failed).

        They are due again from ``now``, so whichever replica ticks next polls them with the
        rest of that tick's rows instead of in a request of their own. Where no other replica
        can take rows (SQLite) there is nothing to release: they are still due.
        """
        del ids, now

    @abc.abstractmethod
    async def apply(self, changes: Sequence[Change], now: float) -> None:
        """Write new states durably, with the events terminal states cause."""

    @abc.abstractmethod
    async def awaiting_values(
        self, limit: int, *, hold_after: float = float("inf")
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        """Finished-with-data rows, grouped by entity so each entity is read once."""

    @abc.abstractmethod
    async def store_values(self, values: Sequence[tuple[int, dict[str, Any]]], now: float) -> None:
        """Store the values read for finished rows and write their events, in one transaction."""

    # -- delivery job ---------------------------------------------------------------------

    @abc.abstractmethod
    async def due_deliveries(self, now: float, limit: int) -> list[model.Delivery]:
        """Pending deliveries whose next attempt has come, oldest due first."""

    @abc.abstractmethod
    async def defer(self, ids: Sequence[int], until: float) -> None:
        """Put pending deliveries off until ``until`` (no attempt is counted)."""

    @abc.abstractmethod
    async def records_in_flight(
        self, connector: str, records: Iterable[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Of ``records`` (objectType, objectId), those with an enrichment for ``connector``
        still in flight or awaiting its values."""

    @abc.abstractmethod
    async def record_attempts(self, results: Sequence[Attempt], now: float) -> None:
        """Write the outcome of one round of delivery attempts in one transaction."""

    @abc.abstractmethod
    async def replay(self, ids: Iterable[int], now: float) -> list[int]:
        """Make dead deliveries pending again, due now; returns the ids that were dead."""

    # -- replicas -------------------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, now: float) -> None:
        """Record that this replica is alive at ``now`` and renew the leases of what it holds.

        The heartbeat job's single pass; run far more often than a lease lasts.
        """

    @abc.abstractmethod
    async def replicas(self) -> list[Replica]:
        """The replicas that registered, most recent heartbeat first."""

    # -- meta -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_meta(self, key: str) -> str | None:
        """A value stored with :meth:`set_meta`."""

    @abc.abstractmethod
    async def set_meta(self, key: str, value: str) -> None:
        """Store a small named value (the last poll time, a trigger hold)."""

    # -- reads for the API, the CLI and the metrics (API shapes) --------------------------

    @abc.abstractmethod
    async def enrichments(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Enrichments by id, with their targets, in the API shape."""

    @abc.abstractmethod
    async def list_enrichments(
        self,
        *,
        state: str | None,
        after: int,
        limit: int,
        entity_id: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        field: str | None = None,
        record_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """A page of enrichments in id order, starting after ``after``.

        ``created_after`` / ``created_before`` bound ``created_at`` (Unix seconds, inclusive);
        ``record_id`` keeps the rows with a target naming that CRM record id.
        """

    @abc.abstractmethod
    async def latest_for_keys(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], dict[str, Any]]:
        """The newest row of each (entityType, entityId, field) that has one."""

    @abc.abstractmethod
    async def list_deliveries(
        self,
        *,
        state: str | None = None,
        connector: str | None = None,
        enrichment_id: int | None = None,
        after: int = 0,
        limit: int = 100,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> list[dict[str, Any]]:
        """A page of deliveries in id order, starting after ``after``.

        ``updated_after`` / ``updated_before`` bound ``updated_at`` (Unix seconds, inclusive):
        the last attempt or change, so for a dead delivery the time it died.
        """

    @abc.abstractmethod
    async def delivery_ids(
        self,
        *,
        state: str,
        connector: str | None = None,
        after: int = 0,
        limit: int = 1000,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> list[int]:
        """The ids of a page of deliveries in ``state``, in id order, filtered as
        :meth:`list_deliveries` (what "retry every dead delivery" replays)."""

    @abc.abstractmethod
    async def count_matching_deliveries(
        self,
        *,
        state: str,
        connector: str | None = None,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> int:
        """How many deliveries in ``state`` the filters of :meth:`list_deliveries` select."""

    @abc.abstractmethod
    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery in the API shape, or ``None``."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, Any]:
        """Counts by state, the oldest in-flight age and the last poll, for ``status``."""

    @abc.abstractmethod
    async def count_enrichments(self, state: model.EnrichmentState) -> int:
        """How many enrichments are in ``state`` (an index read: cheap to ask often)."""

    @abc.abstractmethod
    async def count_deliveries(self, state: model.DeliveryState) -> int:
        """How many deliveries are in ``state`` (an index read: cheap to ask often)."""

    @abc.abstractmethod
    async def snapshot(self) -> Snapshot:
        """Every count the metrics need, from one consistent read."""

    @abc.abstractmethod
    async def charged(self, after: int, upto: int) -> dict[str, int]:
        """Rows with ids in (after, upto] whose Lance record carries a ``creditTransactionId``,
        by field."""

    @abc.abstractmethod
    async def inbound_counts(self) -> dict[tuple[str, str], int]:
        """Inbound events the ledger still keeps, by (source, state)."""

    @abc.abstractmethod
    async def recent_inbound(
        self,
        *,
        state: str | None = None,
        source: str | None = None,
        before: tuple[float, str, str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """A page of inbound CRM events, newest first, in the API shape.

        ``before`` is the (received_at, source, key) of the previous page's last row: the
        keyset cursor of the next page.
        """

    @abc.abstractmethod
    async def last_errors(self, connectors: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each named connector's most recent delivery error (``error``, ``status``, ``at``);
        a connector with none is absent."""

    @abc.abstractmethod
    async def per_minute(self, since: float) -> dict[str, dict[int, int]]:
        """Enrichments that ended (``enrichments``) and deliveries acknowledged
        (``deliveries``) from ``since`` on, by minute number (Unix seconds // 60)."""

    @abc.abstractmethod
    async def progress(self) -> Progress:
        """How many enrichments ended and how many deliveries were acknowledged."""


def backend_for(config: settings_mod.LedgerSettings) -> str:
    """The backend ``config`` selects: ``postgres`` for a ``ledger.url``, else ``sqlite``."""
    return "postgres" if config.url.get_secret_value() else "sqlite"


def where(config: settings_mod.LedgerSettings) -> str:
    """Where ``config``'s ledger is, for messages: the SQLite path, or the PostgreSQL URL
    without its password (``postgresql://user@host:port/db``)."""
    url = config.url.get_secret_value()
    if not url:
        return str(config.path)
    parts = urllib.parse.urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


async def migrate(config: settings_mod.LedgerSettings) -> str:
    """Bring ``config``'s ledger to this code's schema; returns one line saying what it did.

    SQLite ledgers migrate when opened, so this opens one; PostgreSQL ones only here, under an
    advisory lock that makes running it from several replicas at once safe.
    """
    if backend_for(config) == "sqlite":
        store = await open(config, exclusive=False)
        await store.close()
        return f"ledger {config.path}: schema up to date"
    before, after = await _backend_module("postgres").migrate(config)
    if before == after:
        return f"ledger {where(config)}: schema version {after}, up to date"
    return f"ledger {where(config)}: schema version {before} -> {after}"


def _backend_module(name: str) -> Any:
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        # The PostgreSQL driver is an extra: say which one, not a traceback.
        raise errors.ConfigError(
            f"the {name} ledger needs `pip install 'lance-bridge[{name}]'` ({exc.name} is missing)"
        ) from exc


async def open(
    config: settings_mod.LedgerSettings | Path,
    *,
    router: outbox.Router | None = None,
    exclusive: bool = True,
    initialize: bool = False,
    backend: str | None = None,
) -> Ledger:
    """Open (creating and migrating) the ledger ``config`` names, with the backend it selects.

    Args:
        config: The ``[ledger]`` settings, or just the path of a SQLite ledger.
        router: Decides which deliveries a completion causes (default: none).
        exclusive: Take the lock that keeps a second ``serve`` away from this ledger.
        initialize: Start a new ledger where an empty (truncated-looking) one is found.
        backend: A name of :data:`BACKENDS`; by default the one ``config`` selects.

    Raises:
        errors.LedgerError: the ledger cannot be opened (locked, too new, unreadable).
    """
    if isinstance(config, Path):
        config = settings_mod.LedgerSettings(path=config)
    module = _backend_module(backend or backend_for(config))
    opened: Ledger = await module.open(
        config, router=router or outbox.Router(()), exclusive=exclusive, initialize=initialize
    )
    return opened

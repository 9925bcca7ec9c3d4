"""The SQLite ledger: a file (WAL) that records every enrichment, target and delivery.

The embedded default backend of :class:`bridge.ledger.Ledger`. Its SQL lives in this module and
its ``sqlite_*`` siblings: :mod:`~bridge.ledger.sqlite_db` (connections, file, health, the one
seam translating sqlite3 errors), :mod:`~bridge.ledger.sqlite_file` (lock and migrations),
:mod:`~bridge.ledger.sqlite_rows` (the hot writes), :mod:`~bridge.ledger.sqlite_outbox`
(delivery rows), :mod:`~bridge.ledger.sqlite_match` (matching CRM records to Lance people) and
:mod:`~bridge.ledger.sqlite_reads` (API, CLI and metrics reads).
"""

from __future__ import annotations

import json
import sqlite3
import typing
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from bridge import batching, ledger, model, outbox
from bridge import settings as settings_mod
from bridge.ledger import (
    events,
    match_rows,
    sqlite_db,
    sqlite_match,
    sqlite_outbox,
    sqlite_rows,
)

# The states' plain string values, bound once: read for every row of the hot paths, where an
# enum attribute lookup (Python 3.11) or a str subclass bound as an SQL parameter (sqlite3
# adapts those one by one) would cost more than the string did.
_PENDING = model.EnrichmentState.PENDING.value
_TERMINAL = frozenset(state.value for state in model.TERMINAL)


async def open(
    config: settings_mod.LedgerSettings,
    *,
    router: outbox.Router,
    exclusive: bool = True,
    initialize: bool = False,
) -> SQLiteLedger:
    """Open (creating and migrating) the SQLite ledger at ``ledger.path``.

    See :meth:`bridge.ledger.sqlite_db.Db.open` for what is refused and why.
    """
    db = await sqlite_db.Db.open(
        config.path,
        synchronous=config.synchronous,
        exclusive=exclusive,
        initialize=initialize,
    )
    store = SQLiteLedger(db, router)
    store.replica = ledger.replica_id(config)
    return store


# A manual trigger naming a Lance id settles the ambiguous or unmatched events of its records.
_SETTLE = (
    "UPDATE inbound SET state = 'matched', entity_id = ?, detail = ?, updated_at = ?"
    " WHERE source = ? AND object_type = ? AND object_id = ?"
    " AND state IN ('ambiguous', 'unmatched')"
)


class _Request(typing.NamedTuple):
    """What one caller of the accept group commit stores."""

    tasks: Sequence[model.Task]
    now: float
    source: str = ""
    events: Sequence[model.Inbound] = ()
    settles: bool = False


# The meta key of the one replica a SQLite file has (the ``serve`` holding its lock).
_REPLICA_META = "replica"


class SQLiteLedger(sqlite_match.Matching, ledger.Ledger):
    """The SQLite ledger. Open it with :func:`open` (or :func:`bridge.ledger.open`).

    The job verbs are here; the reads for the API, the CLI and the metrics come from
    :class:`~bridge.ledger.sqlite_reads.Reads`.
    """

    def __init__(self, db: sqlite_db.Db, router: outbox.Router) -> None:
        self.path = db.path
        self.router = router
        self.db = db  # SQLite only: tests and the bench baselines reach the file through it
        self._accepts = batching.GroupCommit(self._accept_groups)
        self._applies = batching.GroupCommit(self._apply_groups)

    async def close(self) -> None:
        """Close both connections and release the file lock."""
        await self._accepts.close()
        await self._applies.close()
        await self.db.close()

    # -- replicas -------------------------------------------------------------------------

    async def heartbeat(self, now: float) -> None:
        """Record the one ``serve`` of this file as alive; SQLite has no claims to renew."""
        known = await self._replica()
        started = known.started_at if known and known.id == self.replica else now
        data = {"id": self.replica, "started_at": started, "last_heartbeat": now}
        await self.set_meta(_REPLICA_META, orjson.dumps(data).decode())

    async def replicas(self) -> list[ledger.Replica]:
        """The one ``serve`` that last ran on this file (none before its first heartbeat)."""
        known = await self._replica()
        return [known] if known else []

    async def _replica(self) -> ledger.Replica | None:
        text = await self.get_meta(_REPLICA_META)
        if not text:
            return None
        data = orjson.loads(text)
        return ledger.Replica(
            str(data["id"]), float(data["started_at"]), float(data["last_heartbeat"]), 0
        )

    # -- health ---------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why the ledger cannot store work now (``None`` when it can); no path, no data."""
        return self.db.problem

    def check(self) -> str | None:
        """:attr:`problem`, after checking the file at the path is still the one opened."""
        return self.db.check()

    async def watch(self) -> str | None:
        """Notice a lost file; after a failure, try a write and recover if it succeeds."""
        return await self.db.watch()

    # -- accepting work -------------------------------------------------------------------

    async def accept(self, tasks: Sequence[model.Task], now: float) -> list[model.Accepted]:
        """Record ``tasks`` durably; a task already in flight attaches its targets to that row.

        Concurrent calls share one transaction (group commit); each returns once its tasks are
        committed.

        Returns:
            For each task, in order, its row and whether this call created it.
        """
        return await self._accepts.submit(_Request(tasks, now))

    async def accept_trigger(
        self,
        tasks: Sequence[model.Task],
        source: str,
        events: Sequence[model.Inbound],
        now: float,
    ) -> list[model.Accepted]:
        """One ``POST /v1/triggers`` request in one transaction: its tasks, the settling of
        the records they name and its ``match`` events.

        Shares the group commit of :meth:`accept`: a request naming CRM records or matching
        people commits with the concurrent ones, all of each or none.
        """
        return await self._accepts.submit(_Request(tasks, now, source, events, settles=True))

    async def _accept_groups(self, groups: Sequence[_Request]) -> list[list[model.Accepted]]:
        accepting = [(group.tasks, group.now) for group in groups]
        tasks = [task for group in groups for task in group.tasks]
        settled = [
            (entity_id, match_rows.SETTLED_BY_TRIGGER, group.now, *record)
            for group in groups
            if group.settles
            for record, entity_id in match_rows.settling(group.tasks).items()
        ]
        received = [group for group in groups if group.events]
        if (
            len(tasks) <= sqlite_rows.INSERT_CHUNK
            and not any(task.targets for task in tasks)
            and not received
        ):
            # One INSERT ... RETURNING is atomic by itself: no BEGIN and COMMIT round trips
            # to the ledger's thread (the usual single-task trigger). What follows it only
            # reads, under the same lock, so no other write can come between.
            async with self.db.write_lock:
                with self.db.translated():
                    accepted = await sqlite_rows.accept_in(self.db.writer, accepting)
                self.db.stored()
                return accepted
        async with self.db.transaction() as db:
            accepted = await sqlite_rows.accept_in(db, accepting)
            if settled:
                await db.executemany(_SETTLE, settled)
            for group in received:
                unique = model.distinct(group.events)
                fresh = await sqlite_rows.insert_inbound(db, group.source, unique, group.now)
                await sqlite_rows.accept_in(
                    db, [(event.tasks, group.now) for event in unique if event.key in fresh]
                )
            return accepted

    # -- inbound CRM events ---------------------------------------------------------------

    async def receive(
        self, source: str, events: Sequence[model.Inbound], now: float
    ) -> model.Received:
        """Record the events a CRM sent and accept their tasks, in one transaction.

        An event whose ``key`` this source already sent (a retry, a duplicate) changes
        nothing, so it can never trigger a second paid enrichment.
        """
        unique = model.distinct(events)
        async with self.db.transaction() as db:
            fresh = await sqlite_rows.insert_inbound(db, source, unique, now)
            new = [event for event in unique if event.key in fresh]
            accepted = await sqlite_rows.accept_in(db, [(event.tasks, now) for event in new])
        return model.Received.of(len(events), new, accepted)

    async def lookups(self, source: str, limit: int) -> list[tuple[str, str, str]]:
        """(key, objectType, objectId) of events waiting for a record read, oldest first."""
        rows = await self.db.fetch(
            "SELECT key, object_type, object_id FROM inbound"
            " WHERE source = ? AND state = 'lookup' ORDER BY received_at LIMIT ?",
            (source, limit),
            writer=True,
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def resolve(
        self, source: str, resolved: Sequence[model.Inbound], now: float
    ) -> model.Received:
        """Settle looked-up events: accept their tasks or record why they were skipped."""
        if not resolved:
            return model.Received()
        async with self.db.transaction() as db:
            await db.executemany(
                "UPDATE inbound SET state = ?, detail = ?, updated_at = ?, match_key = ?,"
                " request = ? WHERE source = ? AND key = ? AND state = 'lookup'",
                [
                    (event.state, event.detail, now, *event.match_columns, source, event.key)
                    for event in resolved
                ],
            )
            accepted = await sqlite_rows.accept_in(db, [(event.tasks, now) for event in resolved])
        return model.Received.of(len(resolved), resolved, accepted)

    async def prune_inbound(self, before: float) -> int:
        """Forget settled inbound events received before ``before``; returns how many."""
        async with self.db.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM inbound WHERE received_at < ? AND state NOT IN ('lookup', 'matching')",
                (before,),
            )
        return int(cursor.rowcount)

    # -- trigger job ----------------------------------------------------------------------

    async def queued(self, limit: int) -> dict[str, list[ledger.QueuedRow]]:
        """Queued rows to trigger, oldest first, grouped by field."""
        rows = await self.db.fetch(
            "SELECT id, field, entity_id, trigger_sent_at FROM enrichments"
            " WHERE state = 'queued' ORDER BY id LIMIT ?",
            (limit,),
            writer=True,
        )
        grouped: dict[str, list[ledger.QueuedRow]] = {}
        for row_id, field, entity_id, sent_at in rows:
            grouped.setdefault(field, []).append(ledger.QueuedRow(row_id, entity_id, sent_at))
        return grouped

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        """Record, before a trigger request goes out, that it names ``ids``.

        If the process dies before Lance's answer is stored, the trigger job finds these rows
        still queued but marked, and asks Lance for their status (free) before triggering
        again: a record that has meanwhile failed would otherwise be charged twice.
        """
        async with self.db.transaction() as db:
            await db.execute(
                "UPDATE enrichments SET trigger_sent_at = ?"
                " WHERE state = 'queued' AND id IN (SELECT value FROM json_each(?))",
                (now, json.dumps(list(ids))),
            )

    # -- poll job -------------------------------------------------------------------------

    async def due_for_poll(
        self, now: float, limit: int, *, tick: bool = False
    ) -> list[ledger.PollRow]:
        """Pending rows whose ``next_poll_at`` has come, most overdue first.

        ``tick`` is for replicas sharing a ledger; a SQLite file has one.
        """
        del tick
        rows = await self.db.fetch(
            "SELECT id, entity_type, entity_id, field, started_at, polls, lance_id IS NOT NULL"
            " FROM enrichments"
            " WHERE state = 'pending' AND next_poll_at <= ? ORDER BY next_poll_at LIMIT ?",
            (now, limit),
            writer=True,
        )
        return [ledger.PollRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    async def apply(self, changes: Sequence[ledger.Change], now: float) -> None:
        """Write new states durably, with the events terminal states cause.

        A row that finished with data waits for its values (``needs_fetch``) before its events
        are written; every other terminal state writes its events now. Concurrent calls share
        one transaction (group commit), so a caller's changes commit together or not at all.
        """
        if changes:
            await self._applies.submit((changes, now))

    async def _apply_groups(
        self, groups: Sequence[tuple[Sequence[ledger.Change], float]]
    ) -> list[None]:
        moving = [(c, now) for changes, now in groups for c in changes if c.state in _TERMINAL]
        staying = [(c, now) for changes, now in groups for c in changes if c.state == _PENDING]
        async with self.db.transaction() as db:
            # `state` is only written when it changes: each write of it costs index updates.
            still = [sqlite_rows.pending_params(c, n) for c, n in staying if not c.from_queue]
            await sqlite_rows.update_rows(
                db, sqlite_rows.STILL_PENDING, sqlite_rows.PENDING_COLUMNS, still
            )
            queued = [sqlite_rows.pending_params(c, n) for c, n in staying if c.from_queue]
            await sqlite_rows.update_rows(
                db, sqlite_rows.TO_PENDING, sqlite_rows.PENDING_COLUMNS, queued
            )
            terminal = [sqlite_rows.terminal_params(c, n) for c, n in moving]
            await sqlite_rows.update_rows(
                db, sqlite_rows.TO_TERMINAL, sqlite_rows.TERMINAL_COLUMNS, terminal
            )
            ready = [(c.id, now) for c, now in moving if not sqlite_rows.needs_fetch(c)]
            await sqlite_outbox.emit(db, self.router, ready)
        return [None] * len(groups)

    # -- fetch job ------------------------------------------------------------------------

    async def awaiting_values(
        self, limit: int, *, hold_after: float = float("inf")
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        """Finished-with-data rows, grouped by entity so each entity is read once.

        A row that finished after ``hold_after`` while another field of its entity is still in
        flight is left for a later run: the entity is then read once for both.
        """
        rows = await self.db.fetch(
            "SELECT id, entity_type, entity_id, field FROM enrichments e WHERE needs_fetch = 1"
            " AND NOT (finished_at > ? AND EXISTS (SELECT 1 FROM enrichments o"
            " WHERE o.entity_id = e.entity_id AND o.entity_type = e.entity_type"
            " AND o.state IN ('queued', 'pending')))"
            " ORDER BY id LIMIT ?",
            (hold_after, limit),
            writer=True,
        )
        grouped: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for row_id, entity_type, entity_id, field in rows:
            grouped.setdefault((entity_type, entity_id), []).append((row_id, field))
        return grouped

    async def store_values(self, values: Sequence[tuple[int, dict[str, Any]]], now: float) -> None:
        """Store the values read for finished rows and write their events, in one transaction."""
        if not values:
            return
        async with self.db.transaction() as db:
            await db.executemany(
                "UPDATE enrichments SET enriched = ?, needs_fetch = 0, updated_at = ?"
                " WHERE id = ? AND needs_fetch = 1",
                [(json.dumps(found), now, row_id) for row_id, found in values],
            )
            await sqlite_outbox.emit(db, self.router, [(row_id, now) for row_id, _ in values])

    # -- delivery job ---------------------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[model.Delivery]:
        """Pending deliveries whose next attempt has come, oldest due first.

        Read through the partial index of pending rows in due order: left to choose, SQLite
        takes the (state, connector, id) index and sorts every pending row for each batch,
        which makes draining a backlog quadratic (at 20,000 pending, 20 ms a batch of 1,000
        against 4-9 ms through this index).
        """
        rows = await self.db.fetch(
            f"SELECT {sqlite_outbox.DELIVERY_COLUMNS}"  # noqa: S608 - constant columns
            " FROM deliveries INDEXED BY deliveries_due"
            " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
            writer=True,
        )
        return [events.delivery_of(row) for row in rows]

    async def defer(self, ids: Sequence[int], until: float) -> None:
        """Put pending deliveries off until ``until`` (no attempt is counted)."""
        async with self.db.transaction() as db:
            await db.execute(
                "UPDATE deliveries SET next_attempt_at = ?"
                " WHERE state = 'pending' AND id IN (SELECT value FROM json_each(?))",
                (until, json.dumps(list(ids))),
            )

    async def records_in_flight(
        self, connector: str, records: Iterable[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Of ``records`` (objectType, objectId), those with an enrichment for ``connector``
        still in flight or awaiting its values."""
        wanted = json.dumps([list(record) for record in records])
        rows = await self.db.fetch(
            # CROSS JOIN keeps the records outermost: SQLite would otherwise walk every target
            # of the connector once per record.
            "WITH r (object_type, object_id) AS MATERIALIZED"
            " (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
            " SELECT DISTINCT t.object_type, t.object_id FROM r CROSS JOIN targets t"
            " ON t.connector = ? AND t.object_type = r.object_type"
            " AND t.object_id = r.object_id AND t.object_id != ''"
            " JOIN enrichments e ON e.id = t.enrichment_id"
            " WHERE e.state IN ('queued', 'pending') OR e.needs_fetch = 1",
            (wanted, connector),
            writer=True,
        )
        return {(str(r[0]), str(r[1])) for r in rows}

    async def record_attempts(self, results: Sequence[ledger.Attempt], now: float) -> None:
        """Write the outcome of one round of delivery attempts in one transaction."""
        async with self.db.transaction() as db:
            await db.executemany(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ?, response_status = ?, updated_at = ?"
                " WHERE id = ? AND state = 'pending'",
                [
                    (a.state, a.next_attempt_at, a.error, a.status, now, a.delivery_id)
                    for a in results
                ],
            )

    async def replay(self, ids: Iterable[int], now: float) -> list[int]:
        """Make dead deliveries pending again, due now; returns the ids that were dead."""
        async with self.db.transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " last_error = NULL, updated_at = ?"
                " WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?)) RETURNING id",
                (now, now, json.dumps(list(ids))),
            )
        return sorted(int(row[0]) for row in rows)

    # -- meta and inspection ---------------------------------------------------------------

    async def set_meta(self, key: str, value: str) -> None:
        """Store a value in the ``meta`` table."""
        async with self.db.transaction() as db:
            await db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read-only query on the reader connection.

        SQLite only, not part of :class:`~bridge.ledger.Ledger`: for tests and the bench,
        which look inside this backend's file.
        """
        return await self.db.fetch(sql, params)

"""The ledger: a SQLite file (WAL) that records every enrichment, target and delivery.

The ledger owns two connections: one writer, serialized by a lock so each transaction is one
unit (a state change commits with the events it causes), and one reader for the HTTP API and
the CLI, which WAL lets run beside the writer. It is the only module that speaks SQL; sqlite3
errors are translated to :class:`~bridge.errors.LedgerError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import sqlite3
import typing
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from bridge import batching, errors, model, outbox

logger = logging.getLogger(__name__)
BUSY_TIMEOUT_MS = 10_000
# Page caches: the writer's holds the hot index pages of a large ledger; RSS stays bounded.
WRITER_CACHE_KIB = 32_768
READER_CACHE_KIB = 8_192
# SQLite's bound-parameter limit is 32766; stay well under it.
MAX_PARAMS = 30_000
# How often the ledger watch job checks that the file is still there and, after a failure,
# whether it can be written again.
WATCH_INTERVAL_S = 1.0
# sqlite3 result codes that mean the file, not the statement, is at fault: the ledger is then
# unavailable (503, /readyz failing) rather than the request being a bug (500).
_UNAVAILABLE_CODES = frozenset(
    (
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOMEM,
    )
)
# The states' plain string values, bound once: read for every row of the hot paths, where an
# enum attribute lookup (Python 3.11) or a str subclass bound as an SQL parameter (sqlite3
# adapts those one by one) would cost more than the string did.
_QUEUED = model.EnrichmentState.QUEUED.value
_PENDING = model.EnrichmentState.PENDING.value
_FINISHED = model.EnrichmentState.FINISHED.value
_TERMINAL = frozenset(state.value for state in model.TERMINAL)
_LOOKUP = model.InboundState.LOOKUP.value
_SKIPPED = model.InboundState.SKIPPED.value


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


class Ledger:
    """The SQLite ledger. Open it with :meth:`open`; close it with :meth:`close`.

    It keeps a descriptor of the database file itself: the ``serve`` lock is taken on it, and
    comparing it with what the path names now tells a deleted or replaced file.
    """

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        file: _File,
        router: outbox.Router,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._file: _File | None = file
        self._problem: str | None = None  # why the ledger is unavailable now, if it is
        self._lost: str | None = None  # set once the file at the path is no longer ours
        self._write_lock = asyncio.Lock()
        self.router = router
        self._accepts = batching.GroupCommit(self._accept_groups)
        self._applies = batching.GroupCommit(self._apply_groups)

    def __repr__(self) -> str:
        return f"<Ledger {self.path}>"

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        router: outbox.Router | None = None,
        synchronous: str = "normal",
        exclusive: bool = True,
        initialize: bool = False,
    ) -> Ledger:
        """Open (creating and migrating) the ledger at ``path``.

        A path where no file exists gets a new ledger. An existing empty file is refused
        unless ``initialize``: it is most likely a ledger that was truncated, and starting
        afresh in it would silently forget everything it held.

        Args:
            path: The SQLite file.
            router: Decides which deliveries a completion causes (default: none).
            synchronous: SQLite's ``synchronous`` in WAL mode: ``normal`` survives a process
                crash, ``full`` also a power loss.
            exclusive: Take the lock that keeps a second ``serve`` away from this file, by
                whatever path (hard link, symlink) it is named.
            initialize: Start a new ledger in an existing empty file (``serve --init-ledger``).

        Raises:
            errors.LedgerLockedError: another process holds the lock.
            errors.LedgerTooNewError: the file was written by a newer version.
            errors.LedgerError: the file is empty, or not a ledger SQLite can read.
        """
        file = _File.open(path, exclusive=exclusive)
        opened: list[aiosqlite.Connection] = []
        try:
            if not file.created and not initialize:
                _refuse_empty(path, file.fd)
            opened.append(await _connect(path, synchronous, WRITER_CACHE_KIB))
            await _migrate(opened[0], path)
            opened.append(await _connect(path, synchronous, READER_CACHE_KIB))
        except BaseException:
            # Close what was opened: a connection left open keeps its thread alive. The file's
            # descriptor goes last: closing it drops SQLite's own POSIX locks on the file.
            for db in opened:
                await db.close()
            file.release()
            raise
        writer, reader = opened
        return cls(path, writer, reader, file, router or outbox.Router(()))

    async def close(self) -> None:
        """Close both connections and release the file lock."""
        await self._accepts.close()
        await self._applies.close()
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()
        if self._file is not None:
            self._file.release()
            self._file = None

    # -- health ---------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why the ledger cannot store work now (``None`` when it can); no path, no data."""
        return self._lost or self._problem

    def check(self) -> str | None:
        """:attr:`problem`, after checking the file at the path is still the one opened.

        Two ``stat`` calls: cheap enough for every readiness check and every commit.
        """
        if self._lost is None:
            moved = self._file_moved()
            if moved is not None:
                self._lose(moved)
        return self.problem

    async def watch(self) -> str | None:
        """The ledger watch job's single pass: notice a lost file; after a failure, try a
        write and recover if it succeeds.

        Raises:
            errors.LedgerLostError: the file was deleted or replaced; the process should exit.
        """
        if self.check() is None:
            return None
        if self._lost is not None:
            raise errors.LedgerLostError(f"{self.path}: {self._lost}")
        with contextlib.suppress(errors.LedgerUnavailableError):
            async with self.transaction() as db:
                # A page's worth written and removed: it fails while the disk (or
                # max_page_count) is full, and leaves nothing behind when it succeeds.
                await db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('write_probe', zeroblob(8192))"
                )
                await db.execute("DELETE FROM meta WHERE key = 'write_probe'")
            await self._fetch("SELECT count(*) FROM meta")
        return self.problem

    def _file_moved(self) -> str | None:
        if self._file is None:
            return None  # closed: nothing of ours to compare
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return "the ledger file was deleted"
        except OSError as exc:
            return f"the ledger file cannot be checked: {exc.strerror}"
        ours = os.fstat(self._file.fd)
        if (named.st_dev, named.st_ino) != (ours.st_dev, ours.st_ino):
            return "the ledger file was replaced by another file"
        if ours.st_nlink == 0:
            return "the ledger file was deleted"
        return None

    def _lose(self, why: str) -> None:
        self._lost = why
        logger.error(
            "ledger %s: %s while open; what it held went with that file, and nothing has"
            " been accepted since (503); exiting so that a restart opens the file now at the"
            " path",
            self.path,
            why,
            extra={"event": "ledger.lost", "ledger": str(self.path)},
        )

    def _unavailable(self, exc: sqlite3.Error) -> errors.LedgerUnavailableError:
        """The translation of a driver error that means the file is at fault (logged once)."""
        why = str(exc)
        if self._problem is None:
            logger.error(
                "ledger %s unavailable: %s; writes answer 503 and /readyz fails until it can"
                " be written again",
                self.path,
                why,
                extra={"event": "ledger.unavailable", "ledger": str(self.path)},
            )
        self._problem = why
        return errors.LedgerUnavailableError(f"{self.path}: {why}")

    def _recovered(self) -> None:
        if self._problem is not None:
            self._problem = None
            logger.warning(
                "ledger %s writable again",
                self.path,
                extra={"event": "ledger.recovered", "ledger": str(self.path)},
            )

    def _stored(self) -> None:
        """After a commit: it only counts if it went to the file at the path."""
        self.check()
        if self._lost is not None:
            raise errors.LedgerLostError(f"{self.path}: {self._lost}")
        self._recovered()

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """The one seam where sqlite3 errors become :class:`errors.LedgerUnavailableError`."""
        if self._lost is not None:
            raise errors.LedgerLostError(f"{self.path}: {self._lost}")
        try:
            yield
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", -1) & 0xFF not in _UNAVAILABLE_CODES:
                raise  # a statement the ledger got wrong: a bug, not an unusable file
            raise self._unavailable(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        async with self._write_lock:
            with self._translated():
                try:
                    await self._writer.execute("BEGIN IMMEDIATE")
                    yield self._writer
                    await self._writer.commit()
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await self._writer.rollback()
                    raise
            self._stored()

    # -- accepting work -------------------------------------------------------------------

    async def accept(self, tasks: Sequence[model.Task], now: float) -> list[model.Accepted]:
        """Record ``tasks`` durably; a task already in flight attaches its targets to that row.

        Concurrent calls share one transaction (group commit); each returns once its tasks are
        committed.

        Returns:
            For each task, in order, its row and whether this call created it.
        """
        return await self._accepts.submit((tasks, now))

    async def _accept_groups(
        self, groups: Sequence[tuple[Sequence[model.Task], float]]
    ) -> list[list[model.Accepted]]:
        tasks = [task for group, _ in groups for task in group]
        if len(tasks) <= _INSERT_CHUNK and not any(task.targets for task in tasks):
            # One INSERT ... RETURNING is atomic by itself: no BEGIN and COMMIT round trips
            # to the ledger's thread (the usual single-task trigger). What follows it only
            # reads, under the same lock, so no other write can come between.
            async with self._write_lock:
                with self._translated():
                    accepted = await _accept_in(self._writer, groups)
                self._stored()
                return accepted
        async with self.transaction() as db:
            return await _accept_in(db, groups)

    # -- inbound CRM events ---------------------------------------------------------------

    async def receive(
        self, source: str, events: Sequence[model.Inbound], now: float
    ) -> model.Received:
        """Record the events a CRM sent and accept their tasks, in one transaction.

        An event whose ``key`` this source already sent (a retry, a duplicate) changes
        nothing, so it can never trigger a second paid enrichment.
        """
        unique = list({event.key: event for event in events}.values())
        async with self.transaction() as db:
            fresh = await _insert_inbound(db, source, unique, now)
            new = [event for event in unique if event.key in fresh]
            accepted = await _accept_in(db, [(event.tasks, now) for event in new])
        return model.Received(
            events=len(events),
            duplicates=len(events) - len(new),
            skipped=sum(event.state == _SKIPPED for event in new),
            lookups=sum(event.state == _LOOKUP for event in new),
            accepted=tuple(row for rows in accepted for row in rows),
        )

    async def lookups(self, source: str, limit: int) -> list[tuple[str, str, str]]:
        """(key, objectType, objectId) of events waiting for a record read, oldest first."""
        rows = await self._fetch(
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
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE inbound SET state = ?, detail = ?, updated_at = ?"
                " WHERE source = ? AND key = ? AND state = 'lookup'",
                [(event.state, event.skipped, now, source, event.key) for event in resolved],
            )
            accepted = await _accept_in(db, [(event.tasks, now) for event in resolved])
        return model.Received(
            events=len(resolved),
            skipped=sum(event.state == _SKIPPED for event in resolved),
            accepted=tuple(row for rows in accepted for row in rows),
        )

    async def prune_inbound(self, before: float) -> int:
        """Forget settled inbound events received before ``before``; returns how many."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM inbound WHERE received_at < ? AND state != 'lookup'", (before,)
            )
        return int(cursor.rowcount)

    # -- trigger job ----------------------------------------------------------------------

    async def queued(self, limit: int) -> dict[str, list[QueuedRow]]:
        """Queued rows to trigger, oldest first, grouped by field."""
        rows = await self._fetch(
            "SELECT id, field, entity_id, trigger_sent_at FROM enrichments"
            " WHERE state = 'queued' ORDER BY id LIMIT ?",
            (limit,),
            writer=True,
        )
        grouped: dict[str, list[QueuedRow]] = {}
        for row_id, field, entity_id, sent_at in rows:
            grouped.setdefault(field, []).append(QueuedRow(row_id, entity_id, sent_at))
        return grouped

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        """Record, before a trigger request goes out, that it names ``ids``.

        If the process dies before Lance's answer is stored, the trigger job finds these rows
        still queued but marked, and asks Lance for their status (free) before triggering
        again: a record that has meanwhile failed would otherwise be charged twice.
        """
        async with self.transaction() as db:
            await db.execute(
                "UPDATE enrichments SET trigger_sent_at = ?"
                " WHERE state = 'queued' AND id IN (SELECT value FROM json_each(?))",
                (now, json.dumps(list(ids))),
            )

    # -- poll job -------------------------------------------------------------------------

    async def due_for_poll(self, now: float, limit: int) -> list[PollRow]:
        """Pending rows whose ``next_poll_at`` has come, most overdue first."""
        rows = await self._fetch(
            "SELECT id, entity_type, entity_id, field, started_at, polls, lance_id IS NOT NULL"
            " FROM enrichments"
            " WHERE state = 'pending' AND next_poll_at <= ? ORDER BY next_poll_at LIMIT ?",
            (now, limit),
            writer=True,
        )
        return [PollRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    async def apply(self, changes: Sequence[Change], now: float) -> None:
        """Write new states durably, with the events terminal states cause.

        A row that finished with data waits for its values (``needs_fetch``) before its events
        are written; every other terminal state writes its events now. Concurrent calls share
        one transaction (group commit), so a caller's changes commit together or not at all.
        """
        if changes:
            await self._applies.submit((changes, now))

    async def _apply_groups(self, groups: Sequence[tuple[Sequence[Change], float]]) -> list[None]:
        moving = [(c, now) for changes, now in groups for c in changes if c.state in _TERMINAL]
        staying = [(c, now) for changes, now in groups for c in changes if c.state == _PENDING]
        async with self.transaction() as db:
            # `state` is only written when it changes: each write of it costs index updates.
            still = [_pending_params(c, n) for c, n in staying if not c.from_queue]
            await _update_rows(db, _STILL_PENDING, _PENDING_COLUMNS, still)
            queued = [_pending_params(c, n) for c, n in staying if c.from_queue]
            await _update_rows(db, _TO_PENDING, _PENDING_COLUMNS, queued)
            terminal = [_terminal_params(c, n) for c, n in moving]
            await _update_rows(db, _TO_TERMINAL, _TERMINAL_COLUMNS, terminal)
            ready = [(c.id, now) for c, now in moving if not _needs_fetch(c)]
            await outbox.emit(db, self.router, ready)
        return [None] * len(groups)

    # -- fetch job ------------------------------------------------------------------------

    async def awaiting_values(
        self, limit: int, *, hold_after: float = float("inf")
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        """Finished-with-data rows, grouped by entity so each entity is read once.

        A row that finished after ``hold_after`` while another field of its entity is still in
        flight is left for a later run: the entity is then read once for both.
        """
        rows = await self._fetch(
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
        async with self.transaction() as db:
            await db.executemany(
                "UPDATE enrichments SET enriched = ?, needs_fetch = 0, updated_at = ?"
                " WHERE id = ? AND needs_fetch = 1",
                [(json.dumps(found), now, row_id) for row_id, found in values],
            )
            await outbox.emit(db, self.router, [(row_id, now) for row_id, _ in values])

    # -- delivery job ---------------------------------------------------------------------

    async def due_deliveries(self, now: float, limit: int) -> list[outbox.Delivery]:
        """Pending deliveries whose next attempt has come, oldest due first."""
        rows = await self._fetch(
            f"SELECT {outbox.DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - constant columns
            " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
            writer=True,
        )
        return [outbox.Delivery.from_row(row) for row in rows]

    async def defer(self, ids: Sequence[int], until: float) -> None:
        """Put pending deliveries off until ``until`` (no attempt is counted)."""
        async with self.transaction() as db:
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
        rows = await self._fetch(
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

    async def record_attempts(self, results: Sequence[outbox.Attempt], now: float) -> None:
        """Write the outcome of one round of delivery attempts in one transaction."""
        async with self.transaction() as db:
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
        async with self.transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " last_error = NULL, updated_at = ?"
                " WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?)) RETURNING id",
                (now, now, json.dumps(list(ids))),
            )
        return sorted(int(row[0]) for row in rows)

    # -- reading --------------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read-only query on the reader connection."""
        return await self._fetch(sql, params)

    async def get_meta(self, key: str) -> str | None:
        """A value from the ``meta`` table."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store a value in the ``meta`` table."""
        async with self.transaction() as db:
            await db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    async def _fetch(
        self, sql: str, params: Sequence[Any] = (), *, writer: bool = False
    ) -> list[sqlite3.Row]:
        # Job queries read through the writer (under its lock) so they see their own commits
        # at once; API reads use the reader and never wait for a write transaction.
        if writer:
            async with self._write_lock:
                with self._translated():
                    return list(await self._writer.execute_fetchall(sql, params))
        with self._translated():
            return list(await self._reader.execute_fetchall(sql, params))


def _new_row(task: model.Task, now: float) -> tuple[Any, ...]:
    key = task.key_bytes()
    if task.mode == "track":
        return (*task.key, key, "track", _PENDING, now, now, now, now)
    return (*task.key, key, "trigger", _QUEUED, now, now, None, None)


def _needs_fetch(change: Change) -> bool:
    return change.state == _FINISHED and bool((change.record or {}).get("dataFound"))


# State updates take their rows as one VALUES list per statement (c.column1 = the row id):
# the driver binds a whole chunk at once and SQLite then runs without the GIL, instead of
# taking it back for every row as executemany does, which stalls against a busy event loop.
_PENDING_COLUMNS = 5  # id, record, lance_id, next_poll_at, now
_STILL_PENDING = (
    "UPDATE enrichments SET record = coalesce(c.column2, record),"
    " lance_id = coalesce(c.column3, lance_id), next_poll_at = c.column4, polls = polls + 1,"
    " updated_at = c.column5, started_at = coalesce(started_at, c.column5)"
    " FROM (VALUES {rows}) AS c WHERE enrichments.id = c.column1 AND state = 'pending'"
)
_TO_PENDING = (
    "UPDATE enrichments SET state = 'pending', record = coalesce(c.column2, record),"
    " lance_id = coalesce(c.column3, lance_id), next_poll_at = c.column4, polls = polls + 1,"
    " updated_at = c.column5, started_at = coalesce(started_at, c.column5)"
    " FROM (VALUES {rows}) AS c WHERE enrichments.id = c.column1 AND state = 'queued'"
)
_TERMINAL_COLUMNS = 8  # id, state, record, lance_id, data_found, error, needs_fetch, now
_TO_TERMINAL = (
    "UPDATE enrichments SET state = c.column2, record = coalesce(c.column3, record),"
    " lance_id = coalesce(c.column4, lance_id), data_found = coalesce(c.column5, data_found),"
    " error = coalesce(c.column6, error), needs_fetch = c.column7, next_poll_at = NULL,"
    " polls = polls + 1, updated_at = c.column8, finished_at = c.column8,"
    " started_at = coalesce(started_at, c.column8)"
    " FROM (VALUES {rows}) AS c WHERE enrichments.id = c.column1"
    " AND state IN ('queued', 'pending')"
)


def _pending_params(change: Change, now: float) -> tuple[Any, ...]:
    record = change.record
    return (
        change.id,
        None if record is None else orjson.dumps(record).decode(),
        None if record is None else record.get("id"),
        change.next_poll_at,
        now,
    )


def _terminal_params(change: Change, now: float) -> tuple[Any, ...]:
    record = change.record
    found = None if record is None else record.get("dataFound")
    return (
        change.id,
        change.state,
        None if record is None else orjson.dumps(record).decode(),
        None if record is None else record.get("id"),
        None if found is None else int(bool(found)),
        change.error,
        int(_needs_fetch(change)),
        now,
    )


async def _update_rows(
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
_INSERT_CHUNK = MAX_PARAMS // _NEW_ROW_PARAMS  # rows one INSERT statement takes


async def _insert_new(
    db: aiosqlite.Connection, rows: Sequence[tuple[Any, ...]]
) -> dict[tuple[str, str, str], tuple[int, str, str]]:
    """Insert rows whose key is not in flight; returns the created ones by key.

    One multi-row statement with RETURNING per chunk: the usual single-task request costs
    one round trip to the ledger's thread, not one per statement of a longer dance.
    """
    created: dict[tuple[str, str, str], tuple[int, str, str]] = {}
    step = _INSERT_CHUNK
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


@dataclasses.dataclass(slots=True)
class _Shared:
    fd: int
    users: int = 0
    locked: bool = False


# One descriptor per database file per process, shared by every Ledger on it. Closing any
# descriptor of a file drops all of the process's POSIX locks on it, SQLite's included; so
# ours is only closed once no Ledger of this process uses the file any more.
_SHARED: dict[tuple[int, int], _Shared] = {}


@dataclasses.dataclass(slots=True)
class _File:
    """One Ledger's use of the database file: its descriptor, and the ``serve`` lock if held.

    The lock is a ``flock`` on the database file itself, so it follows the file, not its
    name: a hard link, a symlink or ``x/../ledger.db`` reaches the same lock. It cannot
    disturb SQLite's own locking, which uses POSIX record locks (``fcntl``) on byte ranges;
    on Linux the two kinds never conflict.
    """

    key: tuple[int, int]
    created: bool
    exclusive: bool

    @property
    def fd(self) -> int:
        """The process's descriptor of the file."""
        return _SHARED[self.key].fd

    @classmethod
    def open(cls, path: Path, *, exclusive: bool) -> _File:
        """Open (creating it if missing) and, if ``exclusive``, lock the file at ``path``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            known = _identity(os.stat(path)) if path.exists() else None
            if known is not None and known in _SHARED:
                key, created = known, False
            else:
                fd, created = _open_or_create(path)
                key = _identity(os.fstat(fd))
                _SHARED[key] = _Shared(fd)
        except OSError as exc:
            raise errors.LedgerError(f"{path}: cannot create the ledger: {exc.strerror}") from exc
        _SHARED[key].users += 1
        file = cls(key, created, exclusive=False)
        if exclusive:
            file.lock(path)
        return file

    def lock(self, path: Path) -> None:
        """Take the ``serve`` lock, or release the file and refuse."""
        shared = _SHARED[self.key]
        if shared.locked:
            holder = str(os.getpid())  # another Ledger of this very process holds it
        else:
            try:
                fcntl.flock(shared.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(shared.fd)
            else:
                shared.locked = self.exclusive = True
                return
        self.release()
        raise errors.LedgerLockedError(
            f"{path}: ledger in use by another lance-bridge process (pid {holder});"
            " stop it or point ledger.path elsewhere"
        )

    def release(self) -> None:
        """Give the lock back and, if no other Ledger of this process uses it, the file."""
        shared = _SHARED[self.key]
        if self.exclusive:
            fcntl.flock(shared.fd, fcntl.LOCK_UN)
            shared.locked = self.exclusive = False
        shared.users -= 1
        if shared.users == 0:
            del _SHARED[self.key]
            os.close(shared.fd)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _open_or_create(path: Path) -> tuple[int, bool]:
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    try:
        return os.open(path, flags), False
    except PermissionError:
        # A file this user may only read: the descriptor is for the lock and the identity
        # check, which need no write access; SQLite reports what it cannot do itself.
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), False


def _lock_holder(file_fd: int) -> str:
    """The pid holding a ``flock`` on the file, from Linux's ``/proc/locks``, or ``unknown``.

    The kernel knows it by the file's identity, whatever name the holder opened it by.
    """
    st = os.fstat(file_fd)
    identity = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text(encoding="ascii").splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"; blocked waiters have "->" first.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == identity:
            return fields[4]
    return "unknown"


def _refuse_empty(path: Path, file_fd: int) -> None:
    """An existing file of zero bytes is a truncated ledger until the operator says not."""
    if os.fstat(file_fd).st_size == 0:
        raise errors.LedgerError(
            f"{path}: the ledger file is empty (0 bytes), as a truncated ledger would be;"
            " restore it from a backup, or run `lance-bridge serve --init-ledger` once to"
            " start a new, empty ledger in it"
        )


async def _connect(path: Path, synchronous: str, cache_kib: int) -> aiosqlite.Connection:
    try:
        db = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise errors.LedgerError(f"{path}: cannot open the ledger: {exc}") from exc
    try:
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute(f"PRAGMA cache_size = -{cache_kib}")
    except BaseException as exc:
        # A connection left open keeps aiosqlite's (non-daemon) thread, and so the process,
        # alive after the error is printed: a corrupt file must not hang the CLI.
        await db.close()
        if isinstance(exc, sqlite3.Error):
            raise errors.LedgerError(f"{path}: cannot open the ledger: {exc}") from exc
        raise
    return db


def _migrations() -> list[str]:
    folder = resources.files("bridge") / "sql"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(folder / name).read_text(encoding="utf-8") for name in names]


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    scripts = _migrations()
    try:
        rows = list(await db.execute_fetchall("PRAGMA user_version"))
    except sqlite3.Error as exc:
        raise errors.LedgerError(f"{path}: cannot open the ledger: {exc}") from exc
    version = int(rows[0][0])
    if version > len(scripts):
        raise errors.LedgerTooNewError(
            f"{path}: ledger schema version {version} is newer than this lance-bridge"
            f" (knows {len(scripts)}); upgrade lance-bridge"
        )
    for number, script in enumerate(scripts[version:], start=version + 1):
        try:
            await db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        except sqlite3.Error as exc:
            raise errors.LedgerError(f"{path}: migration {number} failed: {exc}") from exc


async def _insert_inbound(
    db: aiosqlite.Connection, source: str, events: Sequence[model.Inbound], now: float
) -> set[str]:
    """Insert events not seen before; returns the keys that were new."""
    fresh: set[str] = set()
    step = MAX_PARAMS // 8
    for start in range(0, len(events), step):
        chunk = events[start : start + step]
        marks = ",".join(["(?,?,?,?,?,?,?,?)"] * len(chunk))
        returned = await db.execute_fetchall(
            "INSERT OR IGNORE INTO inbound"  # noqa: S608 - placeholders only
            " (source, key, state, object_type, object_id, detail, received_at, updated_at)"
            f" VALUES {marks} RETURNING key",
            [
                value
                for event in chunk
                for value in (
                    source,
                    event.key,
                    event.state,
                    *(event.lookup or event.record),
                    event.skipped,
                    now,
                    now,
                )
            ],
        )
        fresh.update(str(row[0]) for row in returned)
    return fresh


async def _accept_in(
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
    targets = [
        (ids[task.key][0], t.connector, t.object_type, t.object_id)
        for tasks, _ in groups
        for task in tasks
        for t in task.targets
    ]
    if targets:
        await db.executemany("INSERT OR IGNORE INTO targets VALUES (?,?,?,?)", targets)
    seen: set[int] = set()
    results = []
    for tasks, _ in groups:
        result = []
        for task in tasks:
            row_id, state, mode = ids[task.key]
            result.append(
                model.Accepted(row_id, row_id in created and row_id not in seen, state, mode)
            )
            seen.add(row_id)
        results.append(result)
    return results

"""The SQLite ledger's two connections, its file, and whether it can be written.

One writer, serialized by a lock so each transaction is one unit (a state change commits with
the events it causes), and one reader for the HTTP API and the CLI, which WAL lets run beside
the writer. :meth:`Db.translated` is the one seam where sqlite3 errors become
:class:`~bridge.errors.LedgerError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bridge import errors
from bridge.ledger import sqlite_file

logger = logging.getLogger(__name__)
# Page caches: the writer's holds the hot index pages of a large ledger; RSS stays bounded.
WRITER_CACHE_KIB = 32_768
READER_CACHE_KIB = 8_192
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


class Db:
    """The connections and the file of one SQLite ledger. Open it with :meth:`open`.

    It keeps a descriptor of the database file itself: the ``serve`` lock is taken on it, and
    comparing it with what the path names now tells a deleted or replaced file.

    Attributes:
        path: The SQLite file.
        write_lock: Held by every use of :attr:`writer`.
        writer: The connection every write (and every job's read) goes through.
    """

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        file: sqlite_file.File,
    ) -> None:
        self.path = path
        self.writer = writer
        self._reader = reader
        self._file: sqlite_file.File | None = file
        self._problem: str | None = None  # why the ledger is unavailable now, if it is
        self._lost: str | None = None  # set once the file at the path is no longer ours
        self.write_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Db {self.path}>"

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "normal",
        exclusive: bool = True,
        initialize: bool = False,
    ) -> Db:
        """Open (creating and migrating) the ledger at ``path``.

        A path where no file exists gets a new ledger. An existing empty file is refused
        unless ``initialize``: it is most likely a ledger that was truncated, and starting
        afresh in it would silently forget everything it held.

        Args:
            path: The SQLite file.
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
        file = sqlite_file.File.open(path, exclusive=exclusive)
        opened: list[aiosqlite.Connection] = []
        try:
            if not file.created and not initialize:
                sqlite_file.refuse_empty(path, file.fd)
            opened.append(await sqlite_file.connect(path, synchronous, WRITER_CACHE_KIB))
            await sqlite_file.migrate(opened[0], path)
            opened.append(await sqlite_file.connect(path, synchronous, READER_CACHE_KIB))
        except BaseException:
            # Close what was opened: a connection left open keeps its thread alive. The file's
            # descriptor goes last: closing it drops SQLite's own POSIX locks on the file.
            for db in opened:
                await db.close()
            file.release()
            raise
        writer, reader = opened
        return cls(path, writer, reader, file)

    async def close(self) -> None:
        """Close both connections and release the file lock."""
        async with self.write_lock:
            await self._reader.close()
            await self.writer.close()
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
            await self.fetch("SELECT count(*) FROM meta")
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

    def stored(self) -> None:
        """After a commit: it only counts if it went to the file at the path."""
        self.check()
        if self._lost is not None:
            raise errors.LedgerLostError(f"{self.path}: {self._lost}")
        self._recovered()

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
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
        async with self.write_lock:
            with self.translated():
                try:
                    await self.writer.execute("BEGIN IMMEDIATE")
                    yield self.writer
                    await self.writer.commit()
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await self.writer.rollback()
                    raise
            self.stored()

    async def fetch(
        self, sql: str, params: Sequence[Any] = (), *, writer: bool = False
    ) -> list[sqlite3.Row]:
        """Run a query: on the reader, or with ``writer`` through the writer, under its lock."""
        # Job queries read through the writer (under its lock) so they see their own commits
        # at once; API reads use the reader and never wait for a write transaction.
        if writer:
            async with self.write_lock:
                with self.translated():
                    return list(await self.writer.execute_fetchall(sql, params))
        with self.translated():
            return list(await self._reader.execute_fetchall(sql, params))

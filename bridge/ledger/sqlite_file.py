"""The SQLite ledger's file: its descriptor, the ``serve`` lock, opening and migrating it."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sqlite3
from importlib import resources
from pathlib import Path

import aiosqlite

from bridge import errors

BUSY_TIMEOUT_MS = 10_000


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
class File:
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
    def open(cls, path: Path, *, exclusive: bool) -> File:
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


def refuse_empty(path: Path, file_fd: int) -> None:
    """An existing file of zero bytes is a truncated ledger until the operator says not."""
    if os.fstat(file_fd).st_size == 0:
        raise errors.LedgerError(
            f"{path}: the ledger file is empty (0 bytes), as a truncated ledger would be;"
            " restore it from a backup, or run `lance-bridge serve --init-ledger` once to"
            " start a new, empty ledger in it"
        )


async def connect(path: Path, synchronous: str, cache_kib: int) -> aiosqlite.Connection:
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
    folder = resources.files("bridge.ledger") / "sql"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(folder / name).read_text(encoding="utf-8") for name in names]


async def migrate(db: aiosqlite.Connection, path: Path) -> None:
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

"""The PostgreSQL ledger's connections: the pool, its schema version, health, and the one seam
where psycopg errors become :class:`~bridge.errors.LedgerError`.

Several ``serve`` replicas may share one database, so nothing here is exclusive: the schema is
migrated by ``lance-bridge migrate`` under an advisory lock, and ``serve`` only checks it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg_pool

from bridge import errors
from bridge import settings as settings_mod

logger = logging.getLogger("bridge.ledger")

# Any fixed number: every replica and every `migrate` takes this lock around migrations.
MIGRATE_LOCK = 0x6C616E6365  # "lance"
CONNECT_TIMEOUT_S = 5.0
POOL_SIZE = 4


def conninfo(config: settings_mod.LedgerSettings) -> str:
    """The connection string of ``ledger.url``, with the password from ``password_file``."""
    url = config.url.get_secret_value()
    extra: dict[str, Any] = {"connect_timeout": int(CONNECT_TIMEOUT_S)}
    if config.password_file:
        try:
            extra["password"] = Path(config.password_file).read_text().strip()
        except OSError as exc:
            raise errors.ConfigError(
                f"ledger.password_file {config.password_file}: {exc.strerror}"
            ) from exc
    try:
        port = psycopg.conninfo.conninfo_to_dict(url).get("port")
        if port is not None and not all(part.isdigit() for part in str(port).split(",")):
            raise errors.ConfigError("ledger.url: the port is not a number")
        return psycopg.conninfo.make_conninfo(url, **extra)
    except psycopg.ProgrammingError as exc:
        why = _clean(exc)
        raise errors.ConfigError(f"ledger.url is not a valid PostgreSQL URL: {why}") from exc


def display(config: settings_mod.LedgerSettings) -> str:
    """``postgresql://user@host:port/db``: where the ledger is, without any password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(config.url.get_secret_value())
    except psycopg.ProgrammingError:
        return "postgresql://(invalid url)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _clean(exc: BaseException) -> str:
    """The first line of a driver message: psycopg's never carry the password, only hints."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every bundled migration, in order."""
    folder = resources.files("bridge.ledger") / "sql" / "postgres"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(int(name.split("_", 1)[0]), (folder / name).read_text()) for name in names]


LATEST = migrations()[-1][0]


async def connect(config: settings_mod.LedgerSettings) -> psycopg.AsyncConnection[Any]:
    """One connection, or :class:`errors.LedgerUnavailableError` naming why (never the password)."""
    info = conninfo(config)
    try:
        return await psycopg.AsyncConnection.connect(info, autocommit=True)
    except psycopg.OperationalError as exc:
        raise errors.LedgerUnavailableError(f"{display(config)}: {_clean(exc)}") from exc


async def schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The version ``migrate`` last applied (0 for an empty database)."""
    cursor = await conn.execute("SELECT to_regclass('ledger_schema') IS NOT NULL")
    row = await cursor.fetchone()
    if not row or not row[0]:
        return 0
    cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM ledger_schema")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(config: settings_mod.LedgerSettings) -> tuple[int, int]:
    """Apply the migrations the database lacks; returns (version before, version after).

    Under a session advisory lock, so replicas (or operators) running it at once apply each
    migration once; a late one finds the work done.

    Raises:
        errors.LedgerTooNewError: the database was migrated by a newer lance-bridge.
    """
    conn = await connect(config)
    try:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS ledger_schema"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        before = await schema_version(conn)
        if before > LATEST:
            raise errors.LedgerTooNewError(_too_new(config, before))
        for version, sql in migrations():
            if version > before:
                async with conn.transaction():
                    await conn.execute(sql.encode())
                    await conn.execute(
                        "INSERT INTO ledger_schema (version) VALUES (%s)", (version,)
                    )
        return before, max(before, LATEST)
    except psycopg.OperationalError as exc:
        raise errors.LedgerUnavailableError(f"{display(config)}: {_clean(exc)}") from exc
    finally:
        await conn.close()  # ends the session, and so its advisory lock


def _too_new(config: settings_mod.LedgerSettings, version: int) -> str:
    return (
        f"{display(config)}: ledger schema version {version} is newer than this lance-bridge"
        f" ({LATEST}); upgrade lance-bridge"
    )


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Plan every statement for its own arguments.

    psycopg prepares a statement run five times, and after five more the server may switch
    it to a generic plan; for the batch writes over ``unnest`` arrays, whose sizes the generic
    plan cannot know, that plan made one write of 100 rows 20 times slower (8 ms → 200 ms).
    """
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    await conn.commit()


class Db:
    """The pool, the health of the database as the ledger last saw it, and the error seam."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], where: str) -> None:
        self.pool = pool
        self.where = where
        self._problem: str | None = None

    @classmethod
    async def open(cls, config: settings_mod.LedgerSettings) -> Db:
        """Connect and check the schema is the one this code writes.

        Raises:
            errors.LedgerUnavailableError: the server cannot be reached or refuses the login.
            errors.LedgerTooNewError: the schema is newer than this code.
            errors.LedgerError: the schema is older (``migrate`` has not run).
        """
        where = display(config)
        conn = await connect(config)
        try:
            version = await schema_version(conn)
        finally:
            await conn.close()
        if version > LATEST:
            raise errors.LedgerTooNewError(_too_new(config, version))
        if version < LATEST:
            raise errors.LedgerError(
                f"{where}: ledger schema version {version}, this lance-bridge needs {LATEST};"
                " run `lance-bridge migrate -c FILE` first"
            )
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            conninfo(config),
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            timeout=CONNECT_TIMEOUT_S,
            configure=_configure,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except psycopg_pool.PoolTimeout as exc:
            await pool.close()
            raise errors.LedgerUnavailableError(f"{where}: the server cannot be reached") from exc
        return cls(pool, where)

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self.pool.close()

    @property
    def problem(self) -> str | None:
        """Why the database cannot store work now, as last seen (``None`` when it can)."""
        return self._problem

    async def watch(self) -> str | None:
        """One round trip: a server that went away fails ``/readyz`` even while nothing is
        written, and one that came back clears the failure."""
        with contextlib.suppress(errors.LedgerUnavailableError):
            async with self.transaction() as conn:
                await conn.execute("SELECT 1")
        return self._problem

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """The one seam where psycopg errors become :class:`errors.LedgerUnavailableError`.

        A lost server, a refused login or a pool that cannot connect make the ledger
        unavailable; any other database error is a statement the ledger got wrong (a bug).
        """
        try:
            yield
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        self._recovered()

    def _unavailable(self, exc: BaseException) -> errors.LedgerUnavailableError:
        why = _clean(exc) if isinstance(exc, psycopg.Error) else "the server cannot be reached"
        if self._problem is None:
            logger.error(
                "ledger %s unavailable: %s; writes answer 503 and /readyz fails until it"
                " answers again",
                self.where,
                why,
                extra={"event": "ledger.unavailable", "ledger": self.where},
            )
        self._problem = why
        return errors.LedgerUnavailableError(f"{self.where}: {why}")

    def _recovered(self) -> None:
        if self._problem is not None:
            self._problem = None
            logger.warning(
                "ledger %s writable again",
                self.where,
                extra={"event": "ledger.recovered", "ledger": self.where},
            )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One transaction on a pooled connection: it commits together or not at all."""
        with self.translated():
            async with self.pool.connection() as conn, conn.transaction():
                yield conn

    async def fetch(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

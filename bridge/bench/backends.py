"""The ledgers a scenario runs on: SQLite, always (the baseline), and PostgreSQL with ``--ledger``.

Each run on PostgreSQL gets a schema of its own, ``lance_bridge_bench_<random>``, created and
migrated before and dropped (with everything in it) after: the bench never reads or writes what
already is at the URL. Every connection of the run reaches the schema through the URL's
``options=-csearch_path=…``, so the ledger's own code runs unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bridge import ledger
from bridge import settings as settings_mod

SCHEMA_PREFIX = "lance_bridge_bench_"


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """One row of a scenario's table: a backend and how many processes share it.

    Attributes:
        name: ``sqlite`` or ``postgresql``.
        replicas: Processes sharing the ledger (``serve`` replicas, or pollers).
    """

    name: str
    replicas: int = 1

    @property
    def label(self) -> str:
        """``sqlite`` / ``postgresql x2``: the row's name in the tables."""
        return self.name if self.name == "sqlite" else f"{self.name} x{self.replicas}"


def plan(url: str | None, replicas: int) -> list[Backend]:
    """SQLite, then with ``url`` PostgreSQL with one replica and (if more) with ``replicas``."""
    rows = [Backend("sqlite")]
    if url:
        rows.append(Backend("postgresql", 1))
        if replicas > 1:
            rows.append(Backend("postgresql", replicas))
    return rows


def in_schema(url: str, schema: str) -> str:
    """``url`` with every session's ``search_path`` set to ``schema``."""
    options = urllib.parse.quote(f"-csearch_path={schema}")
    return f"{url}{'&' if '?' in url else '?'}options={options}"


@dataclasses.dataclass(slots=True)
class Place:
    """Where one run's ledger is: the ``[ledger]`` settings as plain data (children get it
    pickled), and the PostgreSQL schema the bench made for it (``""`` on SQLite)."""

    ledger: dict[str, Any]
    schema: str = ""

    def settings(self) -> settings_mod.LedgerSettings:
        """The ``[ledger]`` settings of this place."""
        return settings_mod.LedgerSettings(**self.ledger)


@contextlib.asynccontextmanager
async def fresh(backend: Backend, url: str | None, folder: Path, name: str) -> AsyncIterator[Place]:
    """A new, empty ledger for one run: a file in ``folder``, or a schema at ``url``."""
    if backend.name == "sqlite" or not url:
        yield Place({"path": folder / f"{name}.db"})
        return
    schema = SCHEMA_PREFIX + secrets.token_hex(6)
    admin = await _admin(url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        place = Place({"url": in_schema(url, schema)}, schema)
        await ledger.migrate(place.settings())
        yield place
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def _admin(url: str) -> Any:
    """A connection for creating and dropping the run's schema (driver errors as one line)."""
    from bridge.ledger import postgres_db  # noqa: PLC0415 - PostgreSQL is an extra

    return await postgres_db.connect(settings_mod.LedgerSettings(url=url))


Row = dict[str, float | int | str]


def share_bars(rows: list[Row], *, two_above_one: bool) -> dict[str, bool]:
    """Add each row's ``share_vs_sqlite`` of its ``rate_per_s``; the PostgreSQL bars of §9.

    PostgreSQL with one replica must reach half of SQLite's rate in the same run; with
    ``two_above_one``, more replicas must beat one.
    """
    rate = "rate_per_s"
    base = float(rows[0][rate])
    for row in rows:
        row["share_vs_sqlite"] = f"{float(row[rate]) / base:.0%}" if base else "-"
    bars: dict[str, bool] = {}
    single = [r for r in rows if r["backend"] != "sqlite" and r["replicas"] == 1]
    for row in single:
        bars[f"{row['backend']} ≥ 50 % of sqlite"] = float(row[rate]) >= 0.5 * base
    for row in rows:
        if two_above_one and single and int(row["replicas"]) > 1:
            bars[f"{row['backend']} above {single[0]['backend']}"] = float(row[rate]) > float(
                single[0][rate]
            )
    return bars

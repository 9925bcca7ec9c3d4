"""Two replicas on one PostgreSQL ledger never read the same finished rows' values twice."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bridge import ledger, model
from bridge import settings as settings_mod
from bridge.ledger import postgres_db
from tests import pg

NOW = 1_800_000_000.0


def _config(url: str, replica_id: str) -> settings_mod.LedgerSettings:
    return settings_mod.LedgerSettings(url=SecretStr(url), replica_id=replica_id)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ledger.Ledger, ledger.Ledger]]:
    """Two replicas, ``alpha`` and ``beta``, sharing one migrated schema."""
    async with pg.schema() as url:
        await postgres_db.migrate(_config(url, "alpha"))
        first = await ledger.open(_config(url, "alpha"))
        second = await ledger.open(_config(url, "beta"))
        try:
            yield first, second
        finally:
            await first.close()
            await second.close()


async def _finished_with_data(store: ledger.Ledger, n: int) -> list[int]:
    tasks = [model.Task("person", str(uuid.uuid4()), "emails", "track") for _ in range(n)]
    ids = [a.id for a in await store.accept(tasks, NOW)]
    record = {"status": "finished", "dataFound": True, "id": "0" * 24}
    await store.apply([ledger.Change(i, "finished", record) for i in ids], NOW)
    return ids


def _ids(grouped: dict[tuple[str, str], list[tuple[int, str]]]) -> list[int]:
    return sorted(row_id for rows in grouped.values() for row_id, _ in rows)


async def test_the_fetch_job_claims_its_rows_so_no_entity_is_read_by_two_replicas(
    pair: tuple[ledger.Ledger, ledger.Ledger],
) -> None:
    first, second = pair
    ids = await _finished_with_data(first, 5)

    mine = _ids(await first.awaiting_values(3))
    theirs = _ids(await second.awaiting_values(100))

    assert mine == ids[:3]
    assert theirs == ids[3:]
    # The holder sees its own again (a failed read retries); nobody else does.
    assert _ids(await first.awaiting_values(100)) == mine
    assert _ids(await second.awaiting_values(100)) == theirs
    # Stored values end the claim, and the row waits for nobody any more.
    await first.store_values([(ids[0], {"emails": ["a@example.com"]})], NOW + 1)
    assert _ids(await first.awaiting_values(100)) == ids[1:3]

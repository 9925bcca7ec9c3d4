"""The ledger on a real SQLite file: schema versions, the file lock, state changes, outbox."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge import errors, ledger, model, outbox
from bridge.ledger import sqlite as sqlite_ledger
from tests.conftest import LedgerFactory

NOW = 1_800_000_000.0
WEBHOOK = outbox.Route("hook", needs_record=False, events=frozenset({"enrichment.finished"}))
CRM = outbox.Route(
    "crm", needs_record=True, events=frozenset({"enrichment.finished", "enrichment.failed"})
)


def _task(mode: str = "trigger", *targets: model.Target) -> model.Task:
    return model.Task("person", str(uuid.uuid4()), "emails", mode, targets)


@pytest.fixture
async def store(open_ledger: LedgerFactory, tmp_path: Path) -> AsyncIterator[ledger.Ledger]:
    opened = await open_ledger(tmp_path / "l.db", router=outbox.Router([WEBHOOK, CRM]))
    yield opened
    await opened.close()


@pytest.mark.sqlite_only
async def test_a_second_open_of_the_same_file_is_refused(
    open_ledger: LedgerFactory, store: ledger.Ledger, tmp_path: Path
) -> None:
    with pytest.raises(errors.LedgerLockedError, match="ledger in use by another"):
        await open_ledger(tmp_path / "l.db")
    readonly = await open_ledger(tmp_path / "l.db", exclusive=False)
    await readonly.close()


@pytest.mark.sqlite_only
async def test_a_ledger_from_a_newer_version_is_refused(
    open_ledger: LedgerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(errors.LedgerTooNewError, match="upgrade lance-bridge"):
        await open_ledger(path)
    # The refusal released the file lock.
    with pytest.raises(errors.LedgerTooNewError):
        await open_ledger(path)


@pytest.mark.sqlite_only
async def test_migrations_set_the_schema_version(store: ledger.Ledger) -> None:
    [(version,)] = await store.fetch("PRAGMA user_version")
    assert version == len(list((Path(ledger.__file__).parent / "sql").glob("*.sql")))
    [(mode,)] = await store.fetch("PRAGMA journal_mode")
    assert mode == "wal"


async def test_one_row_in_flight_per_key_and_targets_attach(store: ledger.Ledger) -> None:
    task = _task()
    first = await store.accept([task], NOW)
    crm = model.Target("crm", "contacts", "42")
    again = await store.accept([model.Task(*task.key, "trigger", (crm,))], NOW + 1)
    assert first[0].created
    assert not again[0].created
    assert first[0].id == again[0].id
    rows = await store.fetch("SELECT connector, object_id FROM targets")
    assert [tuple(r) for r in rows] == [("crm", "42")]


async def test_concurrent_accepts_share_transactions_and_all_commit(store: ledger.Ledger) -> None:
    tasks = [_task() for _ in range(300)]
    results = await asyncio.gather(*(store.accept([t], NOW) for t in tasks))
    assert all(r[0].created for r in results)
    assert len({r[0].id for r in results}) == 300
    [(count,)] = await store.fetch("SELECT count(*) FROM enrichments")
    assert count == 300


async def test_a_queued_row_without_a_trigger_record_moves_to_pending(
    store: ledger.Ledger,
) -> None:
    [accepted] = await store.accept([_task()], NOW)
    change = ledger.Change(accepted.id, "pending", next_poll_at=NOW + 2, from_queue=True)
    await store.apply([change], NOW)
    [(state, started)] = await store.fetch(
        "SELECT state, started_at FROM enrichments WHERE id = ?", (accepted.id,)
    )
    assert (state, started) == ("pending", NOW)
    assert [r.id for r in await store.due_for_poll(NOW + 2, 10)] == [accepted.id]


async def test_terminal_state_and_its_events_commit_together(store: ledger.Ledger) -> None:
    crm = model.Target("crm", "contacts", "7")
    [accepted] = await store.accept([_task("track", crm)], NOW)
    record = {
        "id": "r1",
        "entityId": "x",
        "field": "emails",
        "status": "failed",
        "error": "provider down",
        "dataFound": None,
    }
    await store.apply([ledger.Change(accepted.id, "failed", record, error="provider down")], NOW)
    rows = await store.fetch("SELECT connector, event_type, state FROM deliveries")
    # The webhook only subscribed to finished; the CRM named by the target gets the failure.
    assert [tuple(r) for r in rows] == [("crm", "enrichment.failed", "pending")]


async def test_finished_with_data_waits_for_values_before_its_events(
    store: ledger.Ledger,
) -> None:
    [accepted] = await store.accept([_task("track")], NOW)
    record = {
        "id": "r1",
        "entityId": "x",
        "field": "emails",
        "status": "finished",
        "dataFound": True,
    }
    await store.apply([ledger.Change(accepted.id, "finished", record)], NOW)
    assert await store.fetch("SELECT * FROM deliveries") == []
    assert list(await store.awaiting_values(10)) == [("person", await _entity(store))]
    await store.store_values([(accepted.id, {"emails": ["a@example.com"]})], NOW)
    [(body,)] = await store.fetch("SELECT body FROM deliveries")
    assert b'"values":{"emails":["a@example.com"]}' in bytes(body)
    assert await store.awaiting_values(10) == {}


async def _entity(store: ledger.Ledger) -> str:
    [(entity_id,)] = await store.fetch("SELECT entity_id FROM enrichments")
    return str(entity_id)


async def test_a_change_to_a_row_no_longer_in_flight_is_ignored(store: ledger.Ledger) -> None:
    [accepted] = await store.accept([_task("track")], NOW)
    await store.apply([ledger.Change(accepted.id, "cancelled", error="stop")], NOW)
    await store.apply([ledger.Change(accepted.id, "failed", error="late")], NOW + 1)
    [(state, error)] = await store.fetch("SELECT state, error FROM enrichments")
    assert (state, error) == ("cancelled", "stop")
    [(deliveries,)] = await store.fetch("SELECT count(*) FROM deliveries")
    assert deliveries == 0  # cancelled matches neither route's filter


async def test_replay_only_touches_dead_deliveries(store: ledger.Ledger) -> None:
    [accepted] = await store.accept([_task("track", model.Target("crm", "c", "1"))], NOW)
    await store.apply([ledger.Change(accepted.id, "failed", error="x")], NOW)
    [delivery] = await store.due_deliveries(NOW, 10)
    await store.record_attempts([ledger.Attempt(delivery.id, "dead", None, "HTTP 400", 400)], NOW)
    assert await store.replay([delivery.id, 999], NOW + 5) == [delivery.id]
    assert await store.replay([delivery.id], NOW + 6) == []  # pending now, not dead
    [again] = await store.due_deliveries(NOW + 5, 10)
    assert (again.id, again.attempts, again.message_id) == (
        delivery.id,
        0,
        delivery.message_id,
    )


async def test_a_backlog_comes_out_oldest_due_first_each_delivery_once(
    store: ledger.Ledger,
) -> None:
    crm = model.Target("crm", "contacts", "1")
    older = await store.accept([_task("track", crm) for _ in range(12)], NOW)
    newer = await store.accept([_task("track", crm) for _ in range(13)], NOW)
    await store.apply([ledger.Change(a.id, "failed", error="x") for a in newer], NOW)
    await store.apply([ledger.Change(a.id, "failed", error="x") for a in older], NOW - 60)
    seen: list[model.Delivery] = []
    while batch := await store.due_deliveries(NOW, 10):
        assert len(batch) <= 10
        keys = [(d.created_at, d.id) for d in batch]
        assert keys == sorted(keys)
        attempts = [ledger.Attempt(d.id, "delivered", None, None, 204) for d in batch]
        await store.record_attempts(attempts, NOW)
        seen += batch
    assert len({d.id for d in seen}) == len(seen) == 25
    enrichment_ids = [d.enrichment_id for d in seen]
    assert set(enrichment_ids[:12]) == {a.id for a in older}


@pytest.mark.sqlite_only
async def test_due_deliveries_walk_the_due_index_instead_of_sorting_all_pending(
    store: ledger.Ledger,
) -> None:
    assert isinstance(store, sqlite_ledger.SQLiteLedger)
    statements: list[str] = []
    await store.db.writer.set_trace_callback(statements.append)
    await store.due_deliveries(NOW, 1000)
    await store.db.writer.set_trace_callback(None)
    [sql] = [s for s in statements if "FROM deliveries" in s]
    plan = " ".join(str(row[3]) for row in await store.fetch(f"EXPLAIN QUERY PLAN {sql}"))
    assert "USING INDEX deliveries_due" in plan
    assert "TEMP B-TREE" not in plan  # no sort of every pending row per batch


async def test_counts_by_state_follow_each_change(store: ledger.Ledger) -> None:
    crm = model.Target("crm", "contacts", "7")
    accepted = await store.accept([_task("track", crm), _task("track")], NOW)
    assert await store.count_enrichments(model.EnrichmentState.PENDING) == 2
    assert await store.count_enrichments(model.EnrichmentState.FAILED) == 0
    await store.apply([ledger.Change(accepted[0].id, "failed", error="provider down")], NOW)
    assert await store.count_enrichments(model.EnrichmentState.PENDING) == 1
    assert await store.count_enrichments(model.EnrichmentState.FAILED) == 1
    assert await store.count_deliveries(model.DeliveryState.PENDING) == 1
    assert await store.count_deliveries(model.DeliveryState.DELIVERED) == 0

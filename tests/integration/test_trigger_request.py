"""One ``POST /v1/triggers`` request is one transaction on every backend: tasks naming a Lance
id, the CRM records they settle and the ``match`` tasks are stored together, or not at all."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bridge import ledger, model, outbox
from bridge import settings as settings_mod
from bridge.ledger import postgres_db, postgres_rows, sqlite, sqlite_rows
from bridge.sim import lance as sim
from tests import pg
from tests.conftest import LEDGER_BACKENDS, BridgeFactory, LedgerFactory, auth, make_settings

NOW = 1_800_000_000.0
CRM = outbox.Route("crm", needs_record=True, events=frozenset({"enrichment.finished"}))


@pytest.fixture(params=LEDGER_BACKENDS)
async def ledger_section(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """The ``[ledger]`` settings of the backend this run is for (``{}``: SQLite in tmp)."""
    if request.param == "sqlite":
        yield {}
        return
    async with pg.schema() as url:
        await postgres_db.migrate(settings_mod.LedgerSettings(url=SecretStr(url)))
        yield {"url": url}


def _mixed() -> dict[str, Any]:
    hook = {"connector": "hook"}
    return {
        "tasks": [
            {"entityId": str(uuid.uuid4()), "field": "emails", "targets": [hook]},
            {"match": {"linkedinUrl": "linkedin.com/in/ada-lovelace"}, "field": "emails"},
            {"entityId": str(uuid.uuid4()), "field": "phones"},
            {"match": {"fullName": "Ada Lovelace", "company": "Analytical"}, "field": "phones"},
        ]
    }


async def _stored(client: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    enrichments = await (await client.get("/v1/enrichments", headers=auth())).json()
    inbound = await (await client.get("/v1/inbound", headers=auth())).json()
    return enrichments["enrichments"], inbound["inbound"]


async def test_a_mixed_request_is_stored_whole(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: Any,
    tmp_path: Path,
    ledger_section: dict[str, Any],
) -> None:
    settings = make_settings(tmp_path, simulator[1], sink[1], ledger=ledger_section)
    client = await make_bridge(settings)

    response = await client.post("/v1/triggers", json=_mixed(), headers=auth())

    assert response.status == 202, await response.text()
    answer = await response.json()
    assert [row["field"] for row in answer["enrichments"]] == ["emails", "phones"]
    assert [m["task"] for m in answer["matching"]] == [1, 3]
    enrichments, inbound = await _stored(client)
    assert sorted(row["entityId"] for row in enrichments) == sorted(
        row["entityId"] for row in answer["enrichments"]
    )
    assert sorted(row["key"] for row in inbound) == sorted(m["key"] for m in answer["matching"])
    assert {(row["source"], row["state"]) for row in inbound} == {("api", "matching")}


async def test_a_ledger_failure_after_the_tasks_stores_none_of_the_request(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: Any,
    tmp_path: Path,
    ledger_section: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path, simulator[1], sink[1], ledger=ledger_section)
    client = await make_bridge(settings)
    body = _mixed()

    async def broken(*_: Any) -> set[str]:
        raise OSError("the disk went away while the match tasks were written")

    # The tasks are written first; the failure comes while the match events are.
    rows = postgres_rows if ledger_section else sqlite_rows
    with monkeypatch.context() as patch:
        patch.setattr(rows, "insert_inbound", broken)
        response = await client.post("/v1/triggers", json=body, headers=auth())

    assert response.status == 500
    assert "disk" not in await response.text()
    assert await _stored(client) == ([], [])
    # Nothing half-stored: the client's retry creates every row afresh.
    retried = await client.post("/v1/triggers", json=body, headers=auth())
    assert retried.status == 202
    enrichments, inbound = await _stored(client)
    assert (len(enrichments), len(inbound)) == (2, 2)


@pytest.fixture
async def store(open_ledger: LedgerFactory, tmp_path: Path) -> AsyncIterator[ledger.Ledger]:
    opened = await open_ledger(tmp_path / "l.db", router=outbox.Router([CRM]))
    yield opened
    await opened.close()


def _matching(n: int) -> model.Inbound:
    record = ("contacts", str(n))
    match = model.Match(
        f"linkedin:https://www.linkedin.com/in/p{n}",
        ("emails",),
        (model.Target("crm", *record),),
        write_back=True,
    )
    return model.Inbound(f"ev{n}", match=match, record=record)


async def test_concurrent_trigger_requests_settle_their_records_and_keep_their_events(
    store: ledger.Ledger,
) -> None:
    await store.receive("crm", [_matching(1), _matching(2)], NOW)
    waiting = await store.waiting_matches(NOW, 10)
    people = {w.key: str(uuid.uuid4()) for w in waiting}
    await store.settle_matches(
        [
            (w, ledger.Found(w.match.key, "ambiguous", None, (people[w.key],), "2 match"))
            for w in waiting
        ],
        NOW,
    )

    def settling(n: int) -> model.Task:
        target = model.Target("crm", "contacts", str(n))
        return model.Task("person", people[f"ev{n}"], "emails", "trigger", (target,))

    plain = model.Task("person", str(uuid.uuid4()), "phones")
    found = await asyncio.gather(
        store.accept_trigger([settling(1)], "api", [], NOW + 1),
        store.accept_trigger([plain], "api", [_matching(7)], NOW + 1),
        store.accept_trigger([settling(2), plain], "api", [], NOW + 1),
        store.accept([plain], NOW + 1),
    )

    assert [rows[0].created for rows in (found[0], found[2])] == [True, True]
    shared = [found[1][0], found[2][1], found[3][0]]
    assert len({row.id for row in shared}) == 1
    assert sum(row.created for row in shared) == 1  # whichever committed first
    events = {(e["source"], e["key"]): e for e in await store.list_inbound(state=None)}
    assert {key: (e["state"], e["entityId"]) for key, e in events.items()} == {
        ("crm", "ev1"): ("matched", people["ev1"]),
        ("crm", "ev2"): ("matched", people["ev2"]),
        ("api", "ev7"): ("matching", None),
    }


async def test_triggers_naming_records_share_one_group_commit_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await ledger.open(tmp_path / "l.db", router=outbox.Router([CRM]))
    assert isinstance(store, sqlite.SQLiteLedger)
    begun = 0
    transaction = store.db.transaction

    def counted() -> Any:
        nonlocal begun
        begun += 1
        return transaction()

    monkeypatch.setattr(store.db, "transaction", counted)
    try:

        def naming(n: int) -> model.Task:
            target = model.Target("crm", "contacts", str(n))
            return model.Task("person", str(uuid.uuid4()), "emails", "trigger", (target,))

        found = await asyncio.gather(
            *(store.accept_trigger([naming(n)], "api", [], NOW) for n in range(10)),
            store.accept_trigger([], "api", [_matching(99)], NOW),
        )

        assert begun == 1
        assert [len(rows) for rows in found] == [1] * 10 + [0]
        assert len(await store.list_enrichments(state=None, after=0, limit=100)) == 10
        assert [e["key"] for e in await store.list_inbound(state=None)] == ["ev99"]
    finally:
        await store.close()


async def test_plain_triggers_share_the_accept_group_commit_on_postgresql(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Triggers that name no CRM record and carry no match task (the API's common case) must
    # ride the accept group commit, not open a transaction each: 856/s instead of 2,562/s.
    async with pg.schema() as url:
        config = settings_mod.LedgerSettings(url=SecretStr(url))
        await postgres_db.migrate(config)
        store = await ledger.open(config)
        begun = 0
        transaction = store.db.transaction  # type: ignore[attr-defined]

        def counted() -> Any:
            nonlocal begun
            begun += 1
            return transaction()

        monkeypatch.setattr(store.db, "transaction", counted)  # type: ignore[attr-defined]
        try:
            plain = [
                [model.Task("person", str(uuid.uuid4()), "emails", "trigger", ())]
                for _ in range(20)
            ]
            found = await asyncio.gather(
                *(store.accept_trigger(tasks, "api", [], NOW) for tasks in plain)
            )

            assert begun <= 2  # the first alone, the other 19 in one group
            assert [len(rows) for rows in found] == [1] * 20
            assert len(await store.list_enrichments(state=None, after=0, limit=100)) == 20
        finally:
            await store.close()

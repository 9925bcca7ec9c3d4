"""The matching verbs of the ledger, on every backend: waiting events, the match table,
settlement with its tasks and write-backs in one transaction, and the inbound listing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge import ledger, model, outbox
from tests.conftest import LedgerFactory

NOW = 1_800_000_000.0
CRM = outbox.Route("crm", needs_record=True, events=frozenset({"enrichment.finished"}))


@pytest.fixture
async def store(open_ledger: LedgerFactory, tmp_path: Path) -> AsyncIterator[ledger.Ledger]:
    opened = await open_ledger(tmp_path / "l.db", router=outbox.Router([CRM]))
    yield opened
    await opened.close()


def _event(n: int, key: str | None = None, *, problem: str | None = None) -> model.Inbound:
    record = ("contacts", str(n))
    match = model.Match(
        key if key is not None else f"linkedin:https://www.linkedin.com/in/p{n}",
        ("emails", "phones"),
        (model.Target("crm", *record),),
        write_back=True,
        problem=problem,
    )
    return model.Inbound(f"ev{n}", match=match, record=record)


async def test_events_wait_for_a_search_and_junk_is_unmatched_at_once(
    store: ledger.Ledger,
) -> None:
    received = await store.receive(
        "crm", [_event(1), _event(2), _event(3, "", problem="not a linkedin.com address")], NOW
    )
    assert (received.matching, received.accepted) == (2, ())
    waiting = await store.waiting_matches(NOW, 10)
    assert [w.key for w in waiting] == ["ev1", "ev2"]
    assert waiting[0].match.fields == ("emails", "phones")
    assert waiting[0].match.targets == (model.Target("crm", "contacts", "1"),)
    [junk] = await store.list_inbound(state="unmatched")
    assert (junk["key"], junk["reason"]) == ("ev3", "not a linkedin.com address")
    assert await store.known_matches(["linkedin:https://www.linkedin.com/in/p1"]) == {}


async def test_settling_accepts_matched_tasks_caches_outcomes_and_queues_write_backs(
    store: ledger.Ledger,
) -> None:
    await store.receive("crm", [_event(1), _event(2), _event(3), _event(4)], NOW)
    one, two, three, four = await store.waiting_matches(NOW, 10)
    person = str(uuid.uuid4())
    others = (str(uuid.uuid4()), str(uuid.uuid4()))
    result = await store.settle_matches(
        [
            (one, ledger.Found(one.match.key, "matched", person, (person,))),
            (two, ledger.Found(two.match.key, "ambiguous", None, others, "2 people match")),
            (three, ledger.Found(three.match.key, "unmatched", reason="nobody at Lance")),
            (four, ledger.Found(four.match.key, "retry", reason="HTTP 500", retry_at=NOW + 60)),
        ],
        NOW + 1,
    )
    assert [(row.created, row.state) for row in result.accepted] == [(True, "queued")] * 2
    queued = await store.queued(10)
    assert sorted(queued) == ["emails", "phones"]
    assert {row.entity_id for rows in queued.values() for row in rows} == {person}
    by_key = {row["key"]: row for row in await store.list_inbound(state=None)}
    assert (by_key["ev1"]["state"], by_key["ev1"]["entityId"]) == ("matched", person)
    assert by_key["ev2"]["state"] == "ambiguous"
    assert by_key["ev2"]["candidates"] == list(others)
    assert (by_key["ev3"]["state"], by_key["ev3"]["reason"]) == ("unmatched", "nobody at Lance")
    assert (by_key["ev4"]["state"], by_key["ev4"]["reason"]) == ("matching", "HTTP 500")
    known = await store.known_matches([e.match.key for e in (one, two, three, four)])
    assert {k: f.outcome for k, f in known.items()} == {
        one.match.key: "matched",
        two.match.key: "ambiguous",
        three.match.key: "unmatched",
    }
    assert known[one.match.key].entity_id == person
    # The failed search is due again only from its retry time.
    assert await store.waiting_matches(NOW + 30, 10) == []
    assert [w.key for w in await store.waiting_matches(NOW + 61, 10)] == ["ev4"]
    [write] = await store.due_write_backs(NOW + 1, 10)
    assert write[:4] == ("crm", "contacts", "1", person)


async def test_write_back_outcomes_are_recorded(store: ledger.Ledger) -> None:
    await store.receive("crm", [_event(1), _event(2)], NOW)
    waiting = await store.waiting_matches(NOW, 10)
    ids = [str(uuid.uuid4()) for _ in waiting]
    await store.settle_matches(
        [
            (w, ledger.Found(w.match.key, "matched", i, (i,)))
            for w, i in zip(waiting, ids, strict=True)
        ],
        NOW,
    )
    first, second = await store.due_write_backs(NOW, 10)
    await store.record_write_backs(
        [
            ledger.WriteBackResult(first, "done"),
            ledger.WriteBackResult(second, "retry", "HTTP 503", NOW + 5),
        ],
        NOW,
    )
    assert await store.due_write_backs(NOW + 1, 10) == []
    [again] = await store.due_write_backs(NOW + 5, 10)
    assert (again.object_id, again.attempts) == ("2", 1)


async def test_a_manual_trigger_settles_the_ambiguous_event_of_its_record(
    store: ledger.Ledger,
) -> None:
    await store.receive("crm", [_event(1)], NOW)
    [waiting] = await store.waiting_matches(NOW, 10)
    candidates = (str(uuid.uuid4()), str(uuid.uuid4()))
    await store.settle_matches(
        [(waiting, ledger.Found(waiting.match.key, "ambiguous", None, candidates, "2 match"))],
        NOW,
    )
    target = model.Target("crm", "contacts", "1")
    task = model.Task("person", candidates[1], "emails", "trigger", (target,))
    [row] = await store.accept_trigger([task], "api", [], NOW + 1)
    assert row.created
    [event] = await store.list_inbound(state=None)
    assert (event["state"], event["entityId"]) == ("matched", candidates[1])
    assert "manual trigger" in event["reason"]


async def test_inbound_pages_follow_their_cursor(store: ledger.Ledger) -> None:
    for n in range(5):
        await store.receive("crm", [_event(n, "", problem="junk")], NOW + n)
    first = await store.list_inbound(state="unmatched", limit=3)
    after = tuple(first[-1]["cursor"])
    rest = await store.list_inbound(state="unmatched", after=after, limit=3)  # type: ignore[arg-type]
    assert [r["key"] for r in first + rest] == [f"ev{n}" for n in range(5)]
    assert await store.list_inbound(state="matched") == []

"""Faults on both sides: Lance failing, throttling and dropping; receivers failing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from bridge import model, runtime
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.conftest import BridgeFactory, Clock, auth, drain, jobs_of, make_settings, tasks_for

TRIGGER = "POST /api/v1/operations/enrichment/batch"
QUERY = "POST /api/v1/operations/enrichment/batch/query"
Sim = tuple[sim.LanceSimulator, str]
Sink = tuple[sink_mod.WebhookSink, str]


async def _deliveries(client: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/deliveries?limit=1000", headers=auth())
    rows: list[dict[str, Any]] = (await response.json())["deliveries"]
    return rows


async def test_lance_failing_ten_percent_of_requests_loses_nothing(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    lance_sim.set_faults(fail_rate=0.04, throttle_rate=0.03, drop_rate=0.03, retry_after_s=1)
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    tasks = tasks_for(300, "emails") + tasks_for(100, "phones")
    for start in range(0, len(tasks), 50):
        response = await client.post(
            "/v1/triggers", json={"tasks": tasks[start : start + 50]}, headers=auth()
        )
        assert response.status == 202

    await drain(client, rounds=400)

    faulted = sum(n for (_, status), n in lance_sim.statuses.items() if status != 200)
    assert faulted > 0, "the simulator injected faults"
    assert len(receiver.received) == 400
    assert {p["data"]["enrichment"]["entityId"] for p in receiver.received.values()} == {
        t["entityId"] for t in tasks
    }
    assert max(lance_sim.charges.values()) == 1, "no paid trigger repeated"


async def test_receiver_failing_once_is_delivered_on_the_retry(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path
) -> None:
    _, lance_url = simulator
    receiver, sink_url = sink
    receiver.fail_next(1, 500)
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    await client.post("/v1/triggers", json={"tasks": tasks_for(1, "emails")}, headers=auth())

    await drain(client)

    [delivery] = await _deliveries(client)
    assert delivery["state"] == "delivered"
    assert delivery["attempts"] == 2
    assert receiver.attempts[delivery["messageId"]] == 2, "same webhook-id on the retry"
    assert list(receiver.received) == [delivery["messageId"]]


async def test_receiver_always_failing_ends_dead_with_reason_and_replays(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    receiver.fail_always(503)
    settings = make_settings(
        tmp_path, lance_url, sink_url, delivery={"retry_schedule_seconds": [0, 1, 1]}
    )
    client = await make_bridge(settings)
    await client.post("/v1/triggers", json={"tasks": tasks_for(1, "phones")}, headers=auth())

    await drain(client)

    [delivery] = await _deliveries(client)
    assert delivery["state"] == "dead"
    assert delivery["attempts"] == 3
    assert delivery["lastError"].startswith("retries exhausted after 3 attempts: HTTP 503")
    assert delivery["responseStatus"] == 503

    receiver.fail_always(None)
    triggers_before = lance_sim.requests[TRIGGER]
    response = await client.post(f"/v1/deliveries/{delivery['id']}/retry", headers=auth())
    assert response.status == 200
    assert (await response.json())["state"] == "pending"
    await drain(client)

    [delivery] = await _deliveries(client)
    assert delivery["state"] == "delivered"
    assert list(receiver.received) == [delivery["messageId"]]
    assert lance_sim.requests[TRIGGER] == triggers_before, "a replay never re-triggers Lance"


async def test_permanent_rejection_is_dead_at_once(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path
) -> None:
    _, lance_url = simulator
    receiver, sink_url = sink
    receiver.fail_always(422)
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    await client.post("/v1/triggers", json={"tasks": tasks_for(1, "emails")}, headers=auth())

    await drain(client)

    [delivery] = await _deliveries(client)
    assert (delivery["state"], delivery["attempts"]) == ("dead", 1)
    assert delivery["lastError"].startswith("HTTP 422")


async def test_throttled_receiver_is_not_retried_sooner_than_a_minute(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path, clock: Clock
) -> None:
    _, lance_url = simulator
    receiver, sink_url = sink
    receiver.fail_next(1, 429, retry_after=1)
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    await client.post("/v1/triggers", json={"tasks": tasks_for(1, "emails")}, headers=auth())
    jobs = jobs_of(client)
    for _ in range(3):
        await jobs.run_all_once()
        clock.advance(2)

    [delivery] = await _deliveries(client)
    assert (delivery["state"], delivery["attempts"]) == ("pending", 1)
    store = client.app[runtime.BRIDGE].ledger
    [(next_at, updated)] = await store.fetch(
        "SELECT next_attempt_at, updated_at FROM deliveries WHERE id = ?", (delivery["id"],)
    )
    assert next_at - updated >= 60


@pytest.mark.parametrize("sim_config", [{"credits": 0}], indirect=True)
async def test_insufficient_credits_holds_the_work_without_a_hot_loop(
    make_bridge: BridgeFactory, simulator: Sim, tmp_path: Path, clock: Clock
) -> None:
    lance_sim, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url))
    await client.post("/v1/triggers", json={"tasks": tasks_for(5, "emails")}, headers=auth())
    jobs = jobs_of(client)
    for _ in range(10):
        report = await jobs.triggerer.run_once()
        clock.advance(2)
    assert report.held == "insufficient Lance credits"
    assert lance_sim.requests[TRIGGER] == 1, "held, not retried every run"
    rows = await client.app[runtime.BRIDGE].ledger.fetch("SELECT state FROM enrichments")
    assert {row[0] for row in rows} == {"queued"}
    assert lance_sim.credits_charged == 0
    held = await client.app[runtime.BRIDGE].ledger.get_meta("trigger_held")
    assert held is not None
    assert held.endswith("insufficient Lance credits"), "surfaced for `lance-bridge status`"


async def test_lance_without_a_record_ends_lost_and_says_so(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path
) -> None:
    _, lance_url = simulator
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    task = {"entityId": str(uuid.uuid4()), "field": "summary", "entityType": "company",
            "mode": "track"}  # fmt: skip
    await client.post("/v1/triggers", json={"tasks": [task]}, headers=auth())

    rounds = await drain(client, rounds=100)

    [payload] = receiver.received.values()
    assert payload["type"] == "enrichment.lost"
    assert "no record" in payload["data"]["reason"]
    assert rounds * 2 >= 120, "not before the grace period"


async def test_an_enrichment_pending_past_the_deadline_expires(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    company = str(uuid.uuid4())
    lance_sim.start_enrichment(company, "summary", "company", completion_s=5000)
    settings = make_settings(tmp_path, lance_url, sink_url, poll={"expire_after_seconds": 60})
    client = await make_bridge(settings)
    task = {"entityId": company, "field": "summary", "entityType": "company", "mode": "track"}
    await client.post("/v1/triggers", json={"tasks": [task]}, headers=auth())

    await drain(client, rounds=100)

    [payload] = receiver.received.values()
    assert payload["type"] == "enrichment.expired"
    assert payload["data"]["enrichment"]["status"] == "pending"


async def test_a_row_lance_refuses_to_report_on_fails_alone(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path, clock: Clock
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    good = [str(uuid.uuid4()) for _ in range(9)]
    for entity_id in good:
        lance_sim.start_enrichment(entity_id, "summary", "company", outcome="found", completion_s=0)
    # A ledger written before ids were checked may hold one Lance refuses (not a v4 UUID).
    refused = str(uuid.uuid1())
    store = client.app[runtime.BRIDGE].ledger
    await store.accept(
        [model.Task("company", e, "summary", "track") for e in [*good[:4], refused, *good[4:]]],
        clock(),
    )

    report = await jobs_of(client).poller.run_once()

    assert report.terminal == 10
    rows = dict(await store.fetch("SELECT entity_id, state FROM enrichments"))
    assert rows.pop(refused) == "failed"
    assert set(rows.values()) == {"finished"}
    [(error,)] = await store.fetch("SELECT error FROM enrichments WHERE entity_id = ?", (refused,))
    assert error.startswith("Lance refused to report on it")
    assert lance_sim.requests[QUERY] <= 1 + 2 * 4, "bisection, not one request per row"
    await drain(client)
    types = sorted(p["type"] for p in receiver.received.values())
    assert types == ["enrichment.failed"] + ["enrichment.finished"] * 9


@pytest.mark.parametrize("sim_config", [{"outcomes": {"failed": 1.0}}], indirect=True)
async def test_a_trigger_answer_lost_in_a_crash_is_recovered_without_a_second_charge(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path, clock: Clock
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    await client.post("/v1/triggers", json={"tasks": tasks_for(1, "emails")}, headers=auth())
    bridge = client.app[runtime.BRIDGE]
    assert bridge.client is not None
    # The trigger went out, then the process died before Lance's answer was stored ...
    [row] = (await bridge.ledger.queued(10))["emails"]
    await bridge.ledger.mark_sent([row.id], clock())
    await bridge.client.trigger_batch("emails", [row.entity_id])
    clock.advance(5)  # ... and meanwhile Lance's record failed, so a new trigger would pay.

    await drain(client)

    assert lance_sim.requests[TRIGGER] == 1, "asked Lance instead of triggering again"
    assert sum(lance_sim.charges.values()) == 1
    [payload] = receiver.received.values()
    assert payload["type"] == "enrichment.failed"


async def test_a_trigger_marked_but_never_sent_is_sent(
    make_bridge: BridgeFactory, simulator: Sim, sink: Sink, tmp_path: Path, clock: Clock
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    await client.post("/v1/triggers", json={"tasks": tasks_for(1, "phones")}, headers=auth())
    store = client.app[runtime.BRIDGE].ledger
    [row] = (await store.queued(10))["phones"]
    await store.mark_sent([row.id], clock())  # died before the request left

    await drain(client)

    assert lance_sim.requests[QUERY] >= 1
    assert lance_sim.requests[TRIGGER] == 1
    assert [p["type"] for p in receiver.received.values()] == ["enrichment.finished"]

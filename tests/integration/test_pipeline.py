"""End to end over loopback: triggers in → simulator → fetch → signed webhooks out."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bridge import runtime
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.conftest import SECRET, BridgeFactory, Clock, auth, drain, make_settings, tasks_for

TRIGGER = "POST /api/v1/operations/enrichment/batch"
QUERY = "POST /api/v1/operations/enrichment/batch/query"


async def test_every_enrichment_is_delivered_signed_with_its_values(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    tasks = tasks_for(250, "emails") + tasks_for(150, "phones")

    response = await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    assert response.status == 202
    assert all(row["state"] == "queued" for row in (await response.json())["enrichments"])
    await drain(client)

    # The floor the API allows: ⌈n/100⌉ trigger calls per field.
    assert lance_sim.requests[TRIGGER] == math.ceil(250 / 100) + math.ceil(150 / 100)
    # One tick polled all 400 due rows: ⌈400/200⌉ queries.
    assert lance_sim.requests[QUERY] == math.ceil(400 / 200)
    assert len(receiver.received) == 400
    assert receiver.rejected == 0
    by_entity = {p["data"]["enrichment"]["entityId"]: p for p in receiver.received.values()}
    for task in tasks:
        payload = by_entity[task["entityId"]]
        assert payload["type"] == "enrichment.finished"
        values = payload["data"]["values"][task["field"]]
        person = lance_sim.record("person", task["entityId"], task["field"])
        assert person is not None
        assert person["status"] == "finished"
        assert values, "a found enrichment carries the person's values"
    assert max(lance_sim.charges.values()) == 1


async def test_signatures_verify_with_the_reference_library(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    tmp_path: Path,
    aiohttp_server: Any,
) -> None:
    seen: list[tuple[bytes, dict[str, str]]] = []

    async def capture(request: web.Request) -> web.Response:
        seen.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", capture)
    server = await aiohttp_server(app)
    _, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url, str(server.make_url(""))))
    await client.post("/v1/triggers", json={"tasks": tasks_for(3, "emails")}, headers=auth())
    await drain(client)

    assert len(seen) == 3
    for body, headers in seen:
        payload = Webhook(SECRET).verify(body, headers)
        assert payload["id"] == headers["webhook-id"]
        assert set(payload) == {"type", "id", "timestamp", "data"}
        assert {"enrichment", "values", "target"} <= set(payload["data"])


async def test_a_task_already_in_flight_attaches_targets_and_is_triggered_once(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
) -> None:
    lance_sim, lance_url = simulator
    _, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    task = tasks_for(1, "emails")[0]
    first = await client.post("/v1/triggers", json={"tasks": [task]}, headers=auth())
    again = await client.post("/v1/triggers", json={"tasks": [task, task]}, headers=auth())
    first_rows = (await first.json())["enrichments"]
    again_rows = (await again.json())["enrichments"]
    assert first_rows[0]["created"] is True
    assert [row["id"] for row in again_rows] == [first_rows[0]["id"]] * 2
    assert not any(row["created"] for row in again_rows)
    await drain(client)
    assert lance_sim.requests[TRIGGER] == 1
    assert sum(lance_sim.charges.values()) == 1


async def test_track_mode_follows_a_company_summary_without_triggering(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    company = str(uuid.uuid4())
    lance_sim.start_enrichment(company, "summary", "company", outcome="found", completion_s=0)
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    task = {"entityId": company, "field": "summary", "entityType": "company", "mode": "track"}
    response = await client.post("/v1/triggers", json={"tasks": [task]}, headers=auth())
    assert (await response.json())["enrichments"][0]["state"] == "pending"
    await drain(client)
    assert lance_sim.requests[TRIGGER] == 0
    [payload] = receiver.received.values()
    assert payload["data"]["values"]["summary"]


async def test_query_endpoint_answers_from_the_ledger_in_lance_shape(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
) -> None:
    _, lance_url = simulator
    _, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    tasks = tasks_for(2, "phones")
    await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    await drain(client)
    unknown = {"entityId": str(uuid.uuid4()), "field": "emails"}
    response = await client.post(
        "/v1/enrichments/query", json={"tasks": [*tasks, unknown]}, headers=auth()
    )
    assert response.status == 200
    records = await response.json()
    assert {r["entityId"] for r in records} == {t["entityId"] for t in tasks}
    assert all(r["status"] == "finished" and r["bridge"]["values"]["phones"] for r in records)


async def test_ledger_invariant_holds_after_a_run(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
) -> None:
    _, lance_url = simulator
    _, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    await client.post("/v1/triggers", json={"tasks": tasks_for(30, "emails")}, headers=auth())
    await drain(client)
    store = client.app[runtime.BRIDGE].ledger
    [(accepted, terminal)] = await store.fetch(
        "SELECT count(*), count(*) FILTER (WHERE state NOT IN ('queued','pending'))"
        " FROM enrichments"
    )
    [(deliveries, settled)] = await store.fetch(
        "SELECT count(*), count(*) FILTER (WHERE state IN ('delivered','dead')) FROM deliveries"
    )
    assert accepted == terminal == 30
    assert deliveries == settled == 30

"""``GET /metrics`` on the real app: ledger figures, live counters, the invariant."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bridge import metrics, runtime
from bridge.sim import lance as sim
from bridge.sim import salesforce as sf_sim
from bridge.sim import sink as sink_mod
from tests.conftest import (
    SECRET,
    BridgeFactory,
    Clock,
    auth,
    drain,
    jobs_of,
    make_settings,
    tasks_for,
)
from tests.integration import test_salesforce as sf_test

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: TestClient[Any, Any]) -> Samples:
    """Every sample of ``/metrics``, keyed by (name, sorted labels); fetched without auth."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` summed per value of ``label``."""
    found: Counter[str] = Counter()
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            found[dict(labels)[label]] += value
    return dict(found)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def sim_endpoint(endpoint: str) -> str:
    """The simulator's name of one of the client's endpoints."""
    method, path = endpoint.split(" ")
    prefix = "" if path.startswith("entities/") else "operations/"
    return f"{method} /api/v1/{prefix}{path}"


async def test_after_a_drained_run_the_metrics_match_the_ledger_and_the_simulator(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
) -> None:
    lance_sim, lance_url = simulator
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, lance_url, sink_url))
    tasks = tasks_for(30, "emails") + tasks_for(20, "phones")
    await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    await drain(client)

    samples = await scrape(client)

    store = client.app[runtime.BRIDGE].ledger
    in_ledger = dict(await store.fetch("SELECT state, count(*) FROM enrichments GROUP BY 1"))
    states = by_label(samples, "lance_bridge_enrichments", "state")
    assert {s: n for s, n in states.items() if n} == in_ledger == {"finished": 50}
    assert value(samples, "lance_bridge_deliveries", connector="hook", state="delivered") == 50
    assert value(samples, "lance_bridge_deliveries", connector="hook", state="dead") == 0
    assert len(receiver.received) == 50
    lance_requests = by_label(samples, "lance_bridge_lance_requests_total", "endpoint")
    assert {sim_endpoint(e): n for e, n in lance_requests.items()} == dict(lance_sim.requests)
    assert set(by_label(samples, "lance_bridge_lance_requests_total", "status")) == {"200"}
    charged = by_label(samples, "lance_bridge_charged_enrichments", "field")
    assert charged == {"emails": 30, "phones": 20}
    assert sum(lance_sim.charges.values()) == 50
    assert value(samples, "lance_bridge_oldest_in_flight_age_seconds") == 0
    assert value(samples, "lance_bridge_events", connector="hook") == 50
    assert value(samples, "lance_bridge_events_undelivered", connector="hook") == 0
    assert value(samples, "lance_bridge_invariant_ok") == 1
    delivered = by_label(samples, "lance_bridge_delivery_attempts_total", "outcome")
    assert delivered == {"delivered": 50}
    assert value(samples, "lance_bridge_dead_letters_total", connector="hook") == 0
    assert value(samples, "lance_bridge_delivery_retries_total", connector="hook") == 0


async def test_a_retry_and_a_dead_delivery_are_counted(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, simulator[1], sink_url))
    receiver.fail_always(410)
    receiver.fail_next(1, 503)  # first attempt: retried; second: 410 Gone, dead
    await client.post("/v1/triggers", json={"tasks": tasks_for(1, "emails")}, headers=auth())
    await drain(client)
    clock.advance(metrics.CACHE_S)

    samples = await scrape(client)

    assert value(samples, "lance_bridge_delivery_retries_total", connector="hook") == 1
    assert value(samples, "lance_bridge_dead_letters_total", connector="hook") == 1
    attempts = "lance_bridge_delivery_attempts_total"
    assert value(samples, attempts, connector="hook", outcome="retry", status="503") == 1
    assert value(samples, attempts, connector="hook", outcome="dead", status="410") == 1
    assert value(samples, "lance_bridge_deliveries", connector="hook", state="dead") == 1
    # A dead delivery is settled: the invariant counts it.
    assert value(samples, "lance_bridge_invariant_ok") == 1


async def test_ledger_figures_are_cached_for_a_few_seconds(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    client = await make_bridge(make_settings(tmp_path, simulator[1], sink[1]))
    await client.post("/v1/triggers", json={"tasks": tasks_for(3, "emails")}, headers=auth())
    clock.advance(7.0)
    first = await scrape(client)
    assert value(first, "lance_bridge_enrichments", state="queued") == 3
    assert value(first, "lance_bridge_oldest_in_flight_age_seconds") == 7.0

    await jobs_of(client).run_all_once()  # the clock stands still: the figures are reused
    cached = await scrape(client)
    assert value(cached, "lance_bridge_enrichments", state="queued") == 3
    # Live counters are never cached.
    requests = by_label(cached, "lance_bridge_lance_requests_total", "endpoint")
    assert requests == {"POST enrichment/batch": 1}

    clock.advance(metrics.CACHE_S)
    fresh = await scrape(client)
    assert value(fresh, "lance_bridge_enrichments", state="queued") == 0
    assert value(fresh, "lance_bridge_enrichments", state="pending") == 3


async def test_a_missing_delivery_row_or_an_unknown_state_breaks_the_invariant(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    client = await make_bridge(make_settings(tmp_path, simulator[1], sink[1]))
    await client.post("/v1/triggers", json={"tasks": tasks_for(4, "emails")}, headers=auth())
    await drain(client)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute("DELETE FROM deliveries WHERE id = (SELECT min(id) FROM deliveries)")
    clock.advance(metrics.CACHE_S)

    samples = await scrape(client)
    assert value(samples, "lance_bridge_events_undelivered", connector="hook") == 1
    assert value(samples, "lance_bridge_invariant_ok") == 0

    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute(
            "UPDATE deliveries SET state = 'pending' WHERE id = (SELECT max(id) FROM deliveries)"
        )
    clock.advance(metrics.CACHE_S)
    assert value(await scrape(client), "lance_bridge_invariant_ok") == 0


async def test_charges_are_counted_incrementally_across_scrapes(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    client = await make_bridge(make_settings(tmp_path, simulator[1], sink[1]))
    total = 0
    for count in (5, 7, 3):
        await client.post(
            "/v1/triggers", json={"tasks": tasks_for(count, "phones")}, headers=auth()
        )
        await jobs_of(client).triggerer.run_once()  # charged (the simulator charges on trigger)
        clock.advance(metrics.CHARGES_CACHE_S)
        # Rows in flight are counted afresh, rows settled before them once.
        charged = by_label(await scrape(client), "lance_bridge_charged_enrichments", "field")
        assert charged == {"phones": total + count}
        await drain(client)
        total += count
        clock.advance(metrics.CHARGES_CACHE_S)
        charged = by_label(await scrape(client), "lance_bridge_charged_enrichments", "field")
        assert charged == {"phones": total}


async def test_two_apps_in_one_process_keep_their_own_metrics(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await make_bridge(make_settings(tmp_path / "a", simulator[1], sink[1]))
    second = await make_bridge(make_settings(tmp_path / "b", simulator[1], sink[1]))
    await first.post("/v1/triggers", json={"tasks": tasks_for(2, "emails")}, headers=auth())
    await drain(first)

    one, other = await scrape(first), await scrape(second)

    assert value(one, "lance_bridge_enrichments", state="finished") == 2
    assert value(other, "lance_bridge_enrichments", state="finished") == 0
    assert by_label(other, "lance_bridge_lance_requests_total", "endpoint") == {}
    assert first.app[runtime.METRICS].registry is not second.app[runtime.METRICS].registry
    assert prometheus_client.REGISTRY.get_sample_value("lance_bridge_invariant_ok") is None


async def test_a_connector_added_to_an_old_ledger_does_not_break_the_invariant(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = await make_bridge(make_settings(tmp_path, simulator[1]))  # no connector yet
    await before.post("/v1/triggers", json={"tasks": tasks_for(3, "emails")}, headers=auth())
    await drain(before)
    await before.close()

    client = await make_bridge(make_settings(tmp_path, simulator[1], sink[1]))
    samples = await scrape(client)

    # The three old events never had rows for `hook`: noted at start, not an alert.
    assert value(samples, "lance_bridge_events", connector="hook") == 3
    assert value(samples, "lance_bridge_events_undelivered", connector="hook") == 0
    assert value(samples, "lance_bridge_invariant_ok") == 1
    [warning] = [
        r for r in caplog.records if getattr(r, "event", "") == "metrics.undelivered_at_start"
    ]
    assert warning.undelivered == {"hook": 3}

    await client.post("/v1/triggers", json={"tasks": tasks_for(2, "emails")}, headers=auth())
    await drain(client)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute("DELETE FROM deliveries WHERE id = (SELECT max(id) FROM deliveries)")
    clock.advance(metrics.CACHE_S)
    samples = await scrape(client)
    assert value(samples, "lance_bridge_events", connector="hook") == 5
    assert value(samples, "lance_bridge_events_undelivered", connector="hook") == 1
    assert value(samples, "lance_bridge_invariant_ok") == 0


async def test_every_connector_counts_its_requests_in_crm_requests_total(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    # A demo-like run: tasks for a webhook receiver, an Outbound Message from a Salesforce org.
    sandbox = sf_sim.SalesforceSandbox(clock=clock, org_id=sf_test.ORG_ID)
    runner = await sf_sim.serve(sandbox)
    try:
        webhook = {"name": "hook", "type": "webhook", "url": f"{sink[1]}/hook", "secret": SECRET}
        salesforce = sf_test.sf_table(sf_sim.base_url(runner))
        settings = make_settings(tmp_path, simulator[1], connectors=[webhook, salesforce])
        client = await make_bridge(settings)
        await client.post("/v1/triggers", json={"tasks": tasks_for(2, "emails")}, headers=auth())
        [contact] = sf_test.people(sandbox, 1)
        answer = await sf_test.post_soap(client, sf_test.envelope(sandbox, [("Contact", contact)]))
        assert answer.status == 200
        await drain(client)
        sf_test.assert_enriched(sandbox, "Contact", contact)

        samples = await scrape(client)
    finally:
        await runner.cleanup()

    crm = "lance_bridge_crm_requests_total"
    # The webhook gets every event: the two tasks' and the Contact's (emails and phones).
    assert value(samples, crm, connector="hook", endpoint="POST", status="204") == 4
    assert len(sink[0].received) == 4
    salesforce_calls = {
        dict(labels)["endpoint"]: n
        for (name, labels), n in samples.items()
        if name == crm and dict(labels)["connector"] == "salesforce"
    }
    assert salesforce_calls == {
        "POST /services/oauth2/token": 1,
        "POST /composite/sobjects/Contact": 1,  # fill_if_empty reads the current values
        "PATCH /composite/sobjects": 1,
    }

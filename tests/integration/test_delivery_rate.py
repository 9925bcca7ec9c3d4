"""Delivery drains a backlog at the receiver's pace, not one batch per scheduler tick."""

from __future__ import annotations

import datetime
from pathlib import Path

from standardwebhooks import webhooks

from bridge import runtime
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from connectors import webhook
from tests.conftest import SECRET, BridgeFactory, Clock, auth, jobs_of, make_settings, tasks_for

EVENTS = 45
BATCH = 10


async def test_one_run_delivers_every_due_event_in_batches_of_batch_size(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    _, lance_url = simulator
    receiver, sink_url = sink
    settings = make_settings(tmp_path, lance_url, sink_url, delivery={"batch_size": BATCH})
    client = await make_bridge(settings)
    await client.post("/v1/triggers", json={"tasks": tasks_for(EVENTS, "emails")}, headers=auth())
    jobs = jobs_of(client)
    store = client.app[runtime.BRIDGE].ledger
    for _ in range(10):  # every job but delivery, until all the events wait to be sent
        for job in (jobs.triggerer, jobs.poller, jobs.fetcher):
            await job.run_once()
        clock.advance(2.0)
        if (await store.counts())["deliveries"].get("hook", {}).get("pending") == EVENTS:
            break

    report = await jobs.dispatcher.run_once()

    assert report.delivered == EVENTS, "the run went on while full batches were due"
    assert len(receiver.received) == EVENTS
    assert (await store.counts())["deliveries"] == {"hook": {"delivered": EVENTS}}


def test_signatures_are_byte_identical_to_the_reference_library() -> None:
    config = webhook.WebhookConfig(name="hook", url="https://example.test/hook", secret=SECRET)
    signer = webhook.Signer(config.secret.get_secret_value())
    body = '{"type":"enrichment.finished","data":{"name":"Zoë"}}'
    at = datetime.datetime.fromtimestamp(1_800_000_000, tz=datetime.UTC)
    expected = webhooks.Webhook(SECRET).sign("msg_1", at, body)
    assert signer.sign("msg_1", 1_800_000_000, body.encode()) == expected

"""End-to-end benchmark: triggers → Lance simulator → fetch → delivery, on the scheduler.

Delivery goes to a signed webhook receiver, or with ``crm="hubspot"`` to the HubSpot sandbox:
then HubSpot-signed webhooks start the enrichments and batch updates write them back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import math
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pydantic
from aiohttp import web
from standardwebhooks import webhooks

from bridge import app as app_mod
from bridge import lance, ledger, model, runtime
from bridge import settings as settings_mod
from bridge.bench import Result, peak_rss_mb, procs
from bridge.sim import _http
from bridge.sim import lance as sim

TOKEN = "bench-token"  # noqa: S105 - a loopback-only token for this run
TRIGGER_CHUNK = 1000
NAIVE_ENRICHMENTS = 300
WATCH_EVERY_S = 0.2
DEADLINE_S = 900.0


def _settings(folder: Path, lance_url: str, connector: dict[str, Any]) -> settings_mod.Settings:
    return settings_mod.Settings(
        lance={"base_url": lance_url, "token": sim.SimConfig.token, "max_concurrency": 8},
        ledger={"path": folder / "e2e.db"},
        server={"api_tokens": [TOKEN]},
        poll={
            "interval_seconds": 0.5,
            "young_seconds": 5,
            "max_delay_seconds": 2,
            "max_requests_per_tick": 500,
        },
        trigger={"interval_seconds": 0.2, "max_requests_per_run": 200},
        fetch={"interval_seconds": 0.2, "batch_size": 2000, "concurrency": 16},
        delivery={"interval_seconds": 0.2, "batch_size": 5000},
        inbound={"interval_seconds": 0.2},
        connectors=[connector],
    )


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    """The bridge app served on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield _http.base_url(runner)
    finally:
        await runner.cleanup()


async def _until(check: Callable[[], Awaitable[bool]]) -> float:
    deadline = time.perf_counter() + DEADLINE_S
    while not await check():
        if time.perf_counter() > deadline:
            raise TimeoutError("e2e benchmark did not finish in time")
        await asyncio.sleep(WATCH_EVERY_S)
    return time.perf_counter()


async def bench_e2e(count: int, folder: Path, crm: str = "webhook") -> Result:
    """Run ``count`` enrichments through the daemon's own scheduler."""
    if crm == "hubspot":
        return await _bench_hubspot(count, folder)
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    process, conn = procs.spawn(procs.remote_process, secret)
    lance_url, sink_url = await procs.ask(conn)
    webhook = {
        "name": "bench-webhook",
        "type": "webhook",
        "url": f"{sink_url}/hook",
        "secret": secret,
        "max_concurrency": 64,
    }
    app = app_mod.create_app(_settings(folder, lance_url, webhook))
    try:
        async with _served(app) as url:
            store = app[runtime.BRIDGE].ledger
            started = time.perf_counter()
            await _send(url, count)
            at_lance = await _until(lambda: _none_queued(store))
            done = await _until(lambda: _all_delivered(store, count))
            remote = await procs.ask(conn, "stats")
        naive_rate, naive_requests = await _naive_e2e(lance_url, sink_url, secret)
    finally:
        conn.send("stop")
        process.join(10)
    requests = remote["requests"]
    lance_total = sum(requests.values())
    after_lance = done - at_lance
    figures: dict[str, float | int | str] = {
        "enrichments": count,
        "total_seconds": round(done - started, 1),
        "seconds_after_lance_had_all": round(after_lance, 1),
        "deliveries_per_s": round(count / (done - started)),
        "webhooks_verified_by_receiver": remote["received"],
        "lance_requests_per_enrichment": round(lance_total / count, 3),
        "lance_triggers": _count(requests, "/enrichment/batch"),
        "lance_batch_queries": _count(requests, "/enrichment/batch/query"),
        "lance_entity_reads": _count(requests, "/prospects/person/{id}"),
        "naive_enrichments_per_s": round(naive_rate),
        "naive_lance_requests_per_enrichment": round(naive_requests, 3),
        "ratio_rate_ours_to_naive": round(count / (done - started) / naive_rate, 1),
        "ratio_lance_requests_naive_to_ours": round(naive_requests / (lance_total / count), 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    bars = {
        "all delivered and verified": remote["received"] == count,
        "< 60 s after Lance finished them": after_lance < 60,
    }
    return Result("e2e", figures, bars)


async def _naive_e2e(lance_url: str, sink_url: str, secret: str) -> tuple[float, float]:
    """A hand-written loop, one enrichment at a time: trigger it, ask its status until it
    ends, read the person when data was found, POST the signed webhook.

    Returns:
        Enrichments per second, and Lance requests per enrichment.
    """
    signer = webhooks.Webhook(secret)
    headers = {"Authorization": f"Bearer {sim.SimConfig.token}"}
    lance_requests = 0
    async with aiohttp.ClientSession() as session:
        client = lance.LanceClient(session, lance_url, pydantic.SecretStr(sim.SimConfig.token))
        started = time.perf_counter()
        for person in procs.entity_ids(NAIVE_ENRICHMENTS, seed=procs.SEED + 1):
            record: dict[str, Any] = dict(await client.trigger_one(person, "emails"))
            lance_requests += 1
            while record.get("status") not in lance.TERMINAL_STATUSES:
                url = f"{lance_url}/api/v1/operations/enrichment/{person}"
                async with session.get(url, params={"field": "emails"}, headers=headers) as r:
                    record = await r.json()
                lance_requests += 1
            found = await client.entity("person", person) if record.get("dataFound") else None
            lance_requests += record.get("dataFound") is True
            body = orjson.dumps({"type": "enrichment.finished", "data": {"person": found}})
            message_id = f"msg_naive_{person}"
            now = datetime.datetime.now(tz=datetime.UTC)
            signed = {
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(message_id, now, body.decode()),
            }
            async with session.post(f"{sink_url}/hook", data=body, headers=signed) as r:
                await r.read()
        elapsed = time.perf_counter() - started
    return NAIVE_ENRICHMENTS / elapsed, lance_requests / NAIVE_ENRICHMENTS


async def _bench_hubspot(count: int, folder: Path) -> Result:
    """``count`` enrichments (emails and phones of count/2 contacts) from HubSpot and back."""
    contacts = max(1, count // 2)
    count = contacts * 2
    secret = secrets.token_urlsafe(24)
    process, conn = procs.spawn(procs.hubspot_process, contacts, secret)
    lance_url, hubspot_url = await procs.ask(conn)
    hubspot = {
        "name": "hubspot",
        "type": "hubspot",
        "base_url": hubspot_url,
        "access_token": procs.HUBSPOT_TOKEN,
        "client_secret": secret,
        "rate_limit_requests": 0,
        "max_concurrency": 8,
        "contacts": {
            "properties": {"lance_enrichment_status": {"from": "state", "policy": "overwrite"}}
        },
    }
    app = app_mod.create_app(_settings(folder, lance_url, hubspot))
    try:
        async with _served(app) as url:
            store = app[runtime.BRIDGE].ledger
            started = time.perf_counter()
            refused = await procs.ask(conn, ("hooks", f"{url}/hooks/hubspot"))
            at_lance = await _until(lambda: _none_queued(store))
            done = await _until(lambda: _all_delivered(store, count))
            remote = await procs.ask(conn, "stats")
            sample = [str(i) for i in range(1, min(contacts, 2000) + 1)]
            ours_write_s = await _batched_writes(app, sample)
            naive_write_s = await procs.naive_writes(hubspot_url, sample, _phones(len(sample), 2))
    finally:
        conn.send("stop")
        process.join(10)
    crm = remote["crm_requests"]
    updates = _count(crm, "/batch/update")
    reads = _count(crm, "/batch/read")
    lance_total = sum(remote["requests"].values())
    after_lance = done - at_lance
    ours_per_s = contacts / (done - started)
    figures: dict[str, float | int | str] = {
        "enrichments": count,
        "contacts": contacts,
        "hubspot_webhook_requests_refused": refused,
        "total_seconds": round(done - started, 1),
        "seconds_after_lance_had_all": round(after_lance, 1),
        "contacts_written_per_s": round(ours_per_s),
        "contacts_written": remote["written"],
        "hubspot_batch_updates": f"{updates} (floor {math.ceil(contacts / 100)})",
        "hubspot_batch_reads": reads,
        "hubspot_requests_per_1000_contact_updates": round((updates + reads) * 1000 / contacts),
        "naive_requests_per_1000_contact_updates": 1000,
        "ours_vs_naive_requests": f"{1000 / ((updates + reads) * 1000 / contacts):.1f}x fewer",
        "connector_contacts_written_per_s": round(ours_write_s),
        "naive_one_patch_per_contact_per_s": round(naive_write_s),
        "connector_vs_naive_throughput": f"{ours_write_s / naive_write_s:.1f}x",
        "lance_requests_per_enrichment": round(lance_total / count, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    bars = {
        "all written back": remote["written"] == contacts and refused == 0,
        "< 60 s after Lance finished them": after_lance < 60,
    }
    return Result("e2e (hubspot)", figures, bars)


def _phones(n: int, seed: int) -> list[str]:
    return [f"+1 555 {seed:02d}{i:05d}" for i in range(n)]


async def _batched_writes(app: web.Application, ids: list[str]) -> float:
    """Contacts written per second by the HubSpot connector itself (reads, then updates).

    The same records the naive baseline then writes one PATCH each: the ratio of the two is
    the connector's batching, measured on this machine in this run.
    """
    connector = app[runtime.BRIDGE].connectors["hubspot"]
    events = [
        model.Delivery(
            id=n,
            enrichment_id=n,
            connector="hubspot",
            object_type="contacts",
            object_id=i,
            message_id=f"msg_bench_{n}",
            event_type="enrichment.finished",
            body=orjson.dumps(
                {
                    "type": "enrichment.finished",
                    "data": {"state": "finished", "values": {"phones": [p]}},
                }
            ),
        )
        for n, (i, p) in enumerate(zip(ids, _phones(len(ids), 1), strict=True))
    ]
    started = time.perf_counter()
    outcomes = await connector.send(events)
    elapsed = time.perf_counter() - started
    if any(o.kind != "delivered" for o in outcomes):
        raise RuntimeError("the connector's timed writes were not all delivered")
    return len(ids) / elapsed


async def _send(url: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    fields = ("emails", "phones")
    async with aiohttp.ClientSession(headers=headers) as session:
        for start in range(0, count, TRIGGER_CHUNK):
            tasks = [
                {"entityId": str(uuid.uuid4()), "field": fields[i % 2]}
                for i in range(start, min(start + TRIGGER_CHUNK, count))
            ]
            async with session.post(f"{url}/v1/triggers", json={"tasks": tasks}) as response:
                if response.status != 202:
                    raise RuntimeError(f"trigger failed: {response.status}")


async def _none_queued(store: ledger.Ledger) -> bool:
    return await store.count_enrichments(model.EnrichmentState.QUEUED) == 0


async def _all_delivered(store: ledger.Ledger, count: int) -> bool:
    return await store.count_deliveries(model.DeliveryState.DELIVERED) >= count


def _count(requests: dict[str, int], suffix: str) -> int:
    return sum(n for key, n in requests.items() if key.endswith(suffix))

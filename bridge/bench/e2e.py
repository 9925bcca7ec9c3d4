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
from multiprocessing.connection import Connection
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
from bridge.bench import Result, backends, deliver, peak_rss_mb, poll, procs
from bridge.sim import _http
from bridge.sim import lance as sim

TOKEN = "bench-token"  # noqa: S105 - a loopback-only token for this run
TRIGGER_CHUNK = 1000
NAIVE_ENRICHMENTS = 300
WATCH_EVERY_S = 0.2
DEADLINE_S = 900.0


def _settings(folder: Path, lance_url: str, connector: dict[str, Any]) -> settings_mod.Settings:
    return settings_mod.Settings(
        **_settings_data({"path": folder / "e2e.db"}, lance_url, connector)
    )


def _settings_data(
    ledger_data: dict[str, Any], lance_url: str, connector: dict[str, Any]
) -> dict[str, Any]:
    """The daemon's settings as plain data (a child process gets them pickled)."""
    return {
        "lance": {"base_url": lance_url, "token": sim.SimConfig.token, "max_concurrency": 8},
        "ledger": ledger_data,
        "server": {"api_tokens": [TOKEN]},
        "poll": {
            "interval_seconds": 0.5,
            "young_seconds": 5,
            "max_delay_seconds": 2,
            "max_requests_per_tick": 500,
        },
        "trigger": {"interval_seconds": 0.2, "max_requests_per_run": 200},
        "fetch": {"interval_seconds": 0.2, "batch_size": 2000, "concurrency": 16},
        "delivery": {"interval_seconds": 0.2, "batch_size": 5000},
        "inbound": {"interval_seconds": 0.2},
        "connectors": [connector],
    }


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


async def bench_e2e(
    count: int, folder: Path, crm: str = "webhook", url: str | None = None, replicas: int = 1
) -> Result:
    """Run ``count`` enrichments through the daemon's own scheduler, in ``serve`` processes.

    With ``url``, also on PostgreSQL behind one ``serve`` and behind ``replicas``. Each row's
    total time is held against the slowest ceiling on its path (ingest, poll, deliver),
    measured in the same run: ``share_of_ceiling`` = (count / slowest ceiling) / total time.
    """
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
    rows = []
    try:
        for backend in backends.plan(url, replicas):
            async with backends.fresh(backend, url, folder, f"e2e-{backend.replicas}") as place:
                settings = _settings_data(place.ledger, lance_url, webhook)
                rows.append(await _e2e_row(backend, place, settings, count, conn))
        naive_rate, naive_requests = await _naive_e2e(lance_url, sink_url, secret)
    finally:
        conn.send("stop")
        process.join(10)
    base = rows[0]
    figures: dict[str, float | int | str] = {
        key: value for key, value in base.items() if key not in _ROW_ONLY
    }
    ours_per_enrichment = float(base["lance_requests_per_enrichment"])
    figures.update(
        {
            "naive_enrichments_per_s": round(naive_rate),
            "naive_lance_requests_per_enrichment": round(naive_requests, 3),
            "ratio_rate_ours_to_naive": round(float(base["rate_per_s"]) / naive_rate, 1),
            "ratio_lance_requests_naive_to_ours": round(naive_requests / ours_per_enrichment, 1),
        }
    )
    bars = {
        "all delivered and verified": all(
            r["webhooks_verified_by_receiver"] == count for r in rows
        ),
        "< 60 s after Lance finished them": all(
            float(r["seconds_after_lance_had_all"]) < 60 for r in rows
        ),
    }
    backends.share_bars(rows, two_above_one=False)  # figures only: §9 sets no e2e bar for them
    return Result("e2e", figures, bars, rows)


# Keys of a row that the scenario's figures leave to the per-ledger table.
_ROW_ONLY = ("backend", "replicas", "schema", "share_vs_sqlite", "api_calls", "api_floor")


async def _e2e_row(
    backend: backends.Backend,
    place: backends.Place,
    settings: dict[str, Any],
    count: int,
    remote: Connection,
) -> backends.Row:
    """One row: ``backend.replicas`` daemons on one fresh ledger, then the path's ceilings."""
    before = await procs.ask(remote, "stats")
    children = [procs.spawn(procs.bridge_process, settings, True) for _ in range(backend.replicas)]
    urls = [await procs.ask(pipe) for _, pipe in children]
    store = await ledger.open(place.settings(), exclusive=False)
    try:
        started = time.perf_counter()
        await _send(urls, count)
        at_lance = await _until(lambda: _none_queued(store))
        done = await _until(lambda: _all_delivered(store, count))
        stats = await procs.ask(remote, "stats")
    finally:
        await store.close()
        rss = [float(await procs.ask(pipe, "stop")) for _, pipe in children]
        for child, _ in children:
            child.join(10)
    ceilings = await _ceilings(place, count, int(stats["sample_bytes"]))
    slowest = min(ceilings, key=lambda name: ceilings[name])
    total = done - started
    ideal = count / ceilings[slowest]
    requests = {k: n - before["requests"].get(k, 0) for k, n in stats["requests"].items()}
    triggers = _count(requests, "/enrichment/batch")
    return {
        "backend": backend.label,
        "replicas": backend.replicas,
        "enrichments": count,
        "total_seconds": round(total, 1),
        "seconds_after_lance_had_all": round(done - at_lance, 1),
        "rate_per_s": round(count / total),
        "webhooks_verified_by_receiver": int(stats["received"]) - int(before["received"]),
        "lance_requests_per_enrichment": round(sum(requests.values()) / count, 3),
        "lance_triggers": triggers,
        "lance_batch_queries": _count(requests, "/enrichment/batch/query"),
        "lance_entity_reads": _count(requests, "/prospects/person/{id}"),
        **{f"ceiling_{name}_per_s": round(rate) for name, rate in ceilings.items()},
        "slowest_ceiling": slowest,
        "ceiling_per_s": round(ceilings[slowest]),
        "ideal_seconds": round(ideal, 1),
        "share_of_ceiling": f"{ideal / total:.0%}",
        "api_calls": triggers,
        "api_floor": _trigger_floor(count),
        "rss_mb": max(rss),
        "schema": place.schema,
    }


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


def _tasks(start: int, count: int) -> list[dict[str, str]]:
    """The tasks of one trigger request: fields alternate, so an entity id is never reused."""
    fields = ("emails", "phones")
    end = min(start + TRIGGER_CHUNK, count)
    return [{"entityId": str(uuid.uuid4()), "field": fields[i % 2]} for i in range(start, end)]


def _trigger_floor(count: int) -> int:
    """⌈new/100⌉ per field: the fewest trigger requests ``count`` tasks can cost."""
    per_field = ((count + 1) // 2, count // 2)
    return sum(math.ceil(n / lance.TRIGGER_BATCH_MAX) for n in per_field)


async def _send(urls: list[str], count: int) -> None:
    """``count`` triggers, 1,000 per request, the requests round robin over ``urls``."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for n, start in enumerate(range(0, count, TRIGGER_CHUNK)):
            url = urls[n % len(urls)]
            body = {"tasks": _tasks(start, count)}
            async with session.post(f"{url}/v1/triggers", json=body) as response:
                if response.status != 202:
                    raise RuntimeError(f"trigger failed: {response.status}")


async def _ceilings(place: backends.Place, count: int, body_bytes: int) -> dict[str, float]:
    """Enrichments/s of the bare equivalent of each step on the path, on this machine now.

    ``ingest``: the same trigger requests (1,000 tasks each, one client) to a bare handler;
    ``poll``: the same rows ended by one raw UPDATE per 200 on this row's ledger;
    ``deliver``: a bare client POSTing events of the same size to a bare handler.
    """
    ingest_s = await _bare_ingest_seconds(count)
    poll_rate = await poll.raw_ceiling(place, count)
    process, conn = procs.spawn(procs.receivers_process, "whsec_" + "A" * 32)
    try:
        _, bare_url = await procs.ask(conn)
        deliver_rate = await deliver.bare_ceiling(
            f"{bare_url}/hook", body_bytes, min(count, deliver.CEILING_REQUESTS)
        )
    finally:
        conn.send("stop")
        process.join(10)
    return {"ingest": count / ingest_s, "poll": poll_rate, "deliver": deliver_rate}


async def _bare_ingest_seconds(count: int) -> float:
    process, conn = procs.spawn(procs.bare_process)
    try:
        url = await procs.ask(conn)
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            for start in range(0, count, TRIGGER_CHUNK):
                body = {"tasks": _tasks(start, count)}
                async with session.post(f"{url}/v1/triggers", json=body) as response:
                    await response.read()
            return time.perf_counter() - started
    finally:
        await procs.ask(conn, "stop")
        process.join(10)


async def _none_queued(store: ledger.Ledger) -> bool:
    return await store.count_enrichments(model.EnrichmentState.QUEUED) == 0


async def _all_delivered(store: ledger.Ledger, count: int) -> bool:
    return await store.count_deliveries(model.DeliveryState.DELIVERED) >= count


def _count(requests: dict[str, int], suffix: str) -> int:
    return sum(n for key, n in requests.items() if key.endswith(suffix))

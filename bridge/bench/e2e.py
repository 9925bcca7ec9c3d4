"""End-to-end benchmark: triggers → Lance simulator → fetch → signed webhooks, on the scheduler."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from bridge import app as app_mod
from bridge import ledger
from bridge import settings as settings_mod
from bridge.bench import Result, peak_rss_mb, procs
from bridge.sim import _http
from bridge.sim import lance as sim

TOKEN = "bench-token"  # noqa: S105 - a loopback-only token for this run
TRIGGER_CHUNK = 1000
WATCH_EVERY_S = 0.2
DEADLINE_S = 900.0


def _settings(folder: Path, lance_url: str, sink_url: str, secret: str) -> settings_mod.Settings:
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
        connectors=[
            {
                "name": "bench-webhook",
                "type": "webhook",
                "url": f"{sink_url}/hook",
                "secret": secret,
                "max_concurrency": 64,
            }
        ],
    )


async def _until(check: Callable[[], Awaitable[bool]]) -> float:
    deadline = time.perf_counter() + DEADLINE_S
    while not await check():
        if time.perf_counter() > deadline:
            raise TimeoutError("e2e benchmark did not finish in time")
        await asyncio.sleep(WATCH_EVERY_S)
    return time.perf_counter()


async def bench_e2e(count: int, folder: Path) -> Result:
    """Run ``count`` enrichments through the daemon's own scheduler."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    process, conn = procs.spawn(procs.remote_process, secret)
    lance_url, sink_url = await procs.ask(conn)
    app = app_mod.create_app(_settings(folder, lance_url, sink_url, secret))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        store = app[app_mod.BRIDGE].ledger
        started = time.perf_counter()
        await _send(_http.base_url(runner), count)
        at_lance = await _until(lambda: _none_queued(store))
        done = await _until(lambda: _all_delivered(store, count))
        remote = await procs.ask(conn, "stats")
    finally:
        await runner.cleanup()
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
        "naive_lance_requests_per_enrichment": "≥ 2.9 (1 trigger + 1 status + 1 read if found)",
        "peak_rss_mb": peak_rss_mb(),
    }
    bars = {
        "all delivered and verified": remote["received"] == count,
        "< 60 s after Lance finished them": after_lance < 60,
    }
    return Result("e2e", figures, bars)


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
    [(queued,)] = await store.fetch("SELECT count(*) FROM enrichments WHERE state = 'queued'")
    return int(queued) == 0


async def _all_delivered(store: ledger.Ledger, count: int) -> bool:
    [(delivered,)] = await store.fetch("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
    return int(delivered) >= count


def _count(requests: dict[str, int], suffix: str) -> int:
    return sum(n for key, n in requests.items() if key.endswith(suffix))

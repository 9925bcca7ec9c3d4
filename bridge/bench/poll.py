"""Benchmarks of the poll path: throughput (``poll``) and memory at 1M rows (``scale``)."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from pathlib import Path

import aiohttp
import pydantic

from bridge import lance, ledger, model, poller
from bridge import settings as settings_mod
from bridge.bench import Result, peak_rss_mb, procs

ACCEPT_CHUNK = 10_000
BASELINE_ROWS = 1_000
SIM_TOKEN = pydantic.SecretStr("sim-token")


async def _fill(store: ledger.Ledger, count: int, now: float) -> None:
    """``count`` in-flight (tracked) rows, streamed in chunks so memory stays flat."""
    for start in range(0, count, ACCEPT_CHUNK):
        ids = procs.entity_ids(min(ACCEPT_CHUNK, count - start), start=start)
        await store.accept([model.Task("person", i, "emails", "track") for i in ids], now)


async def bench_poll(count: int, folder: Path) -> Result:
    """Poll ``count`` in-flight enrichments that Lance has all finished, then the baseline."""
    process, conn = procs.spawn(procs.simulator_process, count)
    lance_url = await procs.ask(conn)
    config = settings_mod.PollSettings(
        max_requests_per_tick=math.ceil(count / lance.QUERY_BATCH_MAX), concurrency=4
    )
    store = await ledger.open(folder / "poll.db")
    try:
        await _fill(store, count, time.time())
        async with aiohttp.ClientSession() as session:
            client = lance.LanceClient(session, lance_url, SIM_TOKEN)
            job = poller.Poller(store, client, config, clock=time.time)
            started = time.perf_counter()
            report = await job.run_once()
            elapsed = time.perf_counter() - started
        naive_rate = await _naive_poll(folder, lance_url, min(count, BASELINE_ROWS))
        ceiling = await _ceiling(folder / "ceiling.db", count)
    finally:
        await store.close()
        await procs.ask(conn, "stop")
        process.join(10)
    floor = math.ceil(count / lance.QUERY_BATCH_MAX)
    rate = report.updated / elapsed
    figures: dict[str, float | int | str] = {
        "enrichments": count,
        "status_updates": report.updated,
        "seconds": round(elapsed, 3),
        "status_updates_per_s": round(rate),
        "batch_queries": report.requests,
        "batch_query_floor": floor,
        "naive_status_updates_per_s": round(naive_rate),
        "naive_requests_per_enrichment": 1,
        "ratio_rate_ours_to_naive": round(rate / naive_rate, 1),
        "ratio_requests_naive_to_ours": round(count / max(report.requests, 1), 1),
        "ceiling_raw_update_per_200_per_s": round(ceiling),
        "share_of_ceiling": f"{rate / ceiling:.0%}",
        "peak_rss_mb": peak_rss_mb(),
    }
    bars = {
        "≥ 20,000 status updates/s": rate >= 20_000,
        "queries at the floor ⌈N/200⌉": report.requests == floor and report.updated == count,
    }
    return Result("poll", figures, bars)


async def _naive_poll(folder: Path, lance_url: str, rows_n: int) -> float:
    """One status request and one commit per enrichment, as a hand-written loop would do."""
    store = await ledger.open(folder / "naive.db")
    try:
        # The simulator knows the first ``count`` entities only: a smaller run polls fewer.
        await _fill(store, rows_n, time.time())
        rows = await store.due_for_poll(time.time() + 1, rows_n)
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {SIM_TOKEN.get_secret_value()}"}
            started = time.perf_counter()
            for row in rows:
                url = f"{lance_url}/api/v1/operations/enrichment/{row.entity_id}"
                async with session.get(url, params={"field": row.field}, headers=headers) as r:
                    record = await r.json()
                change = ledger.Change(row.id, record["status"], record)
                await store.apply([change], time.time())  # sequential: one commit per row
            elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return len(rows) / elapsed


async def _ceiling(path: Path, count: int) -> float:
    """Rows/s of the same rows ended by one raw UPDATE (and commit) per batch of 200.

    The ledger's own floor for the poll path, without HTTP, parsing or the job's logic.
    """
    store = await ledger.open(path)
    try:
        await _fill(store, count, time.time())
    finally:
        await store.close()
    record = json.dumps({"status": "finished", "dataFound": False, "id": "0" * 24})
    return count / await asyncio.to_thread(_raw_updates, path, count, record)


def _raw_updates(path: Path, count: int, record: str) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        ids = [int(r[0]) for r in db.execute("SELECT id FROM enrichments ORDER BY id")]
        started = time.perf_counter()
        for start in range(0, count, lance.QUERY_BATCH_MAX):
            batch = json.dumps(ids[start : start + lance.QUERY_BATCH_MAX])
            db.execute("BEGIN")
            db.execute(
                "UPDATE enrichments SET state = 'finished', record = ?, updated_at = ?"
                " WHERE id IN (SELECT value FROM json_each(?))",
                (record, time.time(), batch),
            )
            db.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        db.close()


async def bench_scale(count: int, folder: Path) -> Result:
    """RSS and one poll tick's time with ``count`` rows in flight (default 1,000,000)."""
    process, conn = procs.spawn(procs.simulator_process, 0)
    lance_url = await procs.ask(conn)
    store = await ledger.open(folder / "scale.db")
    try:
        started = time.perf_counter()
        await _fill(store, count, time.time())
        fill_s = time.perf_counter() - started
        config = settings_mod.PollSettings()
        async with aiohttp.ClientSession() as session:
            client = lance.LanceClient(session, lance_url, SIM_TOKEN)
            job = poller.Poller(store, client, config, clock=time.time)
            started = time.perf_counter()
            report = await job.run_once()
            tick_s = time.perf_counter() - started
        started = time.perf_counter()
        in_flight = await store.count_enrichments(model.EnrichmentState.PENDING)
        count_s = time.perf_counter() - started
    finally:
        await store.close()
        await procs.ask(conn, "stop")
        process.join(10)
    rss = peak_rss_mb()
    figures: dict[str, float | int | str] = {
        "rows_in_flight": in_flight,
        "fill_seconds": round(fill_s, 1),
        "accept_rows_per_s": round(count / fill_s),
        "tick_due_rows": report.due,
        "tick_requests": report.requests,
        "tick_seconds": round(tick_s, 3),
        "count_in_flight_seconds": round(count_s, 3),
        "peak_rss_mb": rss,
    }
    return Result("scale", figures, {"RSS < 200 MB at 1M rows in flight": rss < 200})

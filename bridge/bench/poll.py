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
from bridge.bench import Result, backends, peak_rss_mb, procs

ACCEPT_CHUNK = 10_000
BASELINE_ROWS = 1_000
SIM_TOKEN = pydantic.SecretStr("sim-token")


async def _fill(store: ledger.Ledger, count: int, now: float) -> None:
    """``count`` in-flight (tracked) rows, streamed in chunks so memory stays flat."""
    for start in range(0, count, ACCEPT_CHUNK):
        ids = procs.entity_ids(min(ACCEPT_CHUNK, count - start), start=start)
        await store.accept([model.Task("person", i, "emails", "track") for i in ids], now)


async def bench_poll(count: int, folder: Path, url: str | None = None, replicas: int = 1) -> Result:
    """Poll ``count`` in-flight enrichments that Lance has all finished, then the baseline.

    On SQLite, and with ``url`` on PostgreSQL with one poller and with ``replicas``; each row
    of the table has its own fresh ledger and its ceiling, measured on that ledger.
    """
    process, conn = procs.spawn(procs.simulator_process, count)
    lance_url = await procs.ask(conn)
    floor = math.ceil(count / lance.QUERY_BATCH_MAX)
    try:
        rows = []
        for backend in backends.plan(url, replicas):
            async with backends.fresh(backend, url, folder, f"poll-{backend.replicas}") as place:
                rows.append(await _poll_row(backend, place, count, lance_url))
        naive_rate = await _naive_poll(folder, lance_url, min(count, BASELINE_ROWS))
    finally:
        await procs.ask(conn, "stop")
        process.join(10)
    base = rows[0]
    rate = float(base["rate_per_s"])
    figures: dict[str, float | int | str] = {
        "enrichments": count,
        "status_updates": base["status_updates"],
        "seconds": base["seconds"],
        "status_updates_per_s": round(rate),
        "batch_queries": base["api_calls"],
        "batch_query_floor": floor,
        "naive_status_updates_per_s": round(naive_rate),
        "naive_requests_per_enrichment": 1,
        "ratio_rate_ours_to_naive": round(rate / naive_rate, 1),
        "ratio_requests_naive_to_ours": round(count / max(int(base["api_calls"]), 1), 1),
        "ceiling_raw_update_per_200_per_s": base["ceiling_per_s"],
        "share_of_ceiling": base["share_of_ceiling"],
        "peak_rss_mb": base["rss_mb"],
    }
    bars = {
        "≥ 20,000 status updates/s": rate >= 20_000,
        "queries at the floor ⌈N/200⌉": all(
            r["api_calls"] == floor and r["status_updates"] == count for r in rows
        ),
        **backends.share_bars(rows, two_above_one=False),
    }
    return Result("poll", figures, bars, rows)


async def _poll_row(
    backend: backends.Backend, place: backends.Place, count: int, lance_url: str
) -> dict[str, float | int | str]:
    """One row: fill the ledger, poll it with ``backend.replicas`` pollers, then its ceiling."""
    store = await ledger.open(place.settings(), exclusive=False)
    try:
        await _fill(store, count, time.time())
    finally:
        await store.close()
    floor = math.ceil(count / lance.QUERY_BATCH_MAX)
    tick = math.ceil(floor / backend.replicas)
    pollers = [
        procs.spawn(procs.poller_process, place.ledger, lance_url, tick)
        for _ in range(backend.replicas)
    ]
    try:
        for _, pipe in pollers:
            await procs.ask(pipe)  # "ready": each has its ledger open
        for _, pipe in pollers:
            pipe.send("go")
        done = [await procs.ask(pipe) for _, pipe in pollers]
    finally:
        for child, _ in pollers:
            child.join(10)
    elapsed = max(d["ended"] for d in done) - min(d["started"] for d in done)
    updated = sum(int(d["updated"]) for d in done)
    rate = updated / elapsed
    raw = await raw_ceiling(place, count)
    return {
        "backend": backend.label,
        "replicas": backend.replicas,
        "status_updates": updated,
        "seconds": round(elapsed, 3),
        "rate_per_s": round(rate),
        "api_calls": sum(int(d["requests"]) for d in done),
        "api_floor": floor,
        "ceiling_per_s": round(raw),
        "share_of_ceiling": f"{rate / raw:.0%}",
        "rss_mb": max(float(d["rss_mb"]) for d in done),
        "schema": place.schema,
    }


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


async def raw_ceiling(place: backends.Place, count: int) -> float:
    """Rows/s of the same rows ended by one raw UPDATE (and commit) per batch of 200.

    The ledger's own floor for the poll path, without HTTP, parsing or the job's logic,
    measured on the ledger the row just polled: its rows are put back in flight first (not
    timed), so the raw statements move them out of the in-flight index as the poll did.
    """
    record = json.dumps({"status": "finished", "dataFound": False, "id": "0" * 24})
    if place.schema:
        return count / await asyncio.to_thread(_raw_updates_pg, place, count, record)
    return count / await asyncio.to_thread(_raw_updates, place.ledger["path"], count, record)


_BACK_IN_FLIGHT = "UPDATE enrichments SET state = 'pending', record = NULL"


def _raw_updates(path: Path, count: int, record: str) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(_BACK_IN_FLIGHT)
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


def _raw_updates_pg(place: backends.Place, count: int, record: str) -> float:
    import psycopg  # noqa: PLC0415 - PostgreSQL is an extra

    with psycopg.connect(place.ledger["url"], autocommit=True) as db:
        db.execute(_BACK_IN_FLIGHT)
        db.execute("VACUUM enrichments")  # the poll's dead row versions, as autovacuum would
        ids = [int(r[0]) for r in db.execute("SELECT id FROM enrichments ORDER BY id")]
        started = time.perf_counter()
        for start in range(0, count, lance.QUERY_BATCH_MAX):
            with db.transaction():
                db.execute(
                    "UPDATE enrichments SET state = 'finished', record = %s, updated_at = %s"
                    " WHERE id = ANY(%s)",
                    (record, time.time(), ids[start : start + lance.QUERY_BATCH_MAX]),
                )
        return time.perf_counter() - started


async def bench_scale(count: int, folder: Path, url: str | None = None) -> Result:
    """RSS and one poll tick's time with ``count`` rows in flight (default 1,000,000).

    Each ledger (SQLite, and PostgreSQL with ``url``) at a tenth of ``count`` and at
    ``count``, each in a process of its own, so each peak RSS is that size's alone: memory
    flat in ledger size means the two are close.
    """
    process, conn = procs.spawn(procs.simulator_process, 0)
    lance_url = await procs.ask(conn)
    rows = []
    try:
        for backend in backends.plan(url, 1):
            for size in (max(1, count // 10), count):
                async with backends.fresh(backend, url, folder, f"scale-{size}") as place:
                    child, pipe = procs.spawn(procs.scale_process, place.ledger, size, lance_url)
                    figures = await procs.ask(pipe)
                    child.join(10)
                rows.append({"backend": backend.label, "replicas": 1, "rows": size, **figures})
                rows[-1]["schema"] = place.schema
    finally:
        await procs.ask(conn, "stop")
        process.join(10)
    full = [r for r in rows if r["rows"] == count]
    base = dict(full[0])
    for key in ("backend", "replicas", "rows", "schema", "rate_per_s", "api_calls", "api_floor"):
        base.pop(key, None)
    base["peak_rss_mb"] = base.pop("rss_mb")
    bars = {
        f"{r['backend']}: RSS < 200 MB at {count:,} rows in flight": float(r["rss_mb"]) < 200
        for r in full
    }
    return Result("scale", base, bars, rows)


async def scale_once(
    ledger_settings: dict[str, object], count: int, lance_url: str
) -> dict[str, float | int | str]:
    """Fill a ledger with ``count`` in-flight rows, run one poll tick, count the rows.

    Run in a process of its own (:func:`bridge.bench.procs.scale_process`): the peak RSS it
    reports is this size's.
    """
    store = await ledger.open(settings_mod.LedgerSettings(**ledger_settings))
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
    return {
        "rows_in_flight": in_flight,
        "fill_seconds": round(fill_s, 1),
        "accept_rows_per_s": round(count / fill_s),
        "tick_due_rows": report.due,
        "tick_requests": report.requests,
        "tick_seconds": round(tick_s, 3),
        "count_in_flight_seconds": round(count_s, 3),
        "rate_per_s": round(count / fill_s),
        "api_calls": report.requests,
        "api_floor": math.ceil(report.due / lance.QUERY_BATCH_MAX),
        "rss_mb": peak_rss_mb(),
    }

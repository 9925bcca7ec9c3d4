"""Benchmark of the trigger API: concurrent single-task ``POST /v1/triggers``."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge import ledger, model
from bridge.bench import Result, backends, procs
from bridge.ledger import sqlite_db
from bridge.sim import _http

TOKEN = "bench-token"  # noqa: S105 - a loopback-only token for this run
BASELINE_SECONDS = 3.0


async def _load(urls: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    """The load generator's figures, its clients spread round robin over ``urls``."""
    process, conn = procs.spawn(procs.load_process, urls, TOKEN, concurrency, seconds)
    load: dict[str, Any] = await procs.ask(conn)
    process.join(10)
    return load


async def _serving(
    target: Callable[..., None], *args: Any, copies: int = 1
) -> tuple[list[str], list[tuple[Any, Connection]]]:
    """``copies`` server processes of ``target``: their base URLs, and the processes."""
    children = [procs.spawn(target, *args) for _ in range(copies)]
    return [await procs.ask(conn) for _, conn in children], children


async def _stopped(children: list[tuple[Any, Connection]]) -> float:
    """Stop the servers; returns the largest peak RSS among them, in MB."""
    rss = [float(await procs.ask(conn, "stop")) for _, conn in children]
    for child, _ in children:
        child.join(10)
    return max(rss)


async def bench_ingest(
    seconds: float, concurrency: int, folder: Path, url: str | None = None, replicas: int = 1
) -> Result:
    """Concurrent single-task triggers for ``seconds``; every 202 must be durable.

    On SQLite, and with ``url`` on PostgreSQL behind one ``serve`` and behind ``replicas``;
    each row runs its servers in processes of their own, with a fresh ledger.
    """
    rows = []
    for backend in backends.plan(url, replicas):
        # Each row's ceiling just before it: as many bare handlers as it has servers.
        ceiling = await _ceiling(concurrency, backend.replicas)
        async with backends.fresh(backend, url, folder, f"ingest-{backend.replicas}") as place:
            rows.append(await _ingest_row(backend, place, seconds, concurrency, ceiling))
    naive = await _naive_load(folder / "naive.db", concurrency)
    base = rows[0]
    rate = float(base["rate_per_s"])
    naive_rate = naive["accepted"] / naive["elapsed"]
    figures: dict[str, float | int | str] = {
        "concurrency": concurrency,
        "seconds": base["seconds"],
        "accepted_202": base["accepted_202"],
        "durable_rows": base["durable_rows"],
        "requests_per_s": round(rate),
        "p50_ms": base["p50_ms"],
        "p99_ms": base["p99_ms"],
        "naive_requests_per_s": round(naive_rate),
        "ratio_ours_to_naive": round(rate / naive_rate, 2),
        "ceiling_bare_handler_requests_per_s": base["ceiling_per_s"],
        "share_of_ceiling": base["share_of_ceiling"],
        "peak_rss_mb": base["rss_mb"],
    }
    bars = {
        "≥ 2,000 triggers/s": rate >= 2_000,
        "p99 < 50 ms": float(base["p99_ms"]) < 50,
        "every 202 durable": all(r["durable_rows"] == r["accepted_202"] for r in rows),
        "≥ 60 % of the bare handler": rate >= 0.6 * float(base["ceiling_per_s"]),
        **backends.share_bars(rows, two_above_one=True),
    }
    return Result("ingest", figures, bars, rows)


async def _ceiling(concurrency: int, copies: int) -> float:
    """Requests/s of ``copies`` bare handlers under the same load (clients round robin)."""
    urls, bare = await _serving(procs.bare_process, copies=copies)
    try:
        load = await _load(urls, BASELINE_SECONDS, concurrency)
    finally:
        await _stopped(bare)
    return float(load["accepted"] / load["elapsed"])


async def _ingest_row(
    backend: backends.Backend,
    place: backends.Place,
    seconds: float,
    concurrency: int,
    ceiling: float,
) -> backends.Row:
    """One row: the load against ``backend.replicas`` servers on one fresh ledger."""
    settings = {"ledger": place.ledger, "server": {"api_tokens": [TOKEN]}}
    urls, servers = await _serving(procs.bridge_process, settings, False, copies=backend.replicas)
    try:
        load = await _load(urls, seconds, concurrency)
    finally:
        rss = await _stopped(servers)
    store = await ledger.open(place.settings(), exclusive=False)
    try:
        durable = sum((await store.counts())["enrichments"].values())
    finally:
        await store.close()
    latencies = sorted(load["latencies"])
    rate = load["accepted"] / load["elapsed"]
    p99_ms = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
    return {
        "backend": backend.label,
        "replicas": backend.replicas,
        "seconds": round(load["elapsed"], 2),
        "accepted_202": load["accepted"],
        "durable_rows": durable,
        "rate_per_s": round(rate),
        "api_calls": "-",
        "api_floor": "-",
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        "p99_ms": round(p99_ms, 2),
        "ceiling_per_s": round(ceiling),
        "share_of_ceiling": f"{rate / ceiling:.0%}",
        "rss_mb": rss,
        "schema": place.schema,
    }


async def _naive_load(path: Path, concurrency: int) -> dict[str, Any]:
    """The one-commit-per-request baseline, served in this process."""
    runner = web.AppRunner(_naive_app(path), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return await _load([_http.base_url(runner)], BASELINE_SECONDS, concurrency)
    finally:
        await runner.cleanup()


def _naive_app(path: Path) -> web.Application:
    """The same request answered with one transaction of its own (no group commit)."""
    app = web.Application()
    # The baseline writes its own SQL, on the SQLite backend's connections.
    stores: list[sqlite_db.Db] = []

    async def ctx(_: web.Application) -> Any:
        stores.append(await sqlite_db.Db.open(path))
        yield
        await stores[0].close()

    async def accept(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        task = body["tasks"][0]
        async with stores[0].transaction() as db:
            await db.execute(
                "INSERT INTO enrichments (entity_type, entity_id, field, key, mode, state,"
                " created_at, updated_at) VALUES ('person', ?, ?, ?, 'trigger', 'queued', ?, ?)",
                (
                    task["entityId"],
                    task["field"],
                    model.key_bytes("person", task["entityId"], task["field"]),
                    time.time(),
                    time.time(),
                ),
            )
        return web.json_response({"enrichments": [{"id": str(uuid.uuid4())}]}, status=202)

    app.cleanup_ctx.append(ctx)
    app.router.add_post("/v1/triggers", accept)
    return app

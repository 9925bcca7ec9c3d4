"""Benchmark of the trigger API: concurrent single-task ``POST /v1/triggers``."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge import app as app_mod
from bridge import ledger, model
from bridge import settings as settings_mod
from bridge.bench import Result, procs
from bridge.ledger import sqlite_db
from bridge.sim import _http

TOKEN = "bench-token"  # noqa: S105 - a loopback-only token for this run
BASELINE_SECONDS = 3.0


async def _load(app: web.Application, seconds: float, concurrency: int) -> dict[str, Any]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        process, conn = procs.spawn(
            procs.load_process, _http.base_url(runner), TOKEN, concurrency, seconds
        )
        load: dict[str, Any] = await procs.ask(conn)
        process.join(10)
    finally:
        await runner.cleanup()
    return load


async def bench_ingest(seconds: float, concurrency: int, folder: Path) -> Result:
    """Concurrent single-task triggers for ``seconds``; every 202 must be durable."""
    settings = settings_mod.Settings(
        ledger={"path": folder / "ingest.db"}, server={"api_tokens": [TOKEN]}
    )
    load = await _load(app_mod.create_app(settings, run_jobs=False), seconds, concurrency)
    store = await ledger.open(folder / "ingest.db", exclusive=False)
    try:
        durable = sum((await store.counts())["enrichments"].values())
    finally:
        await store.close()
    naive = await _load(_naive_app(folder / "naive.db"), BASELINE_SECONDS, concurrency)
    bare = await _load(_bare_app(), BASELINE_SECONDS, concurrency)
    latencies = sorted(load["latencies"])
    rate = load["accepted"] / load["elapsed"]
    naive_rate = naive["accepted"] / naive["elapsed"]
    ceiling = bare["accepted"] / bare["elapsed"]
    p99_ms = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
    figures: dict[str, float | int | str] = {
        "concurrency": concurrency,
        "seconds": round(load["elapsed"], 2),
        "accepted_202": load["accepted"],
        "durable_rows": durable,
        "requests_per_s": round(rate),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        "p99_ms": round(p99_ms, 2),
        "naive_requests_per_s": round(naive_rate),
        "ratio_ours_to_naive": round(rate / naive_rate, 2),
        "ceiling_bare_handler_requests_per_s": round(ceiling),
        "share_of_ceiling": f"{rate / ceiling:.0%}",
    }
    bars = {
        "≥ 2,000 triggers/s": rate >= 2_000,
        "p99 < 50 ms": p99_ms < 50,
        "every 202 durable": durable == load["accepted"],
        "≥ 60 % of the bare handler": rate >= 0.6 * ceiling,
    }
    return Result("ingest", figures, bars)


def _bare_app() -> web.Application:
    """The ceiling: a bare aiohttp handler that reads the body and answers 202."""
    app = web.Application()

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"enrichments": [{"id": str(uuid.uuid4())}]}, status=202)

    app.router.add_post("/v1/triggers", accept)
    return app


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

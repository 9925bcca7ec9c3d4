"""``lance-bridge bench``: measured throughput and API economy against DESIGN §9's bars.

Each scenario runs the real parts on loopback. The side that is not being measured (the Lance
simulator, the load generator) runs in a child process so it does not share the measured
event loop.

- ``poll``: N enrichments in flight at the simulator, all finished; how fast poll → ledger
  turns them into status updates, and how many batch queries that took against ⌈N/200⌉.
- ``ingest``: concurrent single-task ``POST /v1/triggers`` for a fixed time; requests/s,
  p50/p99 latency, and the rows durable in the ledger afterwards (must equal the 202s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import multiprocessing
import random
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
from aiohttp import web
from rich.console import Console
from rich.table import Table

from bridge import app as app_mod
from bridge import lance, ledger, poller
from bridge import settings as settings_mod
from bridge.sim import _http
from bridge.sim import lance as sim

SEED = 20261129
ACCEPT_CHUNK = 10_000


@dataclasses.dataclass(slots=True)
class Result:
    """One scenario's figures and the bars they are held against."""

    scenario: str
    figures: dict[str, float | int | str]
    bars: dict[str, bool]


def entity_ids(count: int, seed: int = SEED) -> list[str]:
    """Deterministic UUID v4 ids, the same in the parent and the simulator's process."""
    rng = random.Random(seed)  # noqa: S311 - test data, not security
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child processes ----------------------------------------------------------------------


def _simulator_process(count: int, conn: Connection) -> None:
    async def main() -> None:
        simulator = sim.LanceSimulator(sim.SimConfig(completion_s=(0.0, 0.0), seed=SEED))
        for entity_id in entity_ids(count):
            simulator.start_enrichment(entity_id, "emails", completion_s=0.0)
        runner = await sim.serve(simulator)
        conn.send(_http.base_url(runner))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        conn.send(dict(simulator.requests))
        await runner.cleanup()

    asyncio.run(main())


def _load_process(url: str, token: str, concurrency: int, seconds: float, conn: Connection) -> None:
    async def worker(session: aiohttp.ClientSession, stop_at: float, out: list[float]) -> int:
        accepted = 0
        while time.perf_counter() < stop_at:
            body = {"tasks": [{"entityId": str(uuid.uuid4()), "field": "emails"}]}
            started = time.perf_counter()
            async with session.post(f"{url}/v1/triggers", json=body) as response:
                await response.read()
                accepted += response.status == 202
            out.append(time.perf_counter() - started)
        return accepted

    async def main() -> None:
        latencies: list[float] = []
        headers = {"Authorization": f"Bearer {token}"}
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
            started = time.perf_counter()
            stop_at = started + seconds
            counts = await asyncio.gather(
                *(worker(session, stop_at, latencies) for _ in range(concurrency))
            )
            elapsed = time.perf_counter() - started
        conn.send({"accepted": sum(counts), "latencies": latencies, "elapsed": elapsed})

    asyncio.run(main())


def _spawn(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    return process, parent


# -- scenarios ----------------------------------------------------------------------------


async def bench_poll(count: int, folder: Path) -> Result:
    """Poll ``count`` in-flight enrichments that Lance has all finished."""
    process, conn = _spawn(_simulator_process, count)
    lance_url = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    ticks = math.ceil(count / lance.QUERY_BATCH_MAX)
    config = settings_mod.PollSettings(max_requests_per_tick=ticks, concurrency=4)
    store = await ledger.Ledger.open(folder / "poll.db")
    try:
        ids = entity_ids(count)
        now = time.time()
        for start in range(0, count, ACCEPT_CHUNK):
            chunk = ids[start : start + ACCEPT_CHUNK]
            await store.accept([ledger.Task("person", i, "emails", "track") for i in chunk], now)
        async with aiohttp.ClientSession() as session:
            client = lance.LanceClient(session, lance_url, pydantic.SecretStr("sim-token"))
            job = poller.Poller(store, client, config, clock=time.time)
            started = time.perf_counter()
            report = await job.run_once()
            elapsed = time.perf_counter() - started
    finally:
        await store.close()
        conn.send("stop")
        requests = conn.recv()
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
        "lance_requests_seen": sum(requests.values()),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    bars = {"≥ 20,000 status updates/s": rate >= 20_000, "queries at the floor":
            report.requests == floor and report.updated == count}  # fmt: skip
    return Result("poll", figures, bars)


async def bench_ingest(seconds: float, concurrency: int, folder: Path) -> Result:
    """Concurrent single-task triggers for ``seconds``; every 202 must be durable."""
    token = "bench-token"  # noqa: S105 - a loopback-only token for this run
    settings = settings_mod.Settings(
        ledger={"path": folder / "ingest.db"}, server={"api_tokens": [token]}
    )
    app = app_mod.create_app(settings, run_jobs=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = _http.base_url(runner)
        process, conn = _spawn(_load_process, url, token, concurrency, seconds)
        load = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        process.join(10)
        store = app[app_mod.BRIDGE].ledger
        [(durable,)] = await store.fetch("SELECT count(*) FROM enrichments")
    finally:
        await runner.cleanup()
    latencies = sorted(load["latencies"])
    rate = load["accepted"] / load["elapsed"]
    p99_ms = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
    figures: dict[str, float | int | str] = {
        "concurrency": concurrency,
        "seconds": round(load["elapsed"], 2),
        "accepted_202": load["accepted"],
        "durable_rows": durable,
        "requests_per_s": round(rate),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        "p99_ms": round(p99_ms, 2),
    }
    bars = {"≥ 2,000 triggers/s": rate >= 2_000, "p99 < 50 ms": p99_ms < 50,
            "every 202 durable": durable == load["accepted"]}  # fmt: skip
    return Result("ingest", figures, bars)


# -- entry point --------------------------------------------------------------------------


async def run(
    scenarios: list[str], *, count: int, seconds: float, concurrency: int, json_path: Path | None
) -> int:
    """Run ``scenarios``, print a table per scenario, optionally write JSON; 0 if bars met."""
    console = Console()
    results = []
    with tempfile.TemporaryDirectory(prefix="lance-bridge-bench-") as folder:
        for name in scenarios:
            console.print(f"bench {name} …")
            if name == "poll":
                results.append(await bench_poll(count, Path(folder)))
            else:
                results.append(await bench_ingest(seconds, concurrency, Path(folder)))
    for result in results:
        _print(console, result)
    if json_path is not None:
        text = json.dumps([dataclasses.asdict(r) for r in results], indent=2)
        await asyncio.to_thread(json_path.write_text, text)
    return 0 if all(all(r.bars.values()) for r in results) else 1


def _print(console: Console, result: Result) -> None:
    table = Table(title=f"bench {result.scenario}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.figures.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for bar, met in result.bars.items():
        table.add_row(f"bar: {bar}", "[green]met[/]" if met else "[red]not met[/]")
    console.print(table)

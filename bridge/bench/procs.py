"""Child processes of the benchmarks: the remote side runs apart from the measured loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from bridge.sim import _http
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod

SEED = 20261129


def entity_ids(count: int, seed: int = SEED, start: int = 0) -> list[str]:
    """Deterministic UUID v4 ids (the ``start``-th onwards), the same in every process."""
    rng = random.Random(seed)  # noqa: S311 - test data, not security
    for _ in range(start):
        rng.getrandbits(128)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def simulator_process(count: int, conn: Connection) -> None:
    """The simulator with ``count`` finished person email enrichments."""

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


def load_process(url: str, token: str, concurrency: int, seconds: float, conn: Connection) -> None:
    """Single-task ``POST /v1/triggers`` from ``concurrency`` clients for ``seconds``."""

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


def remote_process(secret: str, conn: Connection) -> None:
    """The simulator (instant completion) and a signature-checking webhook sink."""

    async def main() -> None:
        simulator = sim.LanceSimulator(sim.SimConfig(completion_s=(0.0, 0.0), seed=SEED))
        sink = sink_mod.WebhookSink(secret)
        runners = [await sim.serve(simulator), await sink_mod.serve(sink)]
        conn.send((_http.base_url(runners[0]), _http.base_url(runners[1])))
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, conn.recv)) != "stop":
            conn.send(
                {
                    "received": len(sink.received),
                    "rejected": sink.rejected,
                    "requests": dict(simulator.requests),
                }
            )
        for runner in runners:
            await runner.cleanup()

    asyncio.run(main())


def spawn(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    """Start ``target(*args, conn)`` in a fresh process; returns it and our end of the pipe."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(*args, child), daemon=True)
    process.start()
    return process, parent


async def ask(conn: Connection, message: Any = None) -> Any:
    """Send ``message`` (if any) to a child and wait for its answer without blocking the loop."""
    loop = asyncio.get_running_loop()
    if message is not None:
        conn.send(message)
    return await loop.run_in_executor(None, conn.recv)

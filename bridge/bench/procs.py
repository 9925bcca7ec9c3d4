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
from aiohttp import web

from bridge.sim import _http
from bridge.sim import hubspot as hubspot_sim
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


HUBSPOT_TOKEN = "pat-bench"  # noqa: S105 - the sandbox's loopback-only token


def hubspot_process(contacts: int, secret: str, conn: Connection) -> None:
    """The simulator (instant completion) and a HubSpot sandbox with ``contacts`` contacts.

    Each contact carries a Lance person id. Asked ``("hooks", url)``, it sends the bridge the
    signed ``contact.propertyChange`` webhooks (100 events per request) HubSpot would send;
    The sandbox's rate limit is off: the bench measures the bridge, not HubSpot's budget.
    """

    async def main() -> None:
        config = sim.SimConfig(completion_s=(0.0, 0.0), seed=SEED, outcomes={"found": 1.0})
        simulator = sim.LanceSimulator(config)
        sandbox = hubspot_sim.HubSpotSandbox(
            private_tokens=(HUBSPOT_TOKEN,), client_secret=secret, rate_limit=0
        )
        ids = [
            sandbox.add_record("contacts", {"lance_person_id": lance_id})
            for lance_id in entity_ids(contacts)
        ]
        runners = [await sim.serve(simulator), await hubspot_sim.serve(sandbox)]
        conn.send((_http.base_url(runners[0]), _http.base_url(runners[1])))
        loop = asyncio.get_running_loop()
        while (message := await loop.run_in_executor(None, conn.recv)) != "stop":
            if isinstance(message, tuple) and message[0] == "hooks":
                conn.send(await _send_hooks(sandbox, ids, message[1], secret))
            else:
                written = sum(
                    1
                    for r in sandbox.objects["contacts"].values()
                    if r.get("email") or r.get("phone")
                )
                conn.send(
                    {
                        "written": written,
                        "requests": dict(simulator.requests),
                        "crm_requests": dict(sandbox.counts),
                    }
                )
        for runner in runners:
            await runner.cleanup()

    asyncio.run(main())


async def naive_writes(base_url: str, ids: list[str], values: list[str]) -> float:
    """Records written per second with one PATCH per record (8 in flight)."""
    headers = {"Authorization": f"Bearer {HUBSPOT_TOKEN}"}
    slots = asyncio.Semaphore(8)

    async def write(session: aiohttp.ClientSession, record_id: str, value: str) -> None:
        async with slots:
            body = {"properties": {"mobilephone": value}}
            url = f"{base_url}/crm/v3/objects/contacts/{record_id}"
            async with session.patch(url, json=body) as response:
                await response.read()

    async with aiohttp.ClientSession(headers=headers) as session:
        started = time.perf_counter()
        await asyncio.gather(*(write(session, i, v) for i, v in zip(ids, values, strict=True)))
        return len(ids) / (time.perf_counter() - started)


async def _send_hooks(
    sandbox: hubspot_sim.HubSpotSandbox, ids: list[str], url: str, secret: str
) -> int:
    events = [
        hubspot_sim.property_change(
            int(i), "lance_person_id", sandbox.record("contacts", i)["lance_person_id"]
        )
        for i in ids
    ]
    refused = 0
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(events), hubspot_sim.MAX_WEBHOOK_EVENTS):
            batch = events[start : start + hubspot_sim.MAX_WEBHOOK_EVENTS]
            refused += await hubspot_sim.send_webhook(session, url, secret, batch) != 200
    return refused


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


def receivers_process(secret: str, conn: Connection) -> None:
    """The signature-checking webhook sink, and beside it a bare handler answering 204.

    Asked ``"stats"`` it sends what the sink verified; ``"stop"`` ends it.
    """

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def main() -> None:
        sink = sink_mod.WebhookSink(secret)
        app = web.Application()
        app.router.add_post("/{path:.*}", bare)
        runners = [await sink_mod.serve(sink), await _http.serve_app(app, "127.0.0.1", 0)]
        conn.send((_http.base_url(runners[0]), _http.base_url(runners[1])))
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, conn.recv)) != "stop":
            conn.send({"received": len(sink.received), "rejected": sink.rejected})
        for runner in runners:
            await runner.cleanup()

    asyncio.run(main())

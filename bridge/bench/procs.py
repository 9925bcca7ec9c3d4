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
import orjson
from aiohttp import web

from bridge import bench
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


def load_process(
    urls: list[str], token: str, concurrency: int, seconds: float, conn: Connection
) -> None:
    """Single-task ``POST /v1/triggers`` from ``concurrency`` clients for ``seconds``.

    Client ``i`` sends to ``urls[i % len(urls)]``: with several replicas, round robin.
    """

    async def worker(
        session: aiohttp.ClientSession, url: str, stop_at: float, out: list[float]
    ) -> int:
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
                *(
                    worker(session, urls[i % len(urls)], stop_at, latencies)
                    for i in range(concurrency)
                )
            )
            elapsed = time.perf_counter() - started
        conn.send({"accepted": sum(counts), "latencies": latencies, "elapsed": elapsed})

    asyncio.run(main())


def bridge_process(settings: dict[str, Any], run_jobs: bool, conn: Connection) -> None:
    """One ``serve`` of ``settings`` (plain data) on a free loopback port, until ``"stop"``.

    Sends its base URL once serving, and its peak RSS in MB once stopped.
    """
    from bridge import app as app_mod  # noqa: PLC0415 - the child's own imports
    from bridge import cli, logs  # noqa: PLC0415
    from bridge import settings as settings_mod  # noqa: PLC0415

    cli.tune_gc()  # as `serve` does
    logs.configure("warning", "console")  # as the bench's own process logs

    async def main() -> None:
        app = app_mod.create_app(settings_mod.Settings(**settings), run_jobs=run_jobs)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            conn.send(_http.base_url(runner))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        finally:
            await runner.cleanup()
        conn.send(bench.peak_rss_mb())

    asyncio.run(main())


def bare_process(conn: Connection) -> None:
    """The ingest ceiling: a bare aiohttp handler that reads the body and answers 202."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"enrichments": [{"id": str(uuid.uuid4())}]}, status=202)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/triggers", accept)
        runner = await _http.serve_app(app, "127.0.0.1", 0)
        conn.send(_http.base_url(runner))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await runner.cleanup()
        conn.send(bench.peak_rss_mb())

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
            sample = next(iter(sink.received.values()), {})
            conn.send(
                {
                    "received": len(sink.received),
                    "rejected": sink.rejected,
                    "requests": dict(simulator.requests),
                    "sample_bytes": len(orjson.dumps(sample)),
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


def poller_process(
    ledger_settings: dict[str, Any], lance_url: str, tick_requests: int, conn: Connection
) -> None:
    """One poller over the ledger of ``ledger_settings``, beside any others on the same one.

    Sends ``"ready"`` once its ledger is open; on ``"go"``, runs poll ticks of up to
    ``tick_requests`` batch queries until one finds nothing due, then sends what it did:
    status updates, batch queries, its start and end (``time.monotonic``, comparable between
    processes), and its peak RSS.
    """
    import pydantic  # noqa: PLC0415 - the child's own imports

    from bridge import lance, ledger, poller  # noqa: PLC0415
    from bridge import settings as settings_mod  # noqa: PLC0415

    async def main() -> None:
        config = settings_mod.PollSettings(max_requests_per_tick=tick_requests, concurrency=4)
        store = await ledger.open(settings_mod.LedgerSettings(**ledger_settings))
        try:
            async with aiohttp.ClientSession() as session:
                client = lance.LanceClient(session, lance_url, pydantic.SecretStr("sim-token"))
                job = poller.Poller(store, client, config, clock=time.time)
                conn.send("ready")
                await asyncio.get_running_loop().run_in_executor(None, conn.recv)
                started = time.monotonic()
                updated = requests = 0
                while (report := await job.run_once()).due:
                    updated += report.updated
                    requests += report.requests
                ended = time.monotonic()
        finally:
            await store.close()
        conn.send(
            {
                "updated": updated,
                "requests": requests,
                "started": started,
                "ended": ended,
                "rss_mb": bench.peak_rss_mb(),
            }
        )

    asyncio.run(main())


def scale_process(
    ledger_settings: dict[str, Any], count: int, lance_url: str, conn: Connection
) -> None:
    """:func:`bridge.bench.poll.scale_once` in a process of its own; sends its figures."""
    from bridge.bench import poll  # noqa: PLC0415 - the child's own imports

    conn.send(asyncio.run(poll.scale_once(ledger_settings, count, lance_url)))

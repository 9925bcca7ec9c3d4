"""The CLI commands other than ``demo``: serve, check-config, status, inspection, simulate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from bridge import app as app_mod
from bridge import connector, errors, lance, ledger, model, registry, runtime
from bridge import server as server_mod
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)
EXIT_OK, EXIT_FAILED = 0, 1
MAX_REPLAY = 1_000_000  # dead deliveries one `retry --all-dead` replays


async def serve(settings: settings_mod.Settings, args: argparse.Namespace) -> int:
    """Run the HTTP API and the jobs until SIGTERM/SIGINT, then drain; 1 if a job died.

    The drain ends within ``server.drain_seconds`` whatever clients do: the jobs drain while
    the HTTP server finishes (or cuts) the requests in progress, not one after the other.
    """
    app = app_mod.create_app(settings, init_ledger=args.init_ledger)
    http = server_mod.HttpServer(app, settings.server)
    try:
        # Inside the try: if a later startup step fails, cleanup closes what the earlier ones
        # opened (the ledger's threads would otherwise keep the process from ever exiting).
        await http.start()
        app = http.app
        supervisor = app[runtime.BRIDGE].supervisor
        assert supervisor is not None
        logger.info(
            "serving on http://%s:%s",
            settings.server.host,
            http.port,
            extra={"event": "serve.started", "ledger": ledger.where(settings.ledger)},
        )
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        await _first(stopped.wait(), supervisor.failed.wait())
        failed = supervisor.failed.is_set()
        logger.info("draining", extra={"event": "serve.draining"})
        supervisor.begin_stop(settings.server.drain_seconds)
    finally:
        await http.stop()
    logger.info("stopped", extra={"event": "serve.stopped"})
    return EXIT_FAILED if failed else EXIT_OK


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def check_config(settings: settings_mod.Settings, args: argparse.Namespace) -> int:
    """Print what the config says; with ``--online`` also check Lance and each connector."""
    console = Console()
    console.print(
        f"config ok: Lance at {settings.lance.base_url}, ledger {ledger.where(settings.ledger)}"
    )
    for item in settings.connectors:
        console.print(f"  connector {item.name} ({item.type}): events {', '.join(item.events)}")
    if not settings.server.api_tokens:
        console.print("  warning: server.api_tokens is empty, so /v1/* will refuse every call")
    if not args.online:
        return EXIT_OK
    async with aiohttp.ClientSession() as session:
        client = lance.LanceClient(session, settings.lance.base_url, settings.lance.token)
        try:
            balance = await client.balance()
        except errors.LanceError as exc:
            console.print(f"  Lance: FAILED: {exc.message}")
            return EXIT_FAILED
        console.print(f"  Lance: token accepted, {balance} credits")
        ok = True
        for built in registry.build(settings.connectors, session):
            ok = await _check_connector(console, built) and ok
    return EXIT_OK if ok else EXIT_FAILED


async def _check_connector(console: Console, item: connector.Connector) -> bool:
    try:
        await item.open()
        await item.check()
    except (errors.BridgeError, aiohttp.ClientError, TimeoutError) as exc:
        console.print(f"  connector {item.name}: FAILED: {exc}")
        return False
    finally:
        await item.close()
    console.print(f"  connector {item.name}: ok")
    return True


async def _open_existing(settings: settings_mod.Settings) -> ledger.Ledger:
    path = settings.ledger.path
    if ledger.backend_for(settings.ledger) == "sqlite" and not path.exists():
        raise errors.LedgerError(f"{path}: no ledger here (set ledger.path or use -c)")
    return await ledger.open(settings.ledger, exclusive=False, router=app_mod.router_for(settings))


async def migrate(settings: settings_mod.Settings, _: argparse.Namespace) -> int:
    """Bring the ledger's schema to this version's (safe from several replicas at once)."""
    print(await ledger.migrate(settings.ledger))
    return EXIT_OK


async def status(settings: settings_mod.Settings, args: argparse.Namespace) -> int:
    """Counts by state, oldest in-flight age, dead deliveries, last poll, inbound events by
    source and state, replicas; ``--json`` prints them as one JSON object."""
    store = await _open_existing(settings)
    try:
        facts = await store.counts()
        inbound = _by_source(await store.inbound_counts())
        replicas = await store.replicas()
    finally:
        await store.close()
    if args.json:
        print(json.dumps(_status_json(facts, inbound, replicas), indent=2))
        return EXIT_OK
    console = Console()
    table = Table(title=f"enrichments in {ledger.where(settings.ledger)}")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state in model.EnrichmentState:
        table.add_row(state, str(facts["enrichments"].get(state, 0)))
    console.print(table)
    deliveries = Table(title="deliveries")
    deliveries.add_column("connector", justify="left")
    for delivery_state in model.DeliveryState:
        deliveries.add_column(delivery_state, justify="right")
    for name, by_state in sorted(facts["deliveries"].items()):
        deliveries.add_row(name, *(str(by_state.get(s, 0)) for s in model.DeliveryState))
    console.print(deliveries)
    console.print(_inbound_table(inbound))
    oldest = facts["oldestInFlightCreatedAt"]
    age = "none in flight" if oldest is None else f"{time.time() - oldest:.0f} s"
    console.print(f"oldest in flight: {age}; last poll: {facts['lastPollAt'] or 'never'}")
    if facts["triggersHeld"]:
        console.print(f"[bold red]triggers held since {facts['triggersHeld']}[/]")
    console.print(_replica_table(replicas, time.time()))
    return EXIT_OK


def _by_source(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """Inbound counts as source → every inbound state → count (0 where none)."""
    found: dict[str, dict[str, int]] = {}
    for source, _ in sorted(counts):
        found[source] = {
            state.value: counts.get((source, state), 0) for state in model.InboundState
        }
    return found


def _inbound_table(inbound: dict[str, dict[str, int]]) -> Table | str:
    """Inbound CRM events (and ``match`` tasks, source ``api``) the ledger keeps: a row per
    state, a column per source (there are few sources, and seven states)."""
    if not inbound:
        return "inbound events: none"
    table = Table(title="inbound events")
    table.add_column("state")
    for source in inbound:
        table.add_column(source, justify="right")
    for state in model.InboundState:
        table.add_row(state, *(str(by_state[state]) for by_state in inbound.values()))
    return table


def _status_json(
    facts: dict[str, Any], inbound: dict[str, dict[str, int]], replicas: list[ledger.Replica]
) -> dict[str, Any]:
    """``status --json``: what the tables show, every state named even at 0."""
    return {
        "enrichments": {s.value: facts["enrichments"].get(s, 0) for s in model.EnrichmentState},
        "deliveries": {
            name: {s.value: by_state.get(s, 0) for s in model.DeliveryState}
            for name, by_state in sorted(facts["deliveries"].items())
        },
        "inbound": inbound,
        "oldestInFlightCreatedAt": facts["oldestInFlightCreatedAt"],
        "lastPollAt": facts["lastPollAt"],
        "triggersHeld": facts["triggersHeld"],
        "replicas": [
            {
                "id": r.id,
                "startedAt": r.started_at,
                "lastHeartbeat": r.last_heartbeat,
                "held": r.held,
            }
            for r in replicas
        ],
    }


def _replica_table(replicas: list[ledger.Replica], now: float) -> Table:
    """Who shares the ledger: each replica's id, last heartbeat and the rows it holds."""
    table = Table(title="replicas")
    table.add_column("replica")
    table.add_column("last heartbeat", justify="right")
    table.add_column("rows held", justify="right")
    for replica in replicas:
        age = f"{max(0.0, now - replica.last_heartbeat):.0f} s ago"
        table.add_row(replica.id, age, str(replica.held))
    return table


async def enrichments(settings: settings_mod.Settings, args: argparse.Namespace) -> int:
    """``enrichments list`` and ``enrichments show ID``."""
    store = await _open_existing(settings)
    try:
        if args.action == "show":
            found = await store.enrichments([args.id])
            if args.id not in found:
                raise errors.BridgeError(f"no enrichment {args.id}")
            deliveries = await store.list_deliveries(enrichment_id=args.id, limit=1000)
            print(json.dumps(found[args.id] | {"deliveries": deliveries}, indent=2))
            return EXIT_OK
        now = time.time()
        rows = await store.list_enrichments(
            state=args.state,
            after=0,
            limit=args.limit,
            entity_id=args.entity,
            created_after=None if args.newer_than is None else now - args.newer_than,
            created_before=None if args.older_than is None else now - args.older_than,
        )
    finally:
        await store.close()
    columns = ("id", "entity", "field", "mode", "state", "error", "updated")
    return _print_rows(rows, columns, _enrichment_cells, as_json=args.json)


def _enrichment_cells(row: dict[str, Any]) -> list[str]:
    entity = f"{row['entityType']} {row['entityId']}"
    return [
        str(row["id"]),
        entity,
        row["field"],
        row["mode"],
        row["state"],
        row["error"] or "",
        row["updatedAt"],
    ]


def _print_rows(
    rows: list[dict[str, Any]],
    columns: tuple[str, ...],
    cells: Callable[[dict[str, Any]], list[str]],
    *,
    as_json: bool,
) -> int:
    """Print ``rows`` as JSON (the API's shapes) or as a table of ``columns``."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*cells(row))
    Console().print(table)
    return EXIT_OK


async def deliveries(settings: settings_mod.Settings, args: argparse.Namespace) -> int:
    """``deliveries list`` and ``deliveries retry`` (replays never re-trigger Lance)."""
    store = await _open_existing(settings)
    try:
        if args.action == "retry":
            return await _retry(store, args)
        rows = await store.list_deliveries(
            state=args.state,
            connector=args.connector,
            limit=args.limit,
            updated_after=args.since,
            updated_before=args.until,
        )
    finally:
        await store.close()
    columns = ("id", "enrichment", "connector", "event", "state", "attempts", "last error")
    return _print_rows(rows, columns, _delivery_cells, as_json=args.json)


def _delivery_cells(row: dict[str, Any]) -> list[str]:
    return [
        str(row["id"]),
        str(row["enrichmentId"]),
        row["connector"],
        row["eventType"],
        row["state"],
        str(row["attempts"]),
        row["lastError"] or "",
    ]


async def inbound(settings: settings_mod.Settings, args: argparse.Namespace) -> int:
    """``inbound list``: CRM events received, matched / unmatched / ambiguous with why."""
    store = await _open_existing(settings)
    try:
        rows = await store.list_inbound(state=args.state, source=args.source, limit=args.limit)
    finally:
        await store.close()
    for row in rows:
        row.pop("cursor", None)
    columns = ("record", "state", "found", "reason")
    return _print_rows(rows, columns, _inbound_cells, as_json=args.json)


def _inbound_cells(row: dict[str, Any]) -> list[str]:
    record = f"{row['source']} {row['objectType']} {row['objectId']}".strip()
    found = row["entityId"] or (f"{len(row['candidates'])} candidates" if row["candidates"] else "")
    return [record, row["state"], found, row["reason"] or ""]


async def _retry(store: ledger.Ledger, args: argparse.Namespace) -> int:
    ids = list(args.ids)
    if not ids and not args.all_dead:
        raise errors.BridgeError("name delivery ids, or pass --all-dead")
    if args.all_dead:
        rows = await store.list_deliveries(
            state=model.DeliveryState.DEAD,
            connector=args.connector,
            limit=MAX_REPLAY,
            updated_after=args.since,
            updated_before=args.until,
        )
        ids += [row["id"] for row in rows]
    if not ids:
        print("no dead deliveries match; nothing to replay")
        return EXIT_OK
    replayed = await store.replay(ids, time.time())
    missing = sorted(set(ids) - set(replayed))
    print(f"replaying {len(replayed)} dead deliveries; the running daemon sends them")
    if missing:
        print(f"not dead or unknown, left alone: {', '.join(map(str, missing))}")
        return EXIT_FAILED
    return EXIT_OK


async def simulate(args: argparse.Namespace) -> int:
    """Run the Lance simulator until interrupted."""
    from bridge.sim import _http  # noqa: PLC0415 - only this command needs the simulator
    from bridge.sim import lance as sim  # noqa: PLC0415

    simulator = sim.LanceSimulator(
        sim.SimConfig(token=args.token, completion_s=tuple(args.completion))
    )
    runner = await sim.serve(simulator, args.host, args.port)
    url = _http.base_url(runner)
    print(
        f"Lance simulator on {url} (token {args.token!r}); admin: GET /_sim/stats,"
        " POST /_sim/complete, POST /_sim/faults; Ctrl-C stops",
        flush=True,
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()
    return EXIT_OK


HEALTHCHECK_TIMEOUT_S = 4.0  # inside the image's HEALTHCHECK --timeout of 5 s
# serve's wildcard binds, and the loopback address that reaches each (read here, not bound).
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


def healthz_url(settings: settings_mod.Settings) -> str:
    """Where ``serve`` with these settings answers ``/healthz`` from this machine."""
    host = settings.server.host
    host = _WILDCARD_HOSTS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}/healthz"


async def healthcheck(settings: settings_mod.Settings, _: argparse.Namespace) -> int:
    """0 if the daemon these settings describe answers ``/healthz``, else 1 with one line."""
    url = healthz_url(settings)
    timeout = aiohttp.ClientTimeout(total=HEALTHCHECK_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as answer:
            if answer.status == 200:
                return EXIT_OK
            problem = f"HTTP {answer.status}"
    except aiohttp.ClientConnectorError as exc:
        problem = f"nothing answers ({exc.os_error.strerror or exc.os_error})"
    except (aiohttp.ClientError, TimeoutError) as exc:
        problem = str(exc) or type(exc).__name__
    print(f"lance-bridge healthcheck: {url}: {problem}", file=sys.stderr)
    return EXIT_FAILED

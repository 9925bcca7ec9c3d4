"""The application: ``create_app()`` wires the ledger, HTTP session, connectors and jobs.

Everything opens and closes through aiohttp's ``cleanup_ctx``, in the order ledger → HTTP
session → connectors → scheduler, and closes in reverse.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from bridge import (
    connector,
    dispatcher,
    fetcher,
    lance,
    ledger,
    matcher,
    metrics,
    outbox,
    poller,
    registry,
    resolver,
    runtime,
    scheduler,
    triggerer,
    ui,
)
from bridge import settings as settings_mod
from bridge import (
    web as routes,
)

USER_AGENT = "lance-bridge"


def router_for(settings: settings_mod.Settings) -> outbox.Router:
    """Delivery routes of the configured connectors."""
    types = registry.connector_types()
    return outbox.Router(
        [
            outbox.Route(c.name, types[c.type].needs_record, frozenset(c.events))
            for c in settings.connectors
        ]
    )


def create_app(
    settings: settings_mod.Settings,
    *,
    clock: Callable[[], float] = time.time,
    run_jobs: bool = True,
    rng: random.Random | None = None,
    init_ledger: bool = False,
) -> web.Application:
    """Build the aiohttp application.

    Args:
        settings: The validated configuration.
        clock: Wall-clock source (tests pass a controllable one).
        run_jobs: Start the scheduler; tests pass ``False`` and call each job's ``run_once()``.
        rng: Randomness for jitter (tests pass a seeded one).
        init_ledger: Start a new ledger in an existing empty file (``serve --init-ledger``).
    """
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[routes.guard_middleware],
    )
    app[runtime.SETTINGS] = settings
    app[runtime.METRICS] = metrics.Metrics()
    app.cleanup_ctx.append(_ledger_ctx(clock, init_ledger))
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(_connectors_ctx)
    app.cleanup_ctx.append(_jobs_ctx(run_jobs, rng or random.Random()))  # noqa: S311 - jitter
    routes.setup_routes(app)
    if settings.ui.enabled:
        ui.setup(app, clock)
    return app


def _ledger_ctx(
    clock: Callable[[], float], init_ledger: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[runtime.SETTINGS]
        store = await ledger.open(
            settings.ledger, router=router_for(settings), initialize=init_ledger
        )
        try:
            app[runtime.BRIDGE] = runtime.Bridge(settings, clock, store)
            await app[runtime.METRICS].open(store)
            yield
        finally:
            await store.close()

    return ctx


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    bridge = app[runtime.BRIDGE]
    lance_config = bridge.settings.lance
    connector_limit = sum(c.max_concurrency for c in bridge.settings.connectors)
    tcp = aiohttp.TCPConnector(limit=lance_config.max_concurrency * 4 + connector_limit + 16)
    async with aiohttp.ClientSession(
        connector=tcp, headers={"User-Agent": USER_AGENT}, raise_for_status=False
    ) as session:
        bridge.session = session
        bridge.client = lance.LanceClient(
            session,
            lance_config.base_url,
            lance_config.token,
            timeout_s=lance_config.timeout_seconds,
            clock=bridge.clock,
        )
        yield


async def _connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    bridge = app[runtime.BRIDGE]
    assert bridge.session is not None
    built = registry.build(bridge.settings.connectors, bridge.session, clock=bridge.clock)
    opened: list[connector.Connector] = []
    try:
        for item in built:
            await item.open()
            opened.append(item)
        bridge.connectors = {item.name: item for item in built}
        yield
    finally:
        for item in reversed(opened):
            await item.close()


def _jobs_ctx(
    run_jobs: bool, rng: random.Random
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bridge = app[runtime.BRIDGE]
        bridge.jobs = build_jobs(bridge, rng)
        if not run_jobs:
            yield
            return
        s = bridge.settings
        supervisor = scheduler.Supervisor(
            {
                "trigger": (s.trigger.interval_seconds, bridge.jobs.triggerer.run_once),
                "poll": (s.poll.interval_seconds, bridge.jobs.poller.run_once),
                "fetch": (s.fetch.interval_seconds, bridge.jobs.fetcher.run_once),
                "deliver": (s.delivery.interval_seconds, bridge.jobs.dispatcher.run_once),
                "resolve": (s.inbound.interval_seconds, bridge.jobs.resolver.run_once),
                "match": (s.match.interval_seconds, bridge.jobs.matcher.run_once),
                "ledger": (ledger.WATCH_INTERVAL_S, bridge.ledger.watch),
                "heartbeat": (ledger.HEARTBEAT_INTERVAL_S, bridge.heartbeat),
            },
            observe=app[runtime.METRICS].job_ran,
            # Replicas sharing a PostgreSQL ledger poll on one tick grid (see the Poller).
            aligned=frozenset({"poll"}) if s.ledger.url.get_secret_value() else frozenset(),
        )
        bridge.supervisor = supervisor
        supervisor.start()
        yield
        await supervisor.stop(s.server.drain_seconds)

    return ctx


def build_jobs(bridge: runtime.Bridge, rng: random.Random) -> scheduler.Jobs:
    """The jobs over the bridge's ledger, Lance client and connectors."""
    assert bridge.client is not None
    s, store, client, clock = bridge.settings, bridge.ledger, bridge.client, bridge.clock
    return scheduler.Jobs(
        triggerer=triggerer.Triggerer(
            store,
            client,
            s.trigger,
            s.poll,
            batch_size=s.lance.trigger_batch_size,
            clock=clock,
            rng=rng,
        ),
        poller=poller.Poller(
            store,
            client,
            s.poll,
            batch_size=s.lance.query_batch_size,
            clock=clock,
            rng=rng,
            # On PostgreSQL replicas may share the work: they poll on one tick grid.
            tick_s=s.poll.interval_seconds if s.ledger.url.get_secret_value() else None,
        ),
        fetcher=fetcher.Fetcher(store, client, s.fetch, clock=clock, rng=rng),
        dispatcher=dispatcher.Dispatcher(
            store, bridge.connectors, s.delivery, clock=clock, rng=rng
        ),
        resolver=resolver.Resolver(store, bridge.connectors, s.inbound, clock=clock),
        matcher=matcher.Matcher(store, client, bridge.connectors, s.match, clock=clock),
    )

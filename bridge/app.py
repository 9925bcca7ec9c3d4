"""The application: ``create_app()`` wires the ledger, HTTP session, connectors and jobs.

Everything opens and closes through aiohttp's ``cleanup_ctx``, in the order ledger → HTTP
session → connectors → scheduler, and closes in reverse.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from bridge import (
    connector,
    dispatcher,
    fetcher,
    inbound,
    lance,
    ledger,
    metrics,
    outbox,
    poller,
    registry,
    scheduler,
    triggerer,
)
from bridge import settings as settings_mod
from bridge import (
    web as routes,
)

USER_AGENT = "lance-bridge"


@dataclasses.dataclass(slots=True)
class Bridge:
    """The running parts, in the order they open."""

    settings: settings_mod.Settings
    clock: Callable[[], float]
    ledger: ledger.Ledger
    session: aiohttp.ClientSession | None = None
    client: lance.LanceClient | None = None
    connectors: dict[str, connector.Connector] = dataclasses.field(default_factory=dict)
    jobs: scheduler.Jobs | None = None
    supervisor: scheduler.Supervisor | None = None

    def ready(self) -> bool:
        """Ledger open and usable, and jobs running (or driven by hand without a scheduler)."""
        if self.jobs is None or self.ledger.check() is not None:
            return False
        return self.supervisor is None or self.supervisor.running

    def live_metrics(self) -> metrics.Live:
        """The in-process counters of the parts that are open."""
        return metrics.Live(
            lance=self.client.statuses if self.client else {},
            attempts=self.jobs.dispatcher.attempts if self.jobs else {},
            skipped=self.supervisor.skipped if self.supervisor else {},
            crm={
                (name, endpoint, status): n
                for name, item in self.connectors.items()
                for (endpoint, status), n in item.remote_requests.items()
            },
        )


SETTINGS = web.AppKey("settings", settings_mod.Settings)
BRIDGE = web.AppKey("bridge", Bridge)
METRICS = web.AppKey("metrics", metrics.Metrics)


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
    app[SETTINGS] = settings
    app[METRICS] = metrics.Metrics()
    app.cleanup_ctx.append(_ledger_ctx(clock, init_ledger))
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(_connectors_ctx)
    app.cleanup_ctx.append(_jobs_ctx(run_jobs, rng or random.Random()))  # noqa: S311 - jitter
    routes.setup_routes(app)
    return app


def _ledger_ctx(
    clock: Callable[[], float], init_ledger: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        store = await ledger.Ledger.open(
            settings.ledger.path,
            router=router_for(settings),
            synchronous=settings.ledger.synchronous,
            initialize=init_ledger,
        )
        try:
            app[BRIDGE] = Bridge(settings, clock, store)
            await app[METRICS].open(store)
            yield
        finally:
            await store.close()

    return ctx


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    bridge = app[BRIDGE]
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
        )
        yield


async def _connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    bridge = app[BRIDGE]
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
        bridge = app[BRIDGE]
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
                "ledger": (ledger.WATCH_INTERVAL_S, bridge.ledger.watch),
            },
            observe=app[METRICS].job_ran,
        )
        bridge.supervisor = supervisor
        supervisor.start()
        yield
        await supervisor.stop(s.server.drain_seconds)

    return ctx


def build_jobs(bridge: Bridge, rng: random.Random) -> scheduler.Jobs:
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
            store, client, s.poll, batch_size=s.lance.query_batch_size, clock=clock, rng=rng
        ),
        fetcher=fetcher.Fetcher(store, client, s.fetch, clock=clock, rng=rng),
        dispatcher=dispatcher.Dispatcher(
            store, bridge.connectors, s.delivery, clock=clock, rng=rng
        ),
        resolver=inbound.Resolver(store, bridge.connectors, s.inbound, clock=clock),
    )

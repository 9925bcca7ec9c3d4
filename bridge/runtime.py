"""The running bridge: its parts, and the keys the aiohttp application stores them under.

The routes read these keys and ``create_app()`` fills them; both import this module, so the
routes need not import the application that registers them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import aiohttp
from aiohttp import web

from bridge import connector, lance, ledger, metrics, scheduler
from bridge import settings as settings_mod


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

    async def heartbeat(self) -> None:
        """The heartbeat job's single pass: this replica is alive; its leases are renewed."""
        await self.ledger.heartbeat(self.clock())

    def live_metrics(self) -> metrics.Live:
        """The in-process counters of the parts that are open."""
        return metrics.Live(
            lance=self.client.statuses if self.client else {},
            attempts=self.jobs.dispatcher.attempts if self.jobs else {},
            skipped=self.supervisor.skipped if self.supervisor else {},
            searches=self.jobs.matcher.searches if self.jobs else {},
            crm={
                (name, endpoint, status): n
                for name, item in self.connectors.items()
                for (endpoint, status), n in item.remote_requests.items()
            },
        )


SETTINGS = web.AppKey("settings", settings_mod.Settings)
BRIDGE = web.AppKey("bridge", Bridge)
METRICS = web.AppKey("metrics", metrics.Metrics)

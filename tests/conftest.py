"""Fixtures shared by every test: a clean environment, the Lance simulator, a webhook sink."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from bridge import app as app_mod
from bridge import ledger, model, runtime, scheduler
from bridge import settings as settings_mod
from bridge.ledger import postgres_db
from bridge.sim import _http
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests import pg

API_TOKEN = "test-api-token"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No LANCE_BRIDGE_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("LANCE_BRIDGE_"):
            monkeypatch.delenv(name)
    return


class Clock:
    """A settable clock shared by the bridge and the simulator."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim_config(clock: Clock, request: pytest.FixtureRequest) -> sim.SimConfig:
    """Records are terminal on the first read after their trigger.

    Override fields per test with ``@pytest.mark.parametrize("sim_config", [{...}],
    indirect=True)``.
    """
    base: dict[str, Any] = {
        "completion_s": (0.0, 0.0),
        "seed": 7,
        "clock": clock,
        "outcomes": {"found": 1.0},
    }
    return sim.SimConfig(**(base | getattr(request, "param", {})))


@pytest.fixture
async def simulator(sim_config: sim.SimConfig) -> AsyncIterator[tuple[sim.LanceSimulator, str]]:
    lance_sim = sim.LanceSimulator(sim_config)
    runner = await sim.serve(lance_sim)
    yield lance_sim, _http.base_url(runner)
    await runner.cleanup()


@pytest.fixture
async def sink() -> AsyncIterator[tuple[sink_mod.WebhookSink, str]]:
    receiver = sink_mod.WebhookSink(SECRET)
    runner = await sink_mod.serve(receiver)
    yield receiver, _http.base_url(runner)
    await runner.cleanup()


def make_settings(
    tmp_path: Path, lance_url: str, sink_url: str | None = None, **sections: Any
) -> settings_mod.Settings:
    """Test settings: ledger in ``tmp_path``, Lance at ``lance_url``, a webhook to the sink."""
    data: dict[str, Any] = {
        "lance": {"base_url": lance_url, "token": "sim-token"},
        "ledger": {"path": tmp_path / "ledger.db"},
        "server": {"api_tokens": [API_TOKEN], "max_body_bytes": 1_048_576},
        "delivery": {"jitter": 0.0},
        "poll": {"jitter": 0.0},
    }
    if sink_url is not None:
        data["connectors"] = [
            {"name": "hook", "type": "webhook", "url": f"{sink_url}/hook", "secret": SECRET}
        ]
    for key, value in sections.items():
        data[key] = data.get(key, {}) | value if isinstance(value, dict) else value
    return settings_mod.Settings(**data)


BridgeFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
LedgerFactory = Callable[..., Awaitable[ledger.Ledger]]
# The ledger backends the behavioural ledger suite runs against.
LEDGER_BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=LEDGER_BACKENDS)
async def open_ledger(request: pytest.FixtureRequest) -> AsyncIterator[LedgerFactory]:
    """:func:`bridge.ledger.open` with the backend this run of the test is for.

    For PostgreSQL each test gets a migrated schema of its own (dropped after it); every path
    the test names maps to that one database. Tests marked ``sqlite_only`` (they look inside
    the file) skip there.
    """
    if request.param == "sqlite":

        async def factory(where: Path, **options: Any) -> ledger.Ledger:
            return await ledger.open(where, backend="sqlite", **options)

        yield factory
        return
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("looks inside the SQLite file")
    async with pg.schema() as url:
        config = settings_mod.LedgerSettings(url=SecretStr(url))
        await postgres_db.migrate(config)

        async def pg_factory(where: Path, **options: Any) -> ledger.Ledger:
            del where
            return await ledger.open(config, **options)

        yield pg_factory


@pytest.fixture
def make_bridge(aiohttp_client: Any, tmp_path: Path, clock: Clock) -> BridgeFactory:
    """Start the real app (jobs not scheduled: tests call ``run_once()``) on loopback."""

    async def factory(settings: settings_mod.Settings) -> TestClient[web.Request, web.Application]:
        app = app_mod.create_app(settings, clock=clock, run_jobs=False)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
        return client

    return factory


def jobs_of(client: TestClient[web.Request, web.Application]) -> scheduler.Jobs:
    jobs = client.app[runtime.BRIDGE].jobs
    assert jobs is not None
    return jobs


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


def tasks_for(n: int, field: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"entityId": str(uuid.uuid4()), "field": field, **extra} for _ in range(n)]


async def unsettled(client: Any) -> int:
    """Rows still in flight or awaiting values, plus deliveries not yet settled."""
    snap = await client.app[runtime.BRIDGE].ledger.snapshot()
    rows = sum(snap.states.get(state, 0) for state in model.IN_FLIGHT) + snap.awaiting
    deliveries = sum(n for (_, state), n in snap.deliveries.items() if state == "pending")
    return rows + deliveries


async def drain(client: Any, rounds: int = 20, step_s: float = 2.0) -> int:
    """Run every job once per round, ``step_s`` apart on the test clock, until all is settled.

    Returns:
        The rounds it took.
    """
    jobs = jobs_of(client)
    clock = client.app[runtime.BRIDGE].clock
    for done in range(1, rounds + 1):
        await jobs.run_all_once()
        clock.advance(step_s)
        if not await unsettled(client):
            return done
    raise AssertionError(f"pipeline did not settle in {rounds} rounds")

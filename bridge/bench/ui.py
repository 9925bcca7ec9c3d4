"""``bench ui``: every dashboard page timed with 1,000,000 rows in the ledger (DESIGN §13).

The ledger is filled as ``bench scale`` fills it (in-flight tracked rows), then a slice of the
newest rows is ended so there are deliveries (delivered and dead, with errors) and inbound
events to list. ``serve``'s own app then answers on loopback, logged in like a browser, and
each page is requested :data:`ROUNDS` times in turn: p50 and p99 per page against the 200 ms
bar. Requests go one at a time, as one operator clicks; the client shares the event loop, so
the figures include its own cost and err on the slow side.
"""

from __future__ import annotations

import base64
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from bridge import app as app_mod
from bridge import ledger, model, runtime
from bridge import settings as settings_mod
from bridge.bench import Result, peak_rss_mb, poll, procs
from bridge.sim import _http

TOKEN = "bench-ui-token"  # noqa: S105 - a throwaway token of a throwaway bridge
ROUNDS = 40
ENDED = 10_000  # newest rows ended, so the lists of deliveries have rows
INBOUND = 2_000
BAR_MS = 200.0


def _settings(folder: Path) -> settings_mod.Settings:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    # Nothing is ever sent: the jobs do not run, the pages only read.
    hook = {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": secret}
    return settings_mod.Settings(
        lance={"base_url": "http://127.0.0.1:9", "token": "bench"},
        ledger={"path": folder / "ui.db"},
        server={"api_tokens": [TOKEN]},
        connectors=[hook],
    )


@contextlib.asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield _http.base_url(runner)
    finally:
        await runner.cleanup()


async def _end_some(store: ledger.Ledger, count: int, now: float) -> tuple[int, int]:
    """End the ``ENDED`` newest rows (half the rows of a small run): their deliveries half
    delivered, half dead; and ``INBOUND`` inbound events.

    Returns an enrichment id and a delivery id to open.
    """
    ended = min(ENDED, count // 2)
    first = count - ended + 1
    changes = [
        ledger.Change(i, "failed", None, error="Lance gave up on it")
        for i in range(first, count + 1)
    ]
    for start in range(0, len(changes), 1000):
        await store.apply(changes[start : start + 1000], now)
    due = await store.due_deliveries(now + 1, ended)
    attempts = [
        ledger.Attempt(d.id, "delivered", None, None, 200)
        if i % 2
        else ledger.Attempt(d.id, "dead", None, "HTTP 410: the receiver refused it", 410)
        for i, d in enumerate(due)
    ]
    for start in range(0, len(attempts), 1000):
        await store.record_attempts(attempts[start : start + 1000], now)
    for start in range(0, INBOUND, 500):
        events = [
            model.Inbound(
                f"bench-{i}", skipped="the record has no Lance id", record=("contacts", str(i))
            )
            for i in range(start, start + 500)
        ]
        await store.receive("hook", events, now)
    return first, due[0].id if due else 1


def _pages(enrichment_id: int, delivery_id: int, count: int, now: float) -> dict[str, str]:
    recent = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 3600))
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 3600))
    some_entity = procs.entity_ids(1, start=count // 2)[0]
    return {
        "overview": "/ui/",
        "overview fragment": "/ui/fragments/counts",
        "enrichments": "/ui/enrichments",
        "enrichments deep page": f"/ui/enrichments?cursor={count // 2}",
        "enrichments state=failed": "/ui/enrichments?state=failed",
        "enrichments field=phones (none)": "/ui/enrichments?field=phones",
        "enrichments entity id": f"/ui/enrichments?entity_id={some_entity}",
        "enrichments CRM record (none)": "/ui/enrichments?record_id=no-such-record",
        "enrichments created last hour": f"/ui/enrichments?from={recent}",
        "enrichments created in 1 h (none)": f"/ui/enrichments?from={future}",
        "enrichment detail": f"/ui/enrichments/{enrichment_id}",
        "deliveries": "/ui/deliveries",
        "deliveries state=dead": "/ui/deliveries?state=dead",
        "deliveries connector+time": f"/ui/deliveries?connector=hook&from={recent}",
        "delivery detail": f"/ui/deliveries/{delivery_id}",
        "retry-dead confirmation": "/ui/deliveries/retry-dead",
        "inbound": "/ui/inbound",
        "inbound state=skipped": "/ui/inbound?state=skipped",
        "connectors": "/ui/connectors",
        "jump to id": f"/ui/jump?kind=enrichment&id={enrichment_id}",
    }


async def bench_ui(count: int, folder: Path, rounds: int = ROUNDS) -> Result:
    """Time every dashboard page ``rounds`` times with ``count`` rows in the ledger."""
    settings = _settings(folder)
    now = time.time()
    store = await ledger.open(settings.ledger.path)
    try:
        started = time.perf_counter()
        await poll._fill(store, count, now)  # bench scale's own fill
        fill_s = time.perf_counter() - started
    finally:
        await store.close()
    app = app_mod.create_app(settings, run_jobs=False)
    figures: dict[str, float | int | str] = {"rows": count, "fill_seconds": round(fill_s, 1)}
    bars: dict[str, bool] = {}
    async with (
        _served(app) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        enrichment_id, delivery_id = await _end_some(app[runtime.BRIDGE].ledger, count, now)
        login = await session.post(f"{url}/ui/login", data={"token": TOKEN}, allow_redirects=False)
        if login.status != 303:
            raise RuntimeError(f"bench ui: login answered {login.status}")
        pages = _pages(enrichment_id, delivery_id, count, now)
        timings: dict[str, list[float]] = {name: [] for name in pages}
        # Warm up: the first read of each page (the overview's first counts every row).
        first = [await _get(session, url + path) for path in pages.values()]
        figures["first_overview_ms"] = round(first[0], 1)
        for _ in range(rounds):
            for name, path in pages.items():
                timings[name].append(await _get(session, url + path))
    for name, ms in timings.items():
        p50, p99 = statistics.median(ms), _p99(ms)
        figures[f"{name} p50/p99 ms"] = f"{p50:.1f} / {p99:.1f}"
        bars[f"{name} < {BAR_MS:.0f} ms"] = p99 < BAR_MS
    figures["peak_rss_mb"] = peak_rss_mb()
    return Result("ui", figures, bars)


async def _get(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url, allow_redirects=False) as response:
        await response.read()
        # A 303 elsewhere than the jump would be the login page: the session was lost.
        if response.status != (303 if "/ui/jump" in url else 200):
            raise RuntimeError(f"bench ui: {url} answered {response.status}")
    return (time.perf_counter() - started) * 1000


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

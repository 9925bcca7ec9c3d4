"""Soak: ``serve`` under load while Lance and the receiver fail, SIGKILLed at random, restarted.

The simulator (``lance-bridge simulate``, its own process, so it outlives every restart) fails,
throttles and drops a share of requests; the in-process webhook receiver answers some requests
with 5xx (retried) or 410 (permanent), and for one stretch fails everything (retries exhausted).
Meanwhile triggers keep arriving in batches and ``serve`` is killed with SIGKILL at seeded random
points of the load, then restarted. Once everything settled, ``serve`` drains on SIGTERM and the
ledger file and the simulator's books must show: nothing lost, every delivery delivered or dead
with a reason, one delivery per terminal enrichment, and no paid trigger repeated.

``SOAK_SEED`` picks the task mix and the kill points (the simulator's own fault draws and the
scheduling of the processes are not reproducible). The long variant runs with ``--run-slow``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.sim import sink as sink_mod
from tests.acceptance import soak
from tests.acceptance import test_serve as serve_mod
from tests.conftest import API_TOKEN, SECRET

# Not LANCE_BRIDGE_*: the autouse fixture clears those before every test.
SEED = int(os.environ.get("SOAK_SEED", "1729"))
FAULTS = {"fail_rate": 0.05, "throttle_rate": 0.03, "drop_rate": 0.02, "retry_after_s": 1}
RETRY_SCHEDULE_S = (0.0, 0.2, 0.4)  # three attempts within about a second
SINK_OUTAGE_S = 1.5  # longer than the schedule: deliveries tried only then end dead

lance_url = serve_mod.lance_url
receiver = serve_mod.receiver


def _config(tmp_path: Path, lance_url: str, sink_url: str, port: int) -> Path:
    path = tmp_path / "lance-bridge.toml"
    path.write_text(
        f"""
[lance]
base_url = "{lance_url}"
token = "sim-token"
timeout_seconds = 5

[ledger]
path = "{tmp_path / "ledger.db"}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]
drain_seconds = 5

[poll]
interval_seconds = 0.2
young_seconds = 2
max_delay_seconds = 1

[trigger]
interval_seconds = 0.1

[fetch]
interval_seconds = 0.1
concurrency = 32

[delivery]
interval_seconds = 0.1
retry_schedule_seconds = {list(RETRY_SCHEDULE_S)}
jitter = 0.0

[log]
level = "warning"

[[connectors]]
name = "hook"
type = "webhook"
url = "{sink_url}/hook"
secret = "{SECRET}"
timeout_seconds = 5
events = {list(soak.EVENTS)}
""",
        encoding="utf-8",
    )
    return path


@dataclasses.dataclass
class Load(soak.Load):
    """The soak's load on one ``serve``, which the killer follows: :meth:`reached` waits for a
    share of it; a batch may name a task twice."""

    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    progress: asyncio.Condition = dataclasses.field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        await super().run()
        self.done.set()
        await self._advance(0)

    async def reached(self, sent: float) -> None:
        """Wait until ``sent`` tasks were sent, or all of them."""
        async with self.progress:
            await self.progress.wait_for(lambda: self.sent >= sent or self.done.is_set())

    async def _advance(self, tasks: int) -> None:
        async with self.progress:
            self.sent += tasks
            self.progress.notify_all()

    def _batch(self, size: int) -> list[dict[str, str]]:
        tasks = super()._batch(size)
        if self.rng.random() < 0.3:  # the same task twice in one request joins one row
            tasks.append(dict(self.rng.choice(tasks)))
        return tasks


async def _sink_faults(
    rng: random.Random, sink: sink_mod.WebhookSink, count: int, stop: asyncio.Event
) -> None:
    """Until ``stop``: bursts of 5xx, a few permanent 410s, and one outage mid-delivery."""
    outage_at = rng.uniform(0.3, 0.6) * count
    outage_done = False
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.1, 0.4))
        if not outage_done and len(sink.received) >= outage_at:
            sink.fail_always(503)
            await asyncio.sleep(SINK_OUTAGE_S)
            sink.fail_always(None)
            outage_done = True
        elif rng.random() < 0.15:
            sink.fail_next(1, 410)
        else:
            retry_after = 1 if rng.random() < 0.2 else None
            sink.fail_next(rng.randint(1, 4), rng.choice((500, 502, 503)), retry_after=retry_after)


async def _killer(
    rng: random.Random, serve: serve_mod.Serve, load: Load, kills: int
) -> list[tuple[float, int]]:
    """SIGKILL ``serve`` at seeded points of the load (the last may fall after it), restart."""
    points = sorted(rng.uniform(0.1, 1.05) * load.count for _ in range(kills))
    done: list[tuple[float, int]] = []
    for point in points:
        await load.reached(point)
        await asyncio.sleep(rng.uniform(0.0, 0.4))  # somewhere inside whatever runs now
        assert await serve.stop(signal.SIGKILL) == -signal.SIGKILL
        done.append((time.monotonic(), load.sent))
        await serve.start()
    return done


def _db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "ledger.db", timeout=10)


def _unsettled(tmp_path: Path) -> int:
    with _db(tmp_path) as db:
        return soak.unsettled(db)


def _reason(error: str) -> str:
    """A dead delivery's reason without the receiver's body, to count them by kind."""
    return error.split(":", 2)[0] if error.startswith("retries") else error.split(":", 1)[0]


@pytest.mark.parametrize(
    ("count", "kills", "settle_s"),
    [
        pytest.param(400, 3, 60.0, id="short"),
        pytest.param(5000, 6, 300.0, id="long", marks=pytest.mark.slow),
    ],
)
async def test_faults_and_sigkills_lose_nothing_and_repeat_no_paid_trigger(
    tmp_path: Path,
    lance_url: str,
    receiver: tuple[sink_mod.WebhookSink, str],
    count: int,
    kills: int,
    settle_s: float,
) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)  # reproducible choices
    sink, sink_url = receiver
    port = serve_mod._free_port()
    serve = serve_mod.Serve(
        _config(tmp_path, lance_url, sink_url, port), port, tmp_path / "serve.log"
    )
    faults = await soak.sim(lance_url, "POST", "/_sim/faults", FAULTS)
    assert faults["fail_rate"] == FAULTS["fail_rate"]
    load = Load(rng, [serve.url], count)
    stop_faults = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    try:
        await serve.start()
        background.append(asyncio.create_task(load.run()))
        sink_rng = random.Random(rng.random())
        background.append(asyncio.create_task(_sink_faults(sink_rng, sink, count, stop_faults)))
        killed = await _killer(random.Random(rng.random()), serve, load, kills)
        await background[0]

        async def settled() -> bool:
            return _unsettled(tmp_path) == 0

        await serve_mod._eventually(settled, f"the pipeline to settle (seed {SEED})", settle_s)
        stop_faults.set()
        await background[1]
        assert await serve.stop(signal.SIGTERM) == 0
    finally:
        await soak.reap([serve], background)
    stats = await soak.sim(lance_url, "GET", "/_sim/stats")
    figures = _check_ledger(tmp_path, load, sink)
    print(  # the soak's figures, shown with `pytest -s`
        f"\nsoak seed={SEED} count={count}: {time.monotonic() - started:.1f} s,"
        f" kills at sent={[sent for _, sent in killed]}, {load.requests} trigger requests,"
        f" accepted={len(load.accepted)} ambiguous={len(load.ambiguous)}, {figures},"
        f" Lance statuses={stats['statuses']}, credits={stats['credits']}"
    )
    _check_charges(stats["credits"], figures["enrichments"])


def _check_charges(credits: dict[str, Any], enrichments: int) -> None:
    """No paid trigger repeated: Lance charged each (entity, field) once, and only those rows."""
    assert credits["maxChargesPerKey"] == 1, credits
    assert credits["paidCharges"] == enrichments, credits


def _check_ledger(tmp_path: Path, load: Load, sink: sink_mod.WebhookSink) -> dict[str, Any]:
    with _db(tmp_path) as db:
        rows = db.execute(soak.ENRICHMENT_ROWS).fetchall()
        deliveries = db.execute(soak.DELIVERY_ROWS).fetchall()
    figures, dead = soak.check_books(rows, deliveries, load, sink)
    return figures | {
        "deadReasons": dict(Counter(_reason(reason) for reason in dead)),
        "sinkAttempts": sum(sink.attempts.values()),
    }

"""Soak: three ``serve`` replicas on one PostgreSQL ledger, SIGKILLed at random and restarted.

One fresh schema is migrated (``lance-bridge migrate``), then three replicas (their own
``ledger.replica_id`` and port) share it. The simulator (``lance-bridge simulate``, its own
process) fails 10 % of requests: 500s, 429s and dropped connections. The webhook connector
delivers to the bundled receiver, which verifies every signature. Triggers arrive through all
three replicas round robin; a submit a replica refused (connection refused, 503) goes to the
next one, and only 202s count as accepted. Meanwhile a random replica is SIGKILLed every 2-4 s
and restarted under the same id, which ends the claims its dead process left.

Once everything settled, every replica drains on SIGTERM and the ledger and the simulator's
books must show:

* every accepted task in the ledger and terminal, every delivery delivered or dead with a
  reason, one per terminal enrichment, nothing ``lost``;
* no paid trigger repeated (``credits.maxChargesPerKey``), and no trigger repeated at all
  (``triggers.reused``: a trigger whose answer a kill cut is settled by a batch query);
* batch queries close to their floor. What the bridge promises (DESIGN §11) is ⌈due/200⌉ per
  tick across replicas, but "due at a tick" is the ledger's view and cannot be seen from
  outside. What can: every answered batch query, its time and its size. Cut the run into
  windows of one poll interval on the replicas' tick grid (aligned on the Unix epoch, as their
  poll jobs are): the tasks queried in a window could not have been carried by fewer than
  ⌈tasks/200⌉ queries, whatever was due. The sum over windows is the floor
  (``/_sim/stats?tick=``); the answered queries must stay within 1.1 times it. It measures
  packing, not latency (each row's pacing is the poll tests'): each window holds one tick, so
  every partial batch beyond one per window is an excess. Failed queries are not counted:
  their rows are released, due again, and rejoin the next tick's batches; so do a killed
  replica's, when its restart ends the claims its dead process left. The trigger job asks too:
  a trigger request that failed or was cut (non-200 at the simulator, or a kill) leaves rows
  marked sent, settled by one batch query before any is triggered again. Those queries are
  the economy working, not poll ticks, so they are allowed on top of the 1.1 times, and the
  excess left over is printed;
* webhook duplicates (the receiver saw a ``webhook-id`` again) counted and printed; each comes
  from a send a kill cut between the receiver's answer and the ledger's record, so there are at
  most ``delivery.batch_size`` per kill.

``SOAK_SEED`` picks the task mix and the kill times; the simulator's fault draws and the
processes' scheduling are not reproducible. The long variant (5,000 enrichments) runs with
``--run-slow``; ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from bridge.sim import sink as sink_mod
from tests import pg
from tests.acceptance import soak
from tests.acceptance import test_serve as serve_mod
from tests.conftest import API_TOKEN, SECRET

# Not LANCE_BRIDGE_*: the autouse fixture clears those before every test.
SEED = int(os.environ.get("SOAK_SEED", "4242"))
FAULTS = {"fail_rate": 0.04, "throttle_rate": 0.03, "drop_rate": 0.03, "retry_after_s": 1}
REPLICAS = 3
POLL_TICK_S = 0.5
DELIVERY_BATCH = 50
QUERY_EXCESS_MAX = 1.1
lance_url = serve_mod.lance_url
receiver = serve_mod.receiver


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A fresh schema on the test server (fails in CI without one); its URL."""
    async with pg.schema() as url:
        yield url


def _config(folder: Path, url: str, lance: str, sink_url: str, port: int, replica: str) -> Path:
    folder.mkdir()
    path = folder / "lance-bridge.toml"
    path.write_text(
        f"""
[lance]
base_url = "{lance}"
token = "sim-token"
timeout_seconds = 5

[ledger]
url = "{url}"
replica_id = "{replica}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]
drain_seconds = 5

[poll]
interval_seconds = {POLL_TICK_S}
young_seconds = 2
max_delay_seconds = 1

[trigger]
interval_seconds = 0.1

[fetch]
interval_seconds = 0.1

[delivery]
interval_seconds = 0.1
batch_size = {DELIVERY_BATCH}
retry_schedule_seconds = [0.0, 0.2, 0.5, 1.0, 2.0]
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


class Load(soak.Load):
    """The soak's load over every replica: a refused submit goes to the next one."""

    retry_pause_s: ClassVar[float] = 0.02


async def _killer(
    rng: random.Random, replicas: list[serve_mod.Serve], stop: asyncio.Event
) -> list[str]:
    """Every 2-4 s until ``stop``: SIGKILL a random replica, then restart it (its ``/readyz``)."""
    killed: list[str] = []
    while True:
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(2.0, 4.0))
        except TimeoutError:
            pass
        else:
            return killed
        victim = rng.randrange(len(replicas))
        assert await replicas[victim].stop(signal.SIGKILL) == -signal.SIGKILL
        killed.append(f"r{victim}")
        await replicas[victim].start()


def _unsettled(url: str) -> int:
    with psycopg.connect(url) as db:
        return soak.unsettled(db)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANCE_BRIDGE_")}
    return subprocess.run(
        [*serve_mod._cli(), *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.mark.parametrize(
    ("count", "pause_s", "settle_s"),
    [
        pytest.param(600, (0.3, 0.8), 60.0, id="short"),
        pytest.param(5000, (0.1, 0.3), 300.0, id="long", marks=pytest.mark.slow),
    ],
)
async def test_three_replicas_killed_at_random_lose_nothing_and_repeat_no_trigger(
    tmp_path: Path,
    database: str,
    lance_url: str,
    receiver: tuple[sink_mod.WebhookSink, str],
    count: int,
    pause_s: tuple[float, float],
    settle_s: float,
) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    sink, sink_url = receiver
    ports = [serve_mod._free_port() for _ in range(REPLICAS)]
    configs = [
        _config(tmp_path / f"r{i}", database, lance_url, sink_url, port, f"r{i}")
        for i, port in enumerate(ports)
    ]
    migrated = await asyncio.to_thread(_run, "migrate", "-c", str(configs[0]))
    assert migrated.returncode == 0, migrated.stderr
    replicas = [
        serve_mod.Serve(config, port, tmp_path / f"r{i}" / "serve.log")
        for i, (config, port) in enumerate(zip(configs, ports, strict=True))
    ]
    faults = await soak.sim(lance_url, "POST", "/_sim/faults", FAULTS)
    assert faults["drop_rate"] == FAULTS["drop_rate"]
    load = Load(rng, [r.url for r in replicas], count, pause_s)
    stop_killing = asyncio.Event()
    killer: asyncio.Task[list[str]] | None = None

    async def settled() -> bool:
        return await asyncio.to_thread(_unsettled, database) == 0

    try:
        await asyncio.gather(*(replica.start() for replica in replicas))
        killer = asyncio.create_task(_killer(random.Random(rng.random()), replicas, stop_killing))
        await load.run()
        # Kills go on while the pipeline works off the load, then the last restart finishes.
        await serve_mod._eventually(settled, f"the pipeline to settle (seed {SEED})", settle_s)
        stop_killing.set()
        killed = await killer
        await serve_mod._eventually(settled, f"the pipeline to settle (seed {SEED})", settle_s)
        codes = await asyncio.gather(*(r.stop(signal.SIGTERM) for r in replicas))
        assert codes == [0] * REPLICAS
    finally:
        await soak.reap(replicas, [] if killer is None else [killer])
    stats = await soak.sim(lance_url, "GET", f"/_sim/stats?tick={POLL_TICK_S}")
    figures = _check_ledger(database, load, sink)
    queries = stats["batchQueries"]
    duplicates = sum(n - 1 for n in sink.attempts.values())
    triggers = stats["statuses"]["POST /api/v1/operations/enrichment/batch"]
    settling = sum(n for status, n in triggers.items() if status != "200") + len(killed)
    print(  # the soak's figures, shown with `pytest -s`
        f"\nreplica soak seed={SEED} count={count}: {time.monotonic() - started:.1f} s,"
        f" {len(killed)} kills {killed}, {load.requests} trigger requests"
        f" ({load.refused} refused), accepted={len(load.accepted)}"
        f" ambiguous={len(load.ambiguous)}, {figures}, webhook duplicates={duplicates},"
        f" batch queries={queries['requests']} floor={queries['floor']}"
        f" ({queries['requests'] / max(queries['floor'], 1):.3f} x, up to {settling}"
        f" settling lost trigger answers,"
        f" {queries['tasks'] / max(queries['requests'], 1):.1f} tasks each),"
        f" triggers={stats['triggers']}, credits={stats['credits']},"
        f" Lance statuses={stats['statuses']}"
    )
    assert stats["credits"]["maxChargesPerKey"] == 1, stats["credits"]
    assert stats["credits"]["paidCharges"] == figures["enrichments"], stats["credits"]
    assert stats["triggers"]["reused"] == 0, "a trigger repeated instead of settled by a query"
    assert stats["triggers"]["ids"] == figures["enrichments"], stats["triggers"]
    assert queries["requests"] <= math.floor(QUERY_EXCESS_MAX * queries["floor"]) + settling, (
        queries,
        settling,
    )
    assert killed, "no replica was killed: the run proved nothing"
    assert duplicates <= len(killed) * DELIVERY_BATCH, (duplicates, killed)


def _check_ledger(url: str, load: Load, sink: sink_mod.WebhookSink) -> dict[str, Any]:
    with psycopg.connect(url) as db:
        rows = db.execute(soak.ENRICHMENT_ROWS).fetchall()
        deliveries = db.execute(soak.DELIVERY_ROWS).fetchall()
    figures, dead = soak.check_books(rows, deliveries, load, sink)
    return figures | {"dead": len(dead)}

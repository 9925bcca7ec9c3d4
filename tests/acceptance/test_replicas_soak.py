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
import dataclasses
import math
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from bridge.sim import sink as sink_mod
from tests import pg
from tests.acceptance import test_serve as serve_mod
from tests.conftest import API_TOKEN, SECRET

# Not LANCE_BRIDGE_*: the autouse fixture clears those before every test.
SEED = int(os.environ.get("SOAK_SEED", "4242"))
FAULTS = {"fail_rate": 0.04, "throttle_rate": 0.03, "drop_rate": 0.03, "retry_after_s": 1}
REPLICAS = 3
POLL_TICK_S = 0.5
DELIVERY_BATCH = 50
QUERY_EXCESS_MAX = 1.1
EVENTS = (
    "enrichment.finished",
    "enrichment.failed",
    "enrichment.timeout",
    "enrichment.cancelled",
    "enrichment.expired",
    "enrichment.lost",
)

lance_url = serve_mod.lance_url
receiver = serve_mod.receiver

Key = tuple[str, str]  # (entityId, field); every task here is a person


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
events = {list(EVENTS)}
""",
        encoding="utf-8",
    )
    return path


@dataclasses.dataclass
class Load:
    """Sends triggers in batches, round robin over the replicas, until ``count`` were sent.

    A batch answered 202 is *accepted*. One whose connection broke mid-request (its replica
    killed under it) is *ambiguous*: it may or may not be stored, and is not sent again (a
    second trigger of an enrichment that already ended may rightly cost credits). A refused
    connection or a 503 stored nothing: the same batch goes to the next replica.
    """

    rng: random.Random
    urls: list[str]
    count: int
    pause_s: tuple[float, float]
    accepted: dict[Key, int] = dataclasses.field(default_factory=dict)
    ambiguous: set[Key] = dataclasses.field(default_factory=set)
    sent: int = 0
    requests: int = 0
    refused: int = 0
    turn: int = 0

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        # A fresh connection per request: a dead replica then means "refused", not a reset
        # pooled socket, so only requests really cut by a kill count as ambiguous.
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=timeout
        ) as session:
            while self.sent < self.count:
                batch = self._batch(min(self.rng.randint(5, 40), self.count - self.sent))
                await self._send(session, batch)
                self.sent += len(batch)
                await asyncio.sleep(self.rng.uniform(*self.pause_s))

    def _batch(self, size: int) -> list[dict[str, str]]:
        tasks: list[dict[str, str]] = []
        while len(tasks) < size:
            entity = str(uuid.uuid4())
            fields = self.rng.choice((("emails",), ("phones",), ("emails", "phones")))
            tasks += [{"entityId": entity, "field": field} for field in fields]
        return tasks

    async def _send(self, session: aiohttp.ClientSession, tasks: list[dict[str, str]]) -> None:
        keys = [(t["entityId"], t["field"]) for t in tasks]
        while True:
            url = self.urls[self.turn % len(self.urls)]
            self.turn += 1
            self.requests += 1
            try:
                async with session.post(f"{url}/v1/triggers", json={"tasks": tasks}) as resp:
                    if resp.status == 503:
                        self.refused += 1
                        await asyncio.sleep(0.02)
                        continue
                    assert resp.status == 202, await resp.text()
                    body = await resp.json()
            except aiohttp.ClientConnectorError:
                self.refused += 1  # that replica is down (killed, restarting): nothing sent
                await asyncio.sleep(0.02)
                continue
            except (aiohttp.ClientError, TimeoutError):
                self.ambiguous.update(keys)
                return
            rows = body["enrichments"]
            assert [(r["entityId"], r["field"]) for r in rows] == keys
            self.accepted.update({key: int(r["id"]) for key, r in zip(keys, rows, strict=True)})
            return


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
        [(rows,)] = db.execute(
            "SELECT count(*) FROM enrichments"
            " WHERE state IN ('queued', 'pending') OR needs_fetch = 1"
        ).fetchall()
        [(deliveries,)] = db.execute(
            "SELECT count(*) FROM deliveries WHERE state = 'pending'"
        ).fetchall()
    return int(rows) + int(deliveries)


async def _sim(lance_url: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{lance_url}{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


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
    faults = await _sim(lance_url, "POST", "/_sim/faults", FAULTS)
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
        await _reap(replicas, killer)
    stats = await _sim(lance_url, "GET", f"/_sim/stats?tick={POLL_TICK_S}")
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


async def _reap(replicas: list[serve_mod.Serve], killer: asyncio.Task[list[str]] | None) -> None:
    """After a failure, leave no replica behind."""
    if killer is not None and not killer.done():
        killer.cancel()
        await asyncio.gather(killer, return_exceptions=True)
    for replica in replicas:
        if replica.process is not None and replica.process.returncode is None:
            replica.process.kill()
            await replica.process.wait()


def _check_ledger(url: str, load: Load, sink: sink_mod.WebhookSink) -> dict[str, Any]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT id, entity_id, field, state, needs_fetch FROM enrichments"
        ).fetchall()
        deliveries = db.execute(
            "SELECT enrichment_id, connector, event_type, message_id, state, last_error"
            " FROM deliveries"
        ).fetchall()
    ledger_rows = {int(r[0]): (str(r[1]), str(r[2])) for r in rows}
    states = Counter(str(r[3]) for r in rows)
    ids_by_key = Counter(ledger_rows.values())

    # Zero lost: every 202 is in the ledger as answered, and everything in it reached the end.
    for key, row_id in load.accepted.items():
        assert ledger_rows.get(row_id) == key, f"accepted {key} as row {row_id}, not in the ledger"
    assert set(ids_by_key) <= load.accepted.keys() | load.ambiguous, "rows nobody sent"
    assert max(ids_by_key.values()) == 1, "one row per (entity, field): each was sent once"
    assert not {"queued", "pending", "lost"} & set(states), states
    assert not [r for r in rows if r[4]], "finished with data found but values never read"

    # Every terminal enrichment has exactly its one webhook delivery, and each delivery ended.
    expected = {(int(r[0]), f"enrichment.{r[3]}") for r in rows}
    routed = Counter((int(d[0]), str(d[2])) for d in deliveries if d[1] == "hook")
    assert set(routed) == expected, "terminal events = delivered + dead, per target"
    assert max(routed.values()) == 1
    assert len(deliveries) == len(expected)
    delivery_states = Counter(str(d[4]) for d in deliveries)
    assert set(delivery_states) <= {"delivered", "dead"}, delivery_states
    dead = [str(d[5] or "") for d in deliveries if d[4] == "dead"]
    assert all(reason.strip() for reason in dead), "a dead delivery without a reason"

    # The receiver saw only accepted work, and holds every delivery the ledger calls delivered.
    for payload in sink.received.values():
        data = payload["data"]
        key = (data["enrichment"]["entityId"], data["enrichment"]["field"])
        assert key in load.accepted.keys() | load.ambiguous, f"event for unsent task {key}"
        assert ledger_rows[data["ledgerId"]] == key
    delivered = {str(d[3]) for d in deliveries if d[4] == "delivered"}
    assert delivered <= sink.received.keys(), "delivered per the ledger, never received"
    return {
        "enrichments": len(rows),
        "ambiguousInLedger": len(load.ambiguous & set(ids_by_key)),
        "states": dict(states),
        "deliveries": dict(delivery_states),
        "dead": len(dead),
    }

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
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.sim import sink as sink_mod
from tests.acceptance import test_serve as serve_mod
from tests.conftest import API_TOKEN, SECRET

# Not LANCE_BRIDGE_*: the autouse fixture clears those before every test.
SEED = int(os.environ.get("SOAK_SEED", "1729"))
FAULTS = {"fail_rate": 0.05, "throttle_rate": 0.03, "drop_rate": 0.02, "retry_after_s": 1}
RETRY_SCHEDULE_S = (0.0, 0.2, 0.4)  # three attempts within about a second
SINK_OUTAGE_S = 1.5  # longer than the schedule: deliveries tried only then end dead
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
events = {list(EVENTS)}
""",
        encoding="utf-8",
    )
    return path


@dataclasses.dataclass
class Load:
    """Sends triggers in batches until ``count`` tasks were sent; remembers what became of each.

    A batch the bridge answered 202 is *accepted*. A batch whose connection broke mid-request
    (``serve`` killed under it) is *ambiguous*: it may or may not be in the ledger, and is not
    sent again, since a second trigger of an enrichment that already ended may rightly cost
    credits. A refused connection or a 503 sent nothing, so the same batch is sent again.
    """

    rng: random.Random
    url: str
    count: int
    accepted: dict[Key, int] = dataclasses.field(default_factory=dict)
    ambiguous: set[Key] = dataclasses.field(default_factory=set)
    sent: int = 0
    requests: int = 0
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    progress: asyncio.Condition = dataclasses.field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        # A fresh connection per request: a dead `serve` then means "refused", not a reset of a
        # pooled socket, so only requests really cut by a kill count as ambiguous.
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=timeout
        ) as session:
            while self.sent < self.count:
                batch = self._batch(min(self.rng.randint(5, 40), self.count - self.sent))
                await self._send(session, batch)
                await self._advance(len(batch))
                await asyncio.sleep(self.rng.uniform(0.005, 0.03))  # pacing of the load itself
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
        tasks: list[dict[str, str]] = []
        while len(tasks) < size:
            entity = str(uuid.uuid4())
            fields = self.rng.choice((("emails",), ("phones",), ("emails", "phones")))
            tasks += [{"entityId": entity, "field": field} for field in fields]
        if self.rng.random() < 0.3:  # the same task twice in one request joins one row
            tasks.append(dict(self.rng.choice(tasks)))
        return tasks

    async def _send(self, session: aiohttp.ClientSession, tasks: list[dict[str, str]]) -> None:
        keys = [(t["entityId"], t["field"]) for t in tasks]
        while True:
            self.requests += 1
            try:
                async with session.post(f"{self.url}/v1/triggers", json={"tasks": tasks}) as resp:
                    if resp.status == 503:
                        await asyncio.sleep(0.05)
                        continue
                    assert resp.status == 202, await resp.text()
                    body = await resp.json()
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.05)  # serve is down (killed, restarting): nothing sent
                continue
            except (aiohttp.ClientError, TimeoutError):
                self.ambiguous.update(keys)
                return
            rows = body["enrichments"]
            assert [(r["entityId"], r["field"]) for r in rows] == keys
            self.accepted.update({key: int(r["id"]) for key, r in zip(keys, rows, strict=True)})
            return


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
    faults = await _sim(lance_url, "POST", "/_sim/faults", FAULTS)
    assert faults["fail_rate"] == FAULTS["fail_rate"]
    load = Load(rng, serve.url, count)
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
        await _reap(serve, background)
    stats = await _sim(lance_url, "GET", "/_sim/stats")
    figures = _check_ledger(tmp_path, load, sink)
    print(  # the soak's figures, shown with `pytest -s`
        f"\nsoak seed={SEED} count={count}: {time.monotonic() - started:.1f} s,"
        f" kills at sent={[sent for _, sent in killed]}, {load.requests} trigger requests,"
        f" accepted={len(load.accepted)} ambiguous={len(load.ambiguous)}, {figures},"
        f" Lance statuses={stats['statuses']}, credits={stats['credits']}"
    )
    _check_charges(stats["credits"], figures["enrichments"])


async def _reap(serve: serve_mod.Serve, background: list[asyncio.Task[None]]) -> None:
    """After a failure, leave no ``serve`` and no load behind."""
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    if serve.process is not None and serve.process.returncode is None:
        serve.process.kill()
        await serve.process.wait()


def _check_charges(credits: dict[str, Any], enrichments: int) -> None:
    """No paid trigger repeated: Lance charged each (entity, field) once, and only those rows."""
    assert credits["maxChargesPerKey"] == 1, credits
    assert credits["paidCharges"] == enrichments, credits


def _check_ledger(tmp_path: Path, load: Load, sink: sink_mod.WebhookSink) -> dict[str, Any]:
    with _db(tmp_path) as db:
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
        "deadReasons": dict(Counter(_reason(reason) for reason in dead)),
        "sinkAttempts": sum(sink.attempts.values()),
    }

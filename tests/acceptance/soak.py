"""What the soaks share: the load they send, the simulator's control API, the ledger's books.

``test_soak`` runs one ``serve`` on a SQLite file, ``test_replicas_soak`` three on one
PostgreSQL schema; both send the same kind of load and check the same books afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

import aiohttp

from bridge.sim import sink as sink_mod
from tests.acceptance import test_serve as serve_mod
from tests.conftest import API_TOKEN

EVENTS = (
    "enrichment.finished",
    "enrichment.failed",
    "enrichment.timeout",
    "enrichment.cancelled",
    "enrichment.expired",
    "enrichment.lost",
)

Key = tuple[str, str]  # (entityId, field); every task here is a person

ENRICHMENT_ROWS = "SELECT id, entity_id, field, state, needs_fetch FROM enrichments"
DELIVERY_ROWS = (
    "SELECT enrichment_id, connector, event_type, message_id, state, last_error FROM deliveries"
)


class Connection(Protocol):
    """What the checks need of a DB-API connection (``sqlite3`` or ``psycopg``)."""

    def execute(self, query: str) -> Any:
        """Run ``query``; the result has ``fetchall()``."""


@dataclasses.dataclass
class Load:
    """Sends triggers in batches, round robin over ``urls``, until ``count`` tasks were sent.

    A batch answered 202 is *accepted*. One whose connection broke mid-request (its ``serve``
    killed under it) is *ambiguous*: it may or may not be in the ledger, and is not sent again
    (a second trigger of an enrichment that already ended may rightly cost credits). A refused
    connection or a 503 stored nothing: the same batch goes to the next URL (the same one, if
    there is one).
    """

    rng: random.Random
    urls: list[str]
    count: int
    pause_s: tuple[float, float] = (0.005, 0.03)  # pacing of the load itself
    accepted: dict[Key, int] = dataclasses.field(default_factory=dict)
    ambiguous: set[Key] = dataclasses.field(default_factory=set)
    sent: int = 0
    requests: int = 0
    refused: int = 0
    turn: int = 0
    retry_pause_s: ClassVar[float] = 0.05

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        # A fresh connection per request: a dead `serve` then means "refused", not a reset
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
                await asyncio.sleep(self.rng.uniform(*self.pause_s))

    async def _advance(self, tasks: int) -> None:
        self.sent += tasks

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
                        await asyncio.sleep(self.retry_pause_s)
                        continue
                    assert resp.status == 202, await resp.text()
                    body = await resp.json()
            except aiohttp.ClientConnectorError:
                self.refused += 1  # that `serve` is down (killed, restarting): nothing sent
                await asyncio.sleep(self.retry_pause_s)
                continue
            except (aiohttp.ClientError, TimeoutError):
                self.ambiguous.update(keys)
                return
            rows = body["enrichments"]
            assert [(r["entityId"], r["field"]) for r in rows] == keys
            self.accepted.update({key: int(r["id"]) for key, r in zip(keys, rows, strict=True)})
            return


async def sim(lance_url: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A call to the simulator's control API (``/_sim/...``), which must answer 200."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{lance_url}{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


def unsettled(db: Connection) -> int:
    """Rows the pipeline still has to work on: open enrichments and pending deliveries."""
    [(rows,)] = db.execute(
        "SELECT count(*) FROM enrichments WHERE state IN ('queued', 'pending') OR needs_fetch = 1"
    ).fetchall()
    [(deliveries,)] = db.execute(
        "SELECT count(*) FROM deliveries WHERE state = 'pending'"
    ).fetchall()
    return int(rows) + int(deliveries)


def check_books(
    rows: Sequence[Sequence[Any]],
    deliveries: Sequence[Sequence[Any]],
    load: Load,
    sink: sink_mod.WebhookSink,
) -> tuple[dict[str, Any], list[str]]:
    """Assert nothing was lost (``rows`` and ``deliveries`` as :data:`ENRICHMENT_ROWS` and
    :data:`DELIVERY_ROWS` select them); the figures, and the dead deliveries' reasons."""
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
    figures = {
        "enrichments": len(rows),
        "ambiguousInLedger": len(load.ambiguous & set(ids_by_key)),
        "states": dict(states),
        "deliveries": dict(delivery_states),
    }
    return figures, dead


async def reap(serves: Iterable[serve_mod.Serve], background: Iterable[asyncio.Task[Any]]) -> None:
    """After a failure, leave no ``serve`` and no background task behind."""
    tasks = list(background)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for serve in serves:
        if serve.process is not None and serve.process.returncode is None:
            serve.process.kill()
            await serve.process.wait()

"""Several replicas on one real PostgreSQL ledger: heartbeats renew leases, a dead replica's
claims come back, the lookup job claims its events, status, /metrics and /readyz show who is
there, and the jobs of several replicas keep Lance's economy (one tick's batch queries in total,
a lost trigger answer settled by a query, not a second trigger)."""

from __future__ import annotations

import asyncio
import os
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
from pydantic import SecretStr

from bridge import lance, ledger, metrics, model, poller, triggerer
from bridge import settings as settings_mod
from bridge.ledger import postgres, postgres_db
from bridge.sim import lance as sim
from tests import pg
from tests.acceptance.test_serve import _cli
from tests.conftest import Clock

NOW = 1_800_000_000.0


def _config(url: str, replica_id: str = "") -> settings_mod.LedgerSettings:
    return settings_mod.LedgerSettings(url=SecretStr(url), replica_id=replica_id)


@pytest.fixture
async def migrated() -> AsyncIterator[str]:
    async with pg.schema() as url:
        await postgres_db.migrate(_config(url))
        yield url


@pytest.fixture
async def pair(migrated: str) -> AsyncIterator[tuple[ledger.Ledger, ledger.Ledger]]:
    """Two replicas, ``alpha`` and ``beta``, sharing one migrated schema."""
    first = await ledger.open(_config(migrated, "alpha"))
    second = await ledger.open(_config(migrated, "beta"))
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _tracked(n: int) -> list[model.Task]:
    return [model.Task("person", str(uuid.uuid4()), "emails", "track") for _ in range(n)]


async def test_a_heartbeat_renews_the_leases_its_replica_holds(
    pair: tuple[ledger.Ledger, ledger.Ledger],
) -> None:
    first, second = pair
    await first.accept(_tracked(3), NOW)
    mine = await first.due_for_poll(NOW + 1, limit=10)
    assert len(mine) == 3

    # A round longer than one lease: alpha's heartbeats keep its rows while it lives.
    await first.heartbeat(NOW + 40)
    assert await second.due_for_poll(NOW + 1 + postgres.LEASE_S + 1, limit=10) == []
    await first.heartbeat(NOW + 90)
    assert await second.due_for_poll(NOW + 140, limit=10) == []

    # alpha's write still lands: the lease it renewed is its own.
    await first.apply([ledger.Change(r.id, "pending", next_poll_at=NOW + 141) for r in mine], NOW)
    assert len(await second.due_for_poll(NOW + 141, limit=10)) == 3


async def test_a_dead_replicas_claims_come_back_one_lease_after_its_last_heartbeat(
    pair: tuple[ledger.Ledger, ledger.Ledger],
) -> None:
    first, second = pair
    await first.accept(_tracked(2), NOW)
    mine = await first.due_for_poll(NOW + 1, limit=10)
    await first.heartbeat(NOW + 30)  # alpha's last sign of life; then it is killed

    assert await second.due_for_poll(NOW + 30 + postgres.LEASE_S - 1, limit=10) == []
    taken = await second.due_for_poll(NOW + 30 + postgres.LEASE_S, limit=10)
    assert {r.id for r in taken} == {r.id for r in mine}
    # A heartbeat never takes back what another replica claimed since.
    await first.heartbeat(NOW + 95)
    assert {r.id for r in await second.due_for_poll(NOW + 96, limit=10)} == {r.id for r in mine}


async def test_the_lookup_job_claims_its_events_exclusively(
    pair: tuple[ledger.Ledger, ledger.Ledger],
) -> None:
    first, second = pair
    events = [model.Inbound(f"evt-{i}", lookup=("contact", str(i))) for i in range(5)]
    received = await first.receive("hubspot", events, NOW)
    assert received.lookups == 5

    mine = await first.lookups("hubspot", 3)
    theirs = await second.lookups("hubspot", 100)

    assert (len(mine), len(theirs)) == (3, 2)
    assert {key for key, _, _ in mine}.isdisjoint({key for key, _, _ in theirs})
    assert mine == [("evt-0", "contact", "0"), ("evt-1", "contact", "1"), ("evt-2", "contact", "2")]
    # The holder reads its own again (a failed round retries); nobody else does.
    assert await first.lookups("hubspot", 100) == mine
    assert await second.lookups("hubspot", 100) == theirs
    # Settled events leave the claim behind them.
    task = model.Task("person", str(uuid.uuid4()), "emails")
    await first.resolve("hubspot", [model.Inbound("evt-0", tasks=(task,))], NOW + 1)
    assert [key for key, _, _ in await first.lookups("hubspot", 100)] == ["evt-1", "evt-2"]


async def test_status_and_metrics_show_each_replica_with_what_it_holds(
    pair: tuple[ledger.Ledger, ledger.Ledger], migrated: str, tmp_path: Path
) -> None:
    first, second = pair
    await first.accept(_tracked(5), NOW)
    await first.due_for_poll(NOW + 1, limit=3)
    await second.due_for_poll(NOW + 1, limit=100)
    await first.heartbeat(NOW + 10)
    await second.heartbeat(NOW + 12)

    replicas = await first.replicas()
    assert [(r.id, r.last_heartbeat, r.held) for r in replicas] == [
        ("beta", NOW + 12, 2),
        ("alpha", NOW + 10, 3),
    ]

    text = (await metrics.Metrics().render(first, metrics.Live(), NOW + 20)).decode()
    assert "lance_bridge_replicas 2.0" in text
    assert 'lance_bridge_replica_claims{replica="alpha"} 3.0' in text
    assert 'lance_bridge_replica_heartbeat_age_seconds{replica="beta"} 8.0' in text

    config = tmp_path / "lance-bridge.toml"
    config.write_text("[ledger]\n")
    env = {"LANCE_BRIDGE_LEDGER__URL": migrated, "PATH": "/usr/bin:/bin", "COLUMNS": "120"}
    process = await asyncio.create_subprocess_exec(
        *_cli(), "status", "-c", str(config), env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    lines = {
        line.split()[1]: line
        for line in out.decode().splitlines()
        if "│ alpha" in line or "│ beta" in line
    }
    assert set(lines) == {"alpha", "beta"}
    assert lines["alpha"].split()[-2] == "3"
    assert lines["beta"].split()[-2] == "2"


async def test_a_replica_without_a_configured_id_names_itself_host_pid_random(
    migrated: str,
) -> None:
    store = await ledger.open(_config(migrated))
    other = await ledger.open(_config(migrated))
    try:
        assert store.replica != other.replica
        assert store.replica.split("-")[-2] == str(os.getpid())
        await store.heartbeat(NOW)
        assert [r.id for r in await other.replicas()] == [store.replica]
    finally:
        await store.close()
        await other.close()


@pytest.fixture
async def lance_client(
    simulator: tuple[sim.LanceSimulator, str],
) -> AsyncIterator[lance.LanceClient]:
    lance_sim, base_url = simulator
    async with aiohttp.ClientSession() as session:
        yield lance.LanceClient(session, base_url, SecretStr(lance_sim.config.token))


def _poller(store: ledger.Ledger, client: lance.LanceClient, clock: Clock) -> poller.Poller:
    config = settings_mod.PollSettings(interval_seconds=2.0)
    return poller.Poller(store, client, config, clock=clock, tick_s=2.0)


QUERY_KEY = f"POST {sim.QUERY}"


async def test_replicas_on_one_tick_grid_send_one_ticks_batch_queries_in_total(
    pair: tuple[ledger.Ledger, ledger.Ledger],
    simulator: tuple[sim.LanceSimulator, str],
    lance_client: lance.LanceClient,
    clock: Clock,
) -> None:
    first, second = pair
    lance_sim, _ = simulator
    alpha, beta = _poller(first, lance_client, clock), _poller(second, lance_client, clock)
    assert NOW % 2.0 == 0  # a grid point
    await first.accept(_tracked(150), NOW - 1)  # due before the grid point NOW
    await first.accept(_tracked(100), NOW + 0.5)  # due after it

    clock.now = NOW + 0.6
    report = await alpha.run_once()
    assert (report.due, report.requests) == (150, 1)
    # Later in the same tick beta finds nothing: what was due by the grid point is alpha's,
    # and the rows due since wait for the next one instead of a partial batch of their own.
    clock.now = NOW + 1.9
    assert (await beta.run_once()).due == 0
    clock.now = NOW + 2.1
    report = await beta.run_once()
    assert (report.due, report.requests) == (100, 1)
    assert lance_sim.requests[QUERY_KEY] == 2  # Σ ⌈due/200⌉ over the two ticks


@pytest.mark.parametrize("sim_config", [{"completion_s": (30.0, 30.0)}], indirect=True)
async def test_a_failed_poll_request_gives_its_rows_to_the_next_replica_at_once(
    pair: tuple[ledger.Ledger, ledger.Ledger],
    simulator: tuple[sim.LanceSimulator, str],
    lance_client: lance.LanceClient,
    clock: Clock,
) -> None:
    first, second = pair
    lance_sim, _ = simulator
    await first.accept(_tracked(3), NOW - 1)
    lance_sim.set_faults(fail_rate=1.0)
    clock.now = NOW + 0.1
    report = await _poller(first, lance_client, clock).run_once()
    assert (report.due, report.failed_requests) == (3, 1)

    # Within alpha's lease, yet beta's next tick takes them, with that tick's other rows; not
    # a tick already run (it would send them in a request of their own).
    lance_sim.set_faults(fail_rate=0.0)
    beta = _poller(second, lance_client, clock)
    clock.now = NOW + 1.9
    assert (await beta.run_once()).due == 0
    await first.accept(_tracked(2), NOW + 1.5)
    clock.now = NOW + 2.1
    report = await beta.run_once()
    assert (report.due, report.requests, report.failed_requests) == (5, 1, 0)


async def test_a_trigger_whose_answer_was_lost_is_settled_by_a_query_on_another_replica(
    pair: tuple[ledger.Ledger, ledger.Ledger],
    simulator: tuple[sim.LanceSimulator, str],
    lance_client: lance.LanceClient,
    clock: Clock,
    migrated: str,
) -> None:
    first, second = pair
    lance_sim, _ = simulator
    tasks = [model.Task("person", str(uuid.uuid4()), "emails") for _ in range(3)]
    accepted = await first.accept(tasks, NOW)
    clock.now = NOW + 1

    # alpha claims the rows, marks them sent, and its trigger of the first two reaches Lance;
    # then alpha dies before the answer is written (the third was marked, never sent).
    [claimed] = (await first.queued(100)).values()
    assert [row.id for row in claimed] == [a.id for a in accepted]
    await first.mark_sent([row.id for row in claimed], clock())
    await lance_client.trigger_batch("emails", [t.entity_id for t in tasks[:2]])
    assert lance_sim.charges.total() == 2
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as admin:
        # alpha's lease (on the server's clock: the trigger job's verbs take none) runs out.
        await admin.execute("UPDATE enrichments SET claim_expires_at = 0")
    clock.now = NOW + 5

    settings = settings_mod.TriggerSettings()
    job = triggerer.Triggerer(
        second, lance_client, settings, settings_mod.PollSettings(), clock=clock
    )
    report = await job.run_once()

    # beta asked Lance first: the two it has are taken over, only the third is triggered.
    assert lance_sim.requests[QUERY_KEY] == 1
    assert (report.requests, report.triggered) == (1, 1)
    assert lance_sim.triggered == {"ids": 3, "reused": 0}
    assert lance_sim.charges.total() == 3
    assert max(lance_sim.charges.values()) == 1
    found = await second.enrichments([a.id for a in accepted])
    assert {row["state"] for row in found.values()} <= {"pending", "finished"}
    assert await second.queued(100) == {}


async def test_a_replica_restarted_under_its_id_gives_back_what_its_dead_process_claimed(
    pair: tuple[ledger.Ledger, ledger.Ledger], migrated: str
) -> None:
    first, second = pair
    await first.accept(_tracked(2), NOW)
    assert len(await first.due_for_poll(NOW + 1, limit=10)) == 2
    await first.close()  # alpha's process dies holding its claims

    # A command looking in under alpha's id (`status`, `replay`) leaves them alone ...
    looking = await ledger.open(_config(migrated, "alpha"), exclusive=False)
    await looking.close()
    assert await second.due_for_poll(NOW + 2, limit=10) == []
    # ... alpha's next `serve` ends them: the rows are anyone's at once, not in a lease.
    restarted = await ledger.open(_config(migrated, "alpha"))
    try:
        assert len(await second.due_for_poll(NOW + 2, limit=10)) == 2
    finally:
        await restarted.close()


async def test_a_tick_grid_point_is_claimed_once_unless_its_limit_cut_it(
    pair: tuple[ledger.Ledger, ledger.Ledger],
) -> None:
    first, second = pair
    await first.accept(_tracked(3), NOW - 1)

    # alpha's claim of the point NOW is cut by its limit: beta takes the rest of that point.
    assert len(await first.due_for_poll(NOW, limit=2, tick=True)) == 2
    assert len(await second.due_for_poll(NOW, limit=10, tick=True)) == 1
    # A row written due by NOW only now (a slow commit) waits for the next point, as it
    # would behind one replica's tick, instead of a request of its own in this one.
    [late] = await first.accept(_tracked(1), NOW - 0.5)
    assert await second.due_for_poll(NOW, limit=10, tick=True) == []
    assert await first.due_for_poll(NOW - 2, limit=10, tick=True) == []  # an older point
    rows = await second.due_for_poll(NOW + 2, limit=10, tick=True)  # its own unwritten one too
    assert late.id in {row.id for row in rows}
    # Without `tick` (a caller not on the grid) nothing is recorded or refused.
    [fresh] = await first.accept(_tracked(1), NOW + 2)
    assert fresh.id in {row.id for row in await first.due_for_poll(NOW + 2, limit=10)}

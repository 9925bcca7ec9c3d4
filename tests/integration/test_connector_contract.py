"""The connector contract, run against every registered connector and its loopback remote.

One suite, parametrized over :func:`bridge.registry.connector_types`: each connector is built
the way the app builds it and sends events to the bundled remote (the webhook sink, the HubSpot
and Salesforce sandboxes, with their fault injection), or to a socket that never answers. Each
remote differs only in the data of its :class:`Remote` harness: how to make a record, how to
inject a failure, and how it means a status (table-driven, as apprise's ``tests/helpers``).
A new connector type fails :func:`test_every_registered_connector_has_a_remote_here` until it
gets a harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from bridge import classify, connector, model, registry, runtime
from bridge.sim import _http
from bridge.sim import hubspot as hs
from bridge.sim import lance as sim
from bridge.sim import salesforce as sf
from bridge.sim import sink as sink_mod
from tests.conftest import (
    SECRET,
    BridgeFactory,
    Clock,
    auth,
    drain,
    jobs_of,
    make_settings,
    tasks_for,
)
from tests.integration import test_hubspot as hs_test
from tests.integration import test_salesforce as sf_test

TIMEOUT_S = 0.3
Client = TestClient[Any, Any]


@dataclasses.dataclass(frozen=True)
class Expect:
    """What a remote's answer must become: the outcome kind, its delay, words of the remote."""

    kind: str
    retry_after_s: float | None = None
    says: str = ""


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected failure: its status, headers, JSON body, and how many requests it answers."""

    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: Any = None
    count: int = 1


class Remote(Protocol):
    """The far side of one connector type, as the contract suite drives it."""

    kind: str
    max_batch: int  # the most records its API takes in one write
    write_endpoint: str  # the metrics label of a write
    faults: dict[str, tuple[Fault, Expect] | None]  # case -> injected fault, expected outcome

    def table(self, url: str | None = None) -> dict[str, Any]:
        """The ``[[connectors]]`` table, pointed at the remote (or at ``url``)."""

    def events(self, n: int) -> list[model.Delivery]:
        """``n`` events the connector can deliver, each about its own record."""

    def holds(self, event: model.Delivery) -> bool:
        """Whether the remote received (or wrote) what ``event`` carries."""

    def inject(self, fault: Fault) -> None:
        """Answer the next write(s) with ``fault``."""

    def unusable(self) -> model.Delivery | None:
        """An event the connector must refuse without a request, or ``None`` if none is."""


def finished_event(n: int, target: dict[str, Any] | None) -> model.Delivery:
    body = {
        "type": "enrichment.finished",
        "data": {
            "state": "finished",
            "values": {"emails": [f"p{n}@example.com"], "phones": [f"+1 555 01{n:05d}"]},
        },
    }
    record = target or {}
    return model.Delivery(
        n,
        n,
        record.get("connector", "hook"),
        record.get("objectType", ""),
        record.get("objectId", ""),
        "enrichment.finished",
        f"msg_contract_{n}",
        orjson.dumps(body),
    )


def phone_of(event: model.Delivery) -> str:
    return str(event.payload()["data"]["values"]["phones"][0])


class WebhookRemote:
    kind = "webhook"
    max_batch = 1
    write_endpoint = "POST"

    def __init__(self, receiver: sink_mod.WebhookSink, url: str) -> None:
        self.receiver, self.url = receiver, url
        said = Expect("dead", None, "injected failure")
        self.faults: dict[str, tuple[Fault, Expect] | None] = {
            "401": (Fault(401), said),
            "403": (Fault(403), said),
            "404": (Fault(404), said),
            "429 Retry-After": (
                Fault(429, {"Retry-After": "90"}),
                Expect("retry", 90.0, "injected failure"),
            ),
            "5xx": (Fault(503), Expect("retry", None, "injected failure")),
            "5xx Retry-After": (
                Fault(503, {"Retry-After": "30"}),
                Expect("retry", 30.0, "injected failure"),
            ),
            # Standard Webhooks: the status is the acknowledgement, a body is never read.
            "malformed 2xx body": None,
        }

    def table(self, url: str | None = None) -> dict[str, Any]:
        return {
            "name": "hook",
            "type": "webhook",
            "url": f"{url or self.url}/hook",
            "secret": SECRET,
        }

    def events(self, n: int) -> list[model.Delivery]:
        return [finished_event(i, None) for i in range(n)]

    def holds(self, event: model.Delivery) -> bool:
        return self.receiver.received.get(event.message_id) == event.payload()

    def inject(self, fault: Fault) -> None:
        retry_after = fault.headers.get("Retry-After")
        self.receiver.fail_next(
            fault.count, fault.status, retry_after=None if retry_after is None else int(retry_after)
        )

    def unusable(self) -> model.Delivery | None:
        return None  # every event is a POST


class HubSpotRemote:
    kind = "hubspot"
    max_batch = 100
    write_endpoint = "POST /crm/v3/objects/contacts/batch/update"

    def __init__(self, sandbox: hs.HubSpotSandbox, url: str) -> None:
        self.sandbox, self.url = sandbox, url
        said = "ERROR: Injected failure"
        self.faults: dict[str, tuple[Fault, Expect] | None] = {
            "401": (Fault(401), Expect("retry", 60.0, "HubSpot rejected the token")),
            "403": (Fault(403), Expect("dead", None, said)),
            "404": (Fault(404), Expect("dead", None, said)),
            "429 Retry-After": (
                Fault(429, {"Retry-After": "90"}),
                Expect("retry", 90.0, "TEN_SECONDLY_ROLLING"),
            ),
            "5xx": (Fault(503), Expect("retry", None, "SERVICE_UNAVAILABLE")),
            "5xx Retry-After": (
                Fault(503, {"Retry-After": "30"}),
                Expect("retry", 30.0, "SERVICE_UNAVAILABLE"),
            ),
            "malformed 2xx body": (
                Fault(200, body=["not", "a", "batch", "answer"]),
                Expect("retry", None, "unexpected shape"),
            ),
        }

    def table(self, url: str | None = None) -> dict[str, Any]:
        return {
            "name": "hubspot",
            "type": "hubspot",
            "base_url": url or self.url,
            "access_token": "pat-sandbox",
            "client_secret": "hubspot-app-client-secret",
            "rate_limit_requests": 0,
        }

    def events(self, n: int) -> list[model.Delivery]:
        ids = [self.sandbox.add_record("contacts", {}) for _ in range(n)]
        return [
            finished_event(i, {"connector": "hubspot", "objectType": "contacts", "objectId": r})
            for i, r in enumerate(ids)
        ]

    def holds(self, event: model.Delivery) -> bool:
        target = event.target or {}
        return self.sandbox.record("contacts", target["objectId"]).get("phone") == phone_of(event)

    def inject(self, fault: Fault) -> None:
        self.sandbox.fail_next(
            fault.count, fault.status, body=fault.body, headers=fault.headers, route="batch/update"
        )

    def unusable(self) -> model.Delivery | None:
        return finished_event(999, {"objectType": "contacts", "objectId": "not-a-number"})


class SalesforceRemote:
    kind = "salesforce"
    max_batch = 200
    write_endpoint = "PATCH /composite/sobjects"
    route = "PATCH /services/data/v{version}/composite/sobjects"

    def __init__(self, sandbox: sf.SalesforceSandbox, url: str) -> None:
        self.sandbox, self.url = sandbox, url
        denied = [{"errorCode": "INSUFFICIENT_ACCESS", "message": "insufficient access rights"}]
        self.faults: dict[str, tuple[Fault, Expect] | None] = {
            # One 401 logs in again; a second one, with a fresh session, is the answer.
            "401": (Fault(401, count=2), Expect("retry", 60.0, "refused a fresh session too")),
            "403": (Fault(403, body=denied), Expect("dead", None, "insufficient access rights")),
            "404": (Fault(404), Expect("dead", None, "NOT_FOUND")),
            # Salesforce sends no Retry-After: a 429 waits the throttling minimum.
            "429 Retry-After": (Fault(429), Expect("retry", 60.0, "HTTP 429")),
            "5xx": (Fault(503), Expect("retry", None, "SERVER_UNAVAILABLE")),
            "5xx Retry-After": None,  # the sandbox, like Salesforce, sends no Retry-After
            "malformed 2xx body": (
                Fault(200, body={"not": "a list of SaveResults"}),
                Expect("retry", None, "unexpected shape"),
            ),
        }

    def table(self, url: str | None = None) -> dict[str, Any]:
        return {
            "name": "salesforce",
            "type": "salesforce",
            "login_url": url or self.url,
            "client_id": "sandbox-consumer-key",
            "client_secret": "sandbox-consumer-secret",
            "organization_id": self.sandbox.org_id,
        }

    def events(self, n: int) -> list[model.Delivery]:
        ids = [self.sandbox.add_record("Contact", {"LastName": f"P{i}"}) for i in range(n)]
        return [
            finished_event(i, {"connector": "salesforce", "objectType": "Contact", "objectId": r})
            for i, r in enumerate(ids)
        ]

    def holds(self, event: model.Delivery) -> bool:
        target = event.target or {}
        return self.sandbox.record("Contact", target["objectId"]).get("Phone") == phone_of(event)

    def inject(self, fault: Fault) -> None:
        self.sandbox.fail_next(fault.count, fault.status, body=fault.body, route=self.route)

    def unusable(self) -> model.Delivery | None:
        return finished_event(999, {"objectType": "Opportunity", "objectId": "006000000000001"})


async def _webhook(clock: Clock) -> AsyncIterator[WebhookRemote]:
    receiver = sink_mod.WebhookSink(SECRET)
    runner = await sink_mod.serve(receiver)
    yield WebhookRemote(receiver, _http.base_url(runner))
    await runner.cleanup()


async def _hubspot(clock: Clock) -> AsyncIterator[HubSpotRemote]:
    sandbox = hs.HubSpotSandbox(clock=clock, rate_limit=0)
    runner = await hs.serve(sandbox)
    yield HubSpotRemote(sandbox, hs.base_url(runner))
    await runner.cleanup()


async def _salesforce(clock: Clock) -> AsyncIterator[SalesforceRemote]:
    sandbox = sf.SalesforceSandbox(clock=clock)
    runner = await sf.serve(sandbox)
    yield SalesforceRemote(sandbox, sf.base_url(runner))
    await runner.cleanup()


REMOTES: dict[str, Callable[[Clock], AsyncIterator[Any]]] = {
    "webhook": _webhook,
    "hubspot": _hubspot,
    "salesforce": _salesforce,
}
CASES = ["401", "403", "404", "429 Retry-After", "5xx", "5xx Retry-After", "malformed 2xx body"]


@pytest.fixture(params=sorted(registry.connector_types()))
async def remote(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Remote]:
    if request.param not in REMOTES:
        pytest.fail(f"connector type {request.param!r} has no remote in the contract suite")
    async for made in REMOTES[request.param](clock):
        yield made


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@contextlib.asynccontextmanager
async def built(
    remote: Remote,
    session: aiohttp.ClientSession,
    clock: Clock,
    url: str | None = None,
    **extra: Any,
) -> AsyncIterator[connector.Connector]:
    """The connector, made from its table as the app makes it, opened, then closed."""
    [config] = registry.parse_configs([remote.table(url) | extra])
    [made] = registry.build([config], session, clock=clock)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def test_every_registered_connector_has_a_remote_here() -> None:
    assert sorted(registry.connector_types()) == sorted(REMOTES)


async def test_batches_are_as_large_as_the_api_allows_and_each_event_gets_its_outcome(
    remote: Remote, session: aiohttp.ClientSession, clock: Clock
) -> None:
    events = remote.events(min(2 * remote.max_batch + 1, 401))

    async with built(remote, session, clock) as item:
        outcomes = await item.send(events)

    assert item.max_batch == remote.max_batch
    assert [o.kind for o in outcomes] == ["delivered"] * len(events)
    assert all(remote.holds(event) for event in events)
    writes = sum(
        n for (endpoint, _), n in item.remote_requests.items() if endpoint == remote.write_endpoint
    )
    assert writes == math.ceil(len(events) / remote.max_batch)


async def test_outcomes_come_back_in_the_order_of_the_events_once_each(
    remote: Remote, session: aiohttp.ClientSession, clock: Clock
) -> None:
    good = remote.events(4)
    bad = remote.unusable()
    events = [*good[:2], bad, *good[2:]] if bad is not None else good
    told: list[tuple[int, classify.Outcome]] = []

    async with built(remote, session, clock) as item:
        outcomes = await item.send(
            events,
            on_outcomes=lambda indexes, results: told.extend(zip(indexes, results, strict=True)),
        )

    expected = ["delivered"] * len(events)
    if bad is not None:
        expected[2] = "dead"
    assert [o.kind for o in outcomes] == expected
    assert sorted(i for i, _ in told) == list(range(len(events)))  # each told exactly once
    assert [o for _, o in sorted(told, key=lambda pair: pair[0])] == outcomes


@pytest.mark.parametrize("case", CASES)
async def test_a_refused_write_gets_the_outcome_its_status_means(
    remote: Remote, session: aiohttp.ClientSession, clock: Clock, case: str
) -> None:
    if remote.faults[case] is None:
        pytest.skip(f"{remote.kind}: not an answer this remote gives")
    fault, expect = remote.faults[case]  # type: ignore[misc]
    [event] = remote.events(1)
    remote.inject(fault)

    async with built(remote, session, clock) as item:
        [outcome] = await item.send([event])

    assert (outcome.kind, outcome.retry_after_s) == (expect.kind, expect.retry_after_s)
    assert outcome.status == fault.status
    assert outcome.error is not None
    assert expect.says in outcome.error
    assert len(outcome.error) <= classify.ERROR_EXCERPT_CHARS + 100  # an excerpt, not a dump
    assert not remote.holds(event)
    counted = {
        status for (endpoint, status) in item.remote_requests if endpoint == remote.write_endpoint
    }
    assert str(fault.status) in counted


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Reads the request and never answers: the remote hangs.
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()


async def test_a_remote_that_never_answers_is_a_timeout_retried_no_sooner_than_a_minute(
    remote: Remote, session: aiohttp.ClientSession, clock: Clock
) -> None:
    server = await asyncio.start_server(_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events = remote.events(2)
    try:
        async with built(
            remote, session, clock, f"http://127.0.0.1:{port}", timeout_seconds=TIMEOUT_S
        ) as item:
            outcomes = await item.send(events)
    finally:
        server.close()
        await server.wait_closed()

    for outcome in outcomes:
        assert (outcome.kind, outcome.status) == ("retry", None)
        assert outcome.retry_after_s == classify.THROTTLE_MIN_DELAY_S
        assert outcome.error is not None
        assert outcome.error.startswith("timeout")
    assert any(status == "none" for (_, status) in item.remote_requests)


async def test_a_refused_connection_is_retried(
    remote: Remote, session: aiohttp.ClientSession, clock: Clock
) -> None:
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events = remote.events(2)

    async with built(remote, session, clock, f"http://127.0.0.1:{port}") as item:
        outcomes = await item.send(events)

    for outcome in outcomes:
        assert (outcome.kind, outcome.status, outcome.retry_after_s) == ("retry", None, None)
        assert outcome.error is not None
        assert "Connect" in outcome.error


# -- through the whole bridge: a transient answer waits as long as the remote asks ------------


@dataclasses.dataclass
class Run:
    """A bridge with deliveries pending for one connector, and how to fail its next write."""

    client: Client
    inject: Callable[[int, dict[str, str]], None]
    pending: int  # deliveries waiting for the dispatcher
    step_s: float  # how far drain moves the clock per round
    landed: Callable[[], bool]


async def _run_webhook(
    make_bridge: BridgeFactory, lance_url: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[Run]:
    receiver = sink_mod.WebhookSink(SECRET)
    runner = await sink_mod.serve(receiver)
    client = await make_bridge(make_settings(tmp_path, lance_url, _http.base_url(runner)))
    await client.post("/v1/triggers", json={"tasks": tasks_for(2, "emails")}, headers=auth())
    await sf_test.deliveries_pending(client, clock)

    def inject(status: int, headers: dict[str, str]) -> None:
        retry_after = headers.get("Retry-After")
        receiver.fail_next(2, status, retry_after=None if retry_after is None else int(retry_after))

    yield Run(client, inject, 2, 10, lambda: len(receiver.received) == 2)
    await runner.cleanup()


async def _run_hubspot(
    make_bridge: BridgeFactory, lance_url: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[Run]:
    sandbox = hs.HubSpotSandbox(clock=clock, client_secret=hs_test.CLIENT_SECRET, rate_limit=0)
    runner = await hs.serve(sandbox)
    settings = hs_test.hubspot_settings(
        tmp_path, lance_url, hs.base_url(runner), rate_limit_window_seconds=0.01
    )
    client = await make_bridge(settings)
    ids = hs_test.contacts_with_lance_ids(sandbox, 3)
    await hs_test.post_events(client, hs_test.changes(sandbox, ids, clock), clock)
    await sf_test.deliveries_pending(client, clock)

    def inject(status: int, headers: dict[str, str]) -> None:
        sandbox.fail_next(1, status, headers=headers, route="batch/update")

    def landed() -> bool:
        return all(sandbox.record("contacts", i).get("phone") for i in ids)

    yield Run(client, inject, 6, 60, landed)
    await runner.cleanup()


async def _run_salesforce(
    make_bridge: BridgeFactory, lance_url: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[Run]:
    sandbox = sf.SalesforceSandbox(clock=clock, org_id=sf_test.ORG_ID, daily_limit=100_000)
    runner = await sf.serve(sandbox)
    table = sf_test.sf_table(sf.base_url(runner))
    client = await sf_test.start(make_bridge, tmp_path, lance_url, table)
    ids = sf_test.people(sandbox, 2)
    await sf_test.send_all(client, sandbox, [("Contact", i) for i in ids])
    await sf_test.deliveries_pending(client, clock)

    def inject(status: int, headers: dict[str, str]) -> None:
        assert not headers, "the Salesforce sandbox, like Salesforce, sends no Retry-After"
        sandbox.fail_next(1, status, route=sf_test.UPDATE)

    def landed() -> bool:
        for contact in ids:
            sf_test.assert_enriched(sandbox, "Contact", contact)
        return True

    yield Run(client, inject, 4, 10, landed)
    await runner.cleanup()


RUNS: dict[str, Callable[[BridgeFactory, str, Path, Clock], AsyncIterator[Run]]] = {
    "webhook": _run_webhook,
    "hubspot": _run_hubspot,
    "salesforce": _run_salesforce,
}


@pytest.mark.parametrize(
    ("kind", "status", "headers", "at_least_s"),
    [
        ("webhook", 503, {"Retry-After": "30"}, 30),
        ("hubspot", 429, {"Retry-After": "90"}, 90),
        ("hubspot", 503, {}, 5),
        ("hubspot", 423, {}, 2),
        ("hubspot", 477, {"Retry-After": "120"}, 120),
        ("salesforce", 503, {}, 5),
        ("salesforce", 500, {}, 5),
    ],
)
async def test_a_transient_answer_is_retried_no_sooner_than_the_remote_asks_then_delivered(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    tmp_path: Path,
    clock: Clock,
    kind: str,
    status: int,
    headers: dict[str, str],
    at_least_s: float,
) -> None:
    async for run in RUNS[kind](make_bridge, simulator[1], tmp_path, clock):
        run.inject(status, headers)
        now = clock()

        first = await jobs_of(run.client).dispatcher.run_once()
        [(next_attempt_at,)] = await run.client.app[runtime.BRIDGE].ledger.fetch(
            "SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending'"
        )
        await drain(run.client, step_s=run.step_s)

        assert first.retrying == run.pending
        assert next_attempt_at - now >= at_least_s
        assert run.landed()

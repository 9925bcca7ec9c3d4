"""The HTTP API keeps the promises of its own OpenAPI document.

schemathesis reads ``/openapi.json`` from the real app served on loopback (real SQLite ledger in
a temporary directory, the bundled Lance simulator and two webhook sinks behind it) and sends
requests generated from the document, valid and invalid ones. Every answer must be one the
document lists for that operation: no 5xx, a documented status, the documented content type,
and a body that matches the documented schema.

The server runs on an event loop of its own, in a background thread: schemathesis calls it
synchronously (``requests``) from the test, which pytest runs outside any event loop. Each
operation is one Hypothesis test over ``operation.as_strategy()`` (schemathesis's
``pytest.from_fixture`` sets ``Node._nodeid``, which pytest 9.2 no longer has).

The short run (25 examples per operation, valid and invalid mixed, derandomized) is part of
every test run; the long one (``--run-slow``) sends 500 per operation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import typing
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bridge import app as app_mod
from bridge import model, openapi, runtime, schemas
from bridge import web as routes
from bridge.sim import _http
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.conftest import SECRET, Clock, auth, make_settings

T = TypeVar("T")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SHORT = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    # Bodies of up to 1000 tasks are big and slow to build; that is the point, not a problem.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(SHORT, max_examples=500)
STARTUP_TIMEOUT_S = 30.0


class LoopThread:
    """An event loop running in a daemon thread; :meth:`run` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        return future.result(STARTUP_TIMEOUT_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class LiveBridge:
    """The bridge on loopback with a ledger holding every kind of row the API can show."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.runners: list[web.AppRunner] = []
        self.base_url = ""

    async def start(self) -> str:
        lance_url = await self._serve(
            sim.serve(
                sim.LanceSimulator(
                    sim.SimConfig(
                        completion_s=(0.0, 0.0),
                        seed=7,
                        clock=self.clock,
                        outcomes={"found": 0.5, "not_found": 0.2, "failed": 0.2, "timeout": 0.1},
                    )
                )
            )
        )
        hook_url = await self._serve(sink_mod.serve(sink_mod.WebhookSink(SECRET)))
        gone = sink_mod.WebhookSink(SECRET)
        gone.fail_always(410)  # a permanent failure: those deliveries end dead
        gone_url = await self._serve(sink_mod.serve(gone))
        connectors = [
            {"name": "hook", "type": "webhook", "url": f"{hook_url}/hook", "secret": SECRET},
            {"name": "gone", "type": "webhook", "url": f"{gone_url}/gone", "secret": SECRET},
        ]
        settings_ = make_settings(self.tmp_path, lance_url, connectors=connectors)
        app = app_mod.create_app(settings_, clock=self.clock, run_jobs=False)
        self.base_url = await self._serve(_http.serve_app(app))
        await self._seed(app)
        return self.base_url

    async def _serve(self, starting: Awaitable[web.AppRunner]) -> str:
        runner = await starting
        self.runners.append(runner)
        return _http.base_url(runner)

    async def _seed(self, app: web.Application) -> None:
        hook, gone = {"connector": "hook"}, {"connector": "gone"}
        tasks = [
            {"entityId": str(uuid.uuid4()), "field": field, "targets": [hook, gone]}
            for field in ("emails", "phones")
            for _ in range(8)
        ]
        company = {"field": "summary", "entityType": "company", "mode": "track", "targets": [hook]}
        tasks += [{"entityId": str(uuid.uuid4()), **company} for _ in range(2)]
        await self._post(tasks)
        jobs = app[runtime.BRIDGE].jobs
        assert jobs is not None
        for _ in range(10):
            await jobs.run_all_once()
            self.clock.advance(2.0)
        # Some rows stay queued: the jobs never run again.
        await self._post([{"entityId": str(uuid.uuid4()), "field": "emails"} for _ in range(3)])

    async def _post(self, tasks: list[dict[str, Any]]) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.base_url}/v1/triggers", json={"tasks": tasks}, headers=auth()
            ) as response,
        ):
            assert response.status == 202, await response.text()

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


@pytest.fixture(scope="module")
def live_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a seeded bridge serving on loopback from its own thread."""
    loop = LoopThread()
    bridge = LiveBridge(tmp_path_factory.mktemp("fuzz"))
    try:
        yield loop.run(bridge.start())
    finally:
        loop.run(bridge.stop())
        loop.close()


@pytest.fixture(scope="module")
def api_schema(live_bridge: str) -> BaseSchema:
    """The document as the live bridge serves it, loaded by schemathesis."""
    return schemathesis.openapi.from_url(f"{live_bridge}/openapi.json")


# -- generated requests ----------------------------------------------------------------------

# Collected from the document in-process: the test ids exist before any server runs.
OPERATIONS = [
    pytest.param(method.upper(), path, id=f"{method.upper()} {path}")
    for path, item in openapi.document()["paths"].items()
    for method in item
]


def strategy(schema: BaseSchema, method: str, path: str) -> st.SearchStrategy[Case]:
    """Valid requests, and invalid ones when the operation has a parameter or body to break."""
    operation = schema[path][method]
    valid = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    definition = openapi.document()["paths"][path][method.lower()]
    if not {"parameters", "requestBody"} & definition.keys():
        return valid
    return valid | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)


def fuzz(schema: BaseSchema, method: str, path: str, budget: settings) -> None:
    """Send ``budget.max_examples`` generated requests; every answer must pass ``CHECKS``."""

    @budget
    @given(case=strategy(schema, method, path))
    def run(case: Case) -> None:
        case.call_and_validate(headers=auth(), checks=CHECKS)

    run()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_answer_matches_the_document(api_schema: BaseSchema, method: str, path: str) -> None:
    fuzz(api_schema, method, path, SHORT)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_answer_matches_the_document_long(
    api_schema: BaseSchema, method: str, path: str
) -> None:
    fuzz(api_schema, method, path, LONG)


# -- every seeded row ------------------------------------------------------------------------


def call(schema: BaseSchema, method: str, path: str, **parts: Any) -> Any:
    """One request built by hand, checked like the generated ones; returns the decoded body."""
    response = schema[path][method].Case(**parts).call_and_validate(headers=auth(), checks=CHECKS)
    return json.loads(response.content)


def test_every_kind_of_row_matches_the_document(api_schema: BaseSchema) -> None:
    # Generated ids seldom name a row; here every seeded row and delivery is read. The seeded
    # rows come first; generated triggers add queued rows after them.
    page = call(api_schema, "GET", "/v1/enrichments", query={"limit": 100})
    rows = page["enrichments"]
    assert {"queued", "pending", "finished", "failed"} <= {row["state"] for row in rows}
    assert any(row["values"] for row in rows)
    for row in rows:
        call(api_schema, "GET", "/v1/enrichments/{id}", path_parameters={"id": row["id"]})
    tasks = [{k: row[k] for k in ("entityId", "field", "entityType")} for row in rows]
    answered = call(api_schema, "POST", "/v1/enrichments/query", body={"tasks": tasks[:200]})
    assert len(answered) == len({tuple(task.values()) for task in tasks[:200]})

    deliveries = call(api_schema, "GET", "/v1/deliveries", query={"limit": 1000})["deliveries"]
    assert {"delivered", "dead"} <= {d["state"] for d in deliveries}
    for delivery in deliveries:
        # Answered 200 for a dead one (now pending), 409 for any other: both are documented.
        call(
            api_schema, "POST", "/v1/deliveries/{id}/retry", path_parameters={"id": delivery["id"]}
        )


@pytest.mark.parametrize(
    ("path", "listed", "query"),
    [
        # Only seeded rows are finished, and only the seeding ran the jobs that make deliveries:
        # rows added by generated triggers stay out of the walk.
        ("/v1/enrichments", "enrichments", {"state": "finished"}),
        ("/v1/deliveries", "deliveries", {}),
        ("/v1/deliveries", "deliveries", {"state": "delivered"}),
    ],
)
def test_following_next_cursor_reads_every_row_once(
    api_schema: BaseSchema, path: str, listed: str, query: dict[str, Any]
) -> None:
    every = [row["id"] for row in call(api_schema, "GET", path, query=query)[listed]]
    assert len(every) > 3
    seen: list[int] = []
    page_query = query | {"limit": 3}
    while True:
        page = call(api_schema, "GET", path, query=page_query)
        seen += [row["id"] for row in page[listed]]
        if page["nextCursor"] is None:
            break
        page_query["cursor"] = page["nextCursor"]
    assert seen == every


# -- what generation cannot reach ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/triggers", "/v1/enrichments/query"])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_body_that_is_not_what_its_encoding_says_is_a_400(
    api_schema: BaseSchema, live_bridge: str, path: str, encoding: str
) -> None:
    # This used to be a 500: aiohttp's payload error escaped the handler.
    headers = auth() | {"Content-Type": "application/json", "Content-Encoding": encoding}
    body = b'{"tasks": []}'
    response = requests.post(f"{live_bridge}{path}", data=body, headers=headers, timeout=10)
    api_schema[path]["POST"].Case(body={"tasks": []}).validate_response(response, checks=CHECKS)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_body"


# -- the document itself ---------------------------------------------------------------------


def _param(path: str, name: str) -> dict[str, Any]:
    [found] = [
        p["schema"]
        for p in openapi.document()["paths"][path]["get"]["parameters"]
        if p["name"] == name
    ]
    return dict(found)


def test_documented_parameters_are_the_ones_the_handlers_read() -> None:
    assert set(_param("/v1/enrichments", "state")["enum"]) == routes.ENRICHMENT_STATES
    assert set(_param("/v1/deliveries", "state")["enum"]) == routes.DELIVERY_STATES
    for path in ("/v1/enrichments", "/v1/deliveries"):
        assert _param(path, "limit")["maximum"] == routes.MAX_PAGE
    assert set(typing.get_args(schemas.EnrichmentState)) == routes.ENRICHMENT_STATES
    assert set(typing.get_args(schemas.InFlightState)) == set(model.IN_FLIGHT)
    assert set(typing.get_args(schemas.DeliveryState)) == routes.DELIVERY_STATES


def test_v1_needs_the_bearer_token_and_hooks_their_crms_signature() -> None:
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            guarded = path.startswith("/v1/")
            signed = path.startswith("/hooks/")
            assert ("security" in operation) == guarded, (method, path)
            assert ("401" in operation["responses"]) == (guarded or signed), (method, path)
            assert "500" in operation["responses"], (method, path)

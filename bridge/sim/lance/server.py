"""The Lance simulator's HTTP side: routes, authentication, fault injection, admin surface."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.sim import _http
from bridge.sim.lance import config as sim_config
from bridge.sim.lance import search, state, validation
from bridge.sim.lance.errors import ApiError, invalid

API_PREFIX = "/api/v1/"
BATCH = "/api/v1/operations/enrichment/batch"
QUERY = "/api/v1/operations/enrichment/batch/query"
SINGLE = "/api/v1/operations/enrichment/{personId}"
PERSON = "/api/v1/entities/prospects/person/{id}"
SEARCH = "/api/v1/entities/prospects/person"
COMPANY = "/api/v1/entities/prospects/company/{id}"
BALANCE = "/api/v1/operations/credits/balance"
FAULT_SETTINGS = ("fail_rate", "throttle_rate", "drop_rate", "slow_rate", "slow_s", "retry_after_s")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_OUTCOMES = frozenset(sim_config.OUTCOMES)
_NO_USER = "Missing user ID or organization ID"
_NO_ORG = "User is not authenticated or not associated with an organization"
# How each route answers a missing or wrong token. The doc pages disagree, so each entry is what
# its own page documents; the single-person page's table is unreadable, so it follows batch.
_AUTH_ERRORS: dict[str, tuple[int, str, str]] = {
    BATCH: (401, "VALIDATION_ERROR", _NO_USER),
    SINGLE: (401, "VALIDATION_ERROR", _NO_USER),
    QUERY: (401, "UNAUTHORIZED", "Missing or invalid authentication"),
    BALANCE: (400, "VALIDATION_ERROR", _NO_ORG),
    # The search page shows no error table: answered like the other entity operations.
    SEARCH: (401, "UNAUTHORIZED", "Missing or invalid authentication"),
}


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    code = "NOT_FOUND" if exc.status == 404 else "BAD_REQUEST"
    return ApiError(exc.status, code, exc.reason).response()


def _seconds(text: str, name: str) -> float:
    """A query parameter that must be a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise invalid(name, f"{name} must be a positive number of seconds")
    return value


def _decode(text: str) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(text)
    return decoded


class LanceSimulator:
    """The Lance API simulator; serve :attr:`app` with :func:`serve` or pytest-aiohttp.

    Attributes:
        config: The live configuration (fault rates may be changed with :meth:`set_faults`).
        app: The aiohttp application serving the API and the ``/_sim/`` admin surface.
        requests: API requests per ``"METHOD /route/{template}"``, faulted ones included.
        statuses: API answers per (route key, status); a dropped connection counts as status 0.
        admin_requests: Requests to the admin surface (not counted in ``requests``).
        queries: ``(time, tasks)`` of every batch query answered (faulted ones carried none).
        triggered: Person ids named by answered triggers, and of those the ones answered with
            a record Lance already had (``"reused"``: a trigger repeated, free while pending).
    """

    def __init__(self, config: sim_config.SimConfig | None = None) -> None:
        self.config = config or sim_config.SimConfig()
        seed = self.config.seed
        self._faults = random.Random(None if seed is None else f"faults:{seed}")  # noqa: S311
        self._store = state.EnrichmentStore(self.config)
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.admin_requests: Counter[str] = Counter()
        self.directory = search.Directory(self.config.people, seed)
        self.searches: Counter[str] = Counter()
        self.queries: list[tuple[float, int]] = []
        self.triggered: Counter[str] = Counter()
        self.app = self.create_app()

    @property
    def credits_charged(self) -> int:
        """Credits charged so far."""
        return self._store.credits_charged

    @property
    def balance(self) -> int:
        """The current credit balance."""
        self._now()
        return self._store.balance

    @property
    def charges(self) -> Counter[tuple[str, str, str]]:
        """Paid charges per (entityType, entityId, field)."""
        return self._store.charges

    def create_app(self) -> web.Application:
        """Build the aiohttp application serving the API and the admin surface."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._dispatch(request, handler)

        app = web.Application(middlewares=[middleware])
        add_get, add_post = app.router.add_get, app.router.add_post
        add_post(BATCH, self._trigger_batch)  # before SINGLE, whose {personId} would match "batch"
        add_post(QUERY, self._query)
        add_post(SINGLE, self._trigger_one)
        add_get(SINGLE, self._status_one)
        add_get(PERSON, self._person)
        add_post(SEARCH, self._search)
        add_get(COMPANY, self._company)
        add_get(BALANCE, self._balance)
        add_get("/_sim/stats", self._admin_stats)
        add_post("/_sim/complete", self._admin_complete)
        add_post("/_sim/enrichments", self._admin_enrichment)
        add_post("/_sim/faults", self._admin_faults)
        return app

    def start_enrichment(
        self,
        entity_id: str,
        field: str,
        entity_type: str = sim_config.PERSON,
        *,
        outcome: str | None = None,
        completion_s: float | None = None,
    ) -> dict[str, object]:
        """Create a record as if started outside the bridge (e.g. a company summary), free.

        Args:
            entity_id: The entity's UUID.
            field: ``phones``, ``emails`` or ``summary``.
            entity_type: ``person`` or ``company``.
            outcome: Terminal outcome (see ``config.OUTCOMES``); random if ``None``.
            completion_s: Seconds until terminal; drawn from ``config.completion_s`` if ``None``.

        Returns:
            The new record's JSON (pending).

        Raises:
            ValueError: An argument is outside its documented values.
        """
        try:
            eid = validation.uuid4(entity_id, "entityId")
            validation.one_of(field, sim_config.QUERY_FIELDS, "field")
            validation.one_of(entity_type, sim_config.ENTITY_TYPES, "entityType")
            if outcome is not None:
                validation.one_of(outcome, _OUTCOMES, "outcome")
            if completion_s is not None:
                validation.number(completion_s, "completion_s", math.inf)
        except ApiError as err:
            raise ValueError(err.message) from err
        now = self._now()
        rec = self._store.create(
            entity_type, eid, field, now, paid=False, outcome=outcome, completion_s=completion_s
        )
        return _decode(self._store.render(rec, now, fresh=True))

    def complete_all(self) -> int:
        """Make every pending record reach its predetermined terminal state now.

        Returns:
            How many records were pending.
        """
        return self._store.complete_all(self.config.clock())

    def set_faults(
        self,
        *,
        fail_rate: float | None = None,
        throttle_rate: float | None = None,
        drop_rate: float | None = None,
        slow_rate: float | None = None,
        slow_s: float | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        """Change fault injection; arguments left ``None`` keep their value.

        Raises:
            ValueError: A rate outside [0, 1] or a negative duration.
        """
        rates = {
            "fail_rate": fail_rate,
            "throttle_rate": throttle_rate,
            "drop_rate": drop_rate,
            "slow_rate": slow_rate,
        }
        checked = {name: validation.number(v, name) for name, v in rates.items() if v is not None}
        if slow_s is not None:
            checked["slow_s"] = validation.number(slow_s, "slow_s", math.inf)
        if retry_after_s is not None:
            checked["retry_after_s"] = int(
                validation.number(retry_after_s, "retry_after_s", math.inf)
            )
        for name, value in checked.items():
            setattr(self.config, name, value)

    def record(self, entity_type: str, entity_id: str, field: str) -> dict[str, object] | None:
        """The latest record JSON for a key, or ``None``."""
        now = self._now()
        rec = self._store.latest(entity_type, entity_id.lower(), field)
        return None if rec is None else _decode(self._store.render(rec, now))

    def stats(self, tick_s: float | None = None) -> dict[str, Any]:
        """A JSON-able summary: requests, statuses, credits and records by status.

        Args:
            tick_s: When given, ``batchQueries.floor`` is the fewest batch queries that could
                have carried the same tasks: per window of ``tick_s`` seconds (aligned on the
                Unix epoch), ⌈tasks queried in it / 200⌉.
        """
        now = self._now()
        statuses: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.statuses.items()):
            statuses.setdefault(route, {})[str(status)] = count
        by_status = self._store.count_by_status(now)
        return {
            "requests": dict(self.requests),
            "statuses": statuses,
            "adminRequests": dict(self.admin_requests),
            "credits": {
                "balance": self._store.balance,
                "charged": self._store.credits_charged,
                "paidCharges": sum(self.charges.values()),
                "maxChargesPerKey": max(self.charges.values(), default=0),
            },
            "records": {"total": by_status.total(), "byStatus": dict(by_status)},
            "faults": self._fault_settings(),
            "searches": {"total": self.searches["total"], "byFilter": self._search_kinds()},
            "triggers": {"ids": self.triggered["ids"], "reused": self.triggered["reused"]},
            "batchQueries": self._query_stats(tick_s),
        }

    def _query_stats(self, tick_s: float | None) -> dict[str, Any]:
        found: dict[str, Any] = {
            "requests": len(self.queries),
            "tasks": sum(tasks for _, tasks in self.queries),
        }
        if tick_s is not None:
            windows: Counter[int] = Counter()
            for at, tasks in self.queries:
                windows[math.floor(at / tick_s)] += tasks
            batch = validation.MAX_TASKS
            found["tickS"] = tick_s
            found["floor"] = sum(-(-tasks // batch) for tasks in windows.values())
        return found

    def _search_kinds(self) -> dict[str, int]:
        return {kind: n for kind, n in sorted(self.searches.items()) if kind != "total"}

    def _fault_settings(self) -> dict[str, float]:
        return {name: getattr(self.config, name) for name in FAULT_SETTINGS}

    def _now(self) -> float:
        now = self.config.clock()
        self._store.settle(now)
        return now

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = _http.route_key(request)
        if not request.path.startswith(API_PREFIX):
            self.admin_requests[key] += 1
            return await _http.guarded(request, handler, _http_error)
        self.requests[key] += 1
        config = self.config
        if config.slow_rate and self._faults.random() < config.slow_rate:
            await asyncio.sleep(config.slow_s)
        fault = self._draw_fault()
        if fault == "drop":
            self.statuses[(key, 0)] += 1
            return _http.drop_connection(request)
        response: web.StreamResponse
        if fault == "fail":
            response = ApiError(500, "INTERNAL_ERROR", "Simulated server error").response()
        elif fault == "throttle":
            retry_after = {"Retry-After": str(config.retry_after_s)}
            response = ApiError(
                429, "RATE_LIMITED", "Too many requests", {}, retry_after
            ).response()
        else:
            response = await _http.guarded(request, handler, _http_error)
        self.statuses[(key, response.status)] += 1
        return response

    def _draw_fault(self) -> str | None:
        config = self.config
        rates = (
            ("drop", config.drop_rate),
            ("fail", config.fail_rate),
            ("throttle", config.throttle_rate),
        )
        if not any(rate for _, rate in rates):
            return None
        draw = self._faults.random()
        for name, rate in rates:
            if draw < rate:
                return name
            draw -= rate
        return None

    def _authorize(self, request: web.Request, route: str) -> None:
        scheme, token = _http.split_authorization(request.headers.get("Authorization"))
        if scheme != "bearer" or token != self.config.token:
            status, code, message = _AUTH_ERRORS[route]
            raise ApiError(status, code, message)

    def _trigger(self, person_ids: list[str], field: str) -> list[str]:
        now = self._now()
        try:
            picked = self._store.trigger(person_ids, field, now)
        except state.InsufficientCreditsError as exc:
            details: dict[str, object] = {"required": exc.required, "balance": exc.balance}
            raise ApiError(402, "INSUFFICIENT_CREDITS", str(exc), details) from exc
        self.triggered["ids"] += len(picked)
        self.triggered["reused"] += sum(not new for _, new in picked)
        return [self._store.render(rec, now, fresh=new) for rec, new in picked]

    async def _trigger_batch(self, request: web.Request) -> web.Response:
        self._authorize(request, BATCH)
        person_ids, field = validation.parse_trigger(await validation.read_json(request))
        text = _http.json_array(self._trigger(person_ids, field))
        if self.config.wrap_trigger_response:
            text = f'{{"enrichments":{text}}}'
        return _http.json_text_response(text)

    def _person_and_field(self, request: web.Request) -> tuple[str, str]:
        person_id = validation.uuid4(request.match_info["personId"], "personId")
        field = validation.one_of(request.query.get("field"), sim_config.TRIGGER_FIELDS, "field")
        return person_id, field

    async def _trigger_one(self, request: web.Request) -> web.Response:
        self._authorize(request, SINGLE)
        person_id, field = self._person_and_field(request)
        return _http.json_text_response(self._trigger([person_id], field)[0])

    async def _status_one(self, request: web.Request) -> web.Response:
        self._authorize(request, SINGLE)
        person_id, field = self._person_and_field(request)
        rec = self._store.latest(sim_config.PERSON, person_id, field)
        if rec is None:
            raise ApiError(404, "NOT_FOUND", f"No {field} enrichment found for person {person_id}")
        return _http.json_text_response(self._store.render(rec, self._now()))

    async def _query(self, request: web.Request) -> web.Response:
        self._authorize(request, QUERY)
        tasks = validation.parse_tasks(await validation.read_json(request))
        now = self._now()
        items = self._store.query(tasks, now)
        self.queries.append((now, len(tasks)))
        return _http.json_text_response(_http.json_array(items))

    def _entity_id(self, request: web.Request) -> str:
        entity_id = request.match_info["id"]
        if not _UUID.fullmatch(entity_id):
            raise invalid("id", "id must be a valid UUID")
        if entity_id.lower() in self.config.unknown_entities:
            raise ApiError(404, "NOT_FOUND", f"Entity {entity_id} not found")
        return entity_id.lower()

    def _person_json(self, person_id: str, now: float) -> dict[str, object]:
        person = self._store.person(person_id, now)
        twin_url = self.directory.url_overrides.get(person_id)
        if twin_url is not None:
            person["linkedinUrl"] = twin_url
        return person

    async def _person(self, request: web.Request) -> web.Response:
        entity_id = self._entity_id(request)
        return _http.json_response(self._person_json(entity_id, self._now()))

    async def _search(self, request: web.Request) -> web.Response:
        self._authorize(request, SEARCH)
        query = search.parse(await validation.read_json(request))
        self.searches["total"] += 1
        self.searches.update(search.counted_kind(query.kinds))
        ids, total = self.directory.search(query)
        now = self._now()
        people = [self._person_json(person_id, now) for person_id in ids]
        return _http.json_response(search.spring_page(people, total, query.page, query.size))

    async def _company(self, request: web.Request) -> web.Response:
        entity_id = self._entity_id(request)
        return _http.json_response(self._store.company(entity_id, self._now()))

    async def _balance(self, request: web.Request) -> web.Response:
        self._authorize(request, BALANCE)
        return _http.json_response({"balance": self.balance, "organizationId": self.config.org_id})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        tick = request.query.get("tick")
        return _http.json_response(self.stats(None if tick is None else _seconds(tick, "tick")))

    async def _admin_complete(self, request: web.Request) -> web.Response:
        return _http.json_response({"completed": self.complete_all()})

    async def _admin_enrichment(self, request: web.Request) -> web.Response:
        body = validation.json_object(await validation.read_json(request), "body")
        completion = body.get("completionS")
        try:
            created = self.start_enrichment(
                str(body.get("entityId")),
                str(body.get("field")),
                str(body.get("entityType", sim_config.PERSON)),
                outcome=None if body.get("outcome") is None else str(body["outcome"]),
                completion_s=None
                if completion is None
                else validation.number(completion, "completionS", math.inf),
            )
        except ValueError as exc:
            raise invalid("body", str(exc)) from exc
        return _http.json_response(created, status=201)

    async def _admin_faults(self, request: web.Request) -> web.Response:
        body = validation.json_object(await validation.read_json(request), "body")
        unknown = set(body) - set(FAULT_SETTINGS)
        if unknown:
            raise invalid("body", f"unknown settings {sorted(unknown)}; use {FAULT_SETTINGS}")
        try:
            settings: dict[str, Any] = {
                k: validation.number(v, k, math.inf) for k, v in body.items()
            }
            self.set_faults(**settings)
        except ValueError as exc:
            raise invalid("body", str(exc)) from exc
        return _http.json_response(self._fault_settings())


async def serve(sim: LanceSimulator, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve ``sim`` on ``host:port`` (0 picks a free port; see :func:`bound_port`).

    Returns:
        The started runner; the caller owns it and must ``await runner.cleanup()``.
    """
    return await _http.serve_app(sim.app, host, port)

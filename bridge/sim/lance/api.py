"""The simulated Lance API's routes: authentication, fault injection, tasks and entities.

:class:`LanceApi` answers the API under :data:`API_PREFIX` (triggers, the batch query, one
person's status, person and company records, the person search, the balance) and counts what
it answered; :class:`~bridge.sim.lance.server.LanceSimulator` adds the application and the
``/_sim/`` admin surface.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter

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

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
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


def decode(text: str) -> dict[str, object]:
    """A record rendered as JSON text, as the admin surface returns it."""
    decoded: dict[str, object] = json.loads(text)
    return decoded


class LanceApi:
    """The API routes over one enrichment store, person directory and fault draw."""

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

"""The Lance simulator's HTTP side: routes, authentication, fault injection, admin surface."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.sim import _http
from bridge.sim.lance import config as sim_config
from bridge.sim.lance import validation
from bridge.sim.lance.api import (
    API_PREFIX,
    BALANCE,
    BATCH,
    COMPANY,
    PERSON,
    QUERY,
    SEARCH,
    SINGLE,
    LanceApi,
    decode,
)
from bridge.sim.lance.errors import ApiError, invalid

__all__ = [
    "API_PREFIX",
    "BALANCE",
    "BATCH",
    "COMPANY",
    "FAULT_SETTINGS",
    "PERSON",
    "QUERY",
    "SEARCH",
    "SINGLE",
    "LanceSimulator",
    "serve",
]

FAULT_SETTINGS = ("fail_rate", "throttle_rate", "drop_rate", "slow_rate", "slow_s", "retry_after_s")
_OUTCOMES = frozenset(sim_config.OUTCOMES)


def _seconds(text: str, name: str) -> float:
    """A query parameter that must be a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise invalid(name, f"{name} must be a positive number of seconds")
    return value


class LanceSimulator(LanceApi):
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
        super().__init__(config)
        self.app = self.create_app()

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
        return decode(self._store.render(rec, now, fresh=True))

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
        return None if rec is None else decode(self._store.render(rec, now))

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

"""The state of a fake HubSpot account: records, schemas, recorded requests and faults."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web

from bridge.sim import _http
from bridge.sim.hubspot import access
from bridge.sim.hubspot.errors import FAULT_TEXT, ApiError, error_body, invalid, rate_limit_body
from bridge.sim.hubspot.schema import (
    DEFAULT_PORTAL_ID,
    DEFAULT_SCHEMAS,
    MODIFIED,
    READ_ONLY,
    SINGULAR,
    TYPE_IDS,
    UNIQUE,
    Properties,
    checked_type,
    iso,
)

FAULT_RETRY_AFTER_S = 1  # default Retry-After of an injected 477, short for tests


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One API request as the sandbox answered it.

    Attributes:
        method: HTTP method.
        path: Request path.
        route: Route template (``/crm/v3/objects/{objectType}/batch/update``) or ``<unmatched>``.
        query: Query parameters (the last value of repeated ones).
        json: The parsed JSON body, or ``None`` (no body, not JSON, a form).
        status: The status answered.
        token: The bearer token presented, if any (kept out of the repr).
    """

    method: str
    path: str
    route: str
    query: dict[str, str]
    json: object
    status: int
    token: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class UpdateInput:
    id: str
    properties: Properties
    id_property: str | None
    trace_id: str | None


class HubSpotSandbox(access.Access):
    """The state of one fake HubSpot account; serve it with :func:`create_app` or :func:`serve`.

    Args:
        clock: Unix-seconds clock for timestamps, token expiry and the rate window.
        portal_id: The account (hub) id.
        private_tokens: Private-app tokens: they never expire.
        client_id: The OAuth app's client id.
        client_secret: The OAuth app's client secret.
        refresh_tokens: Refresh tokens ``/oauth/v1/token`` accepts.
        token_lifetime_s: Lifetime of issued access tokens (HubSpot: 1800).
        rate_limit: Requests allowed per window, per private-app token and for the OAuth
            tokens together; 0 disables limiting.
        rate_window_s: The rolling window (HubSpot: 10 s).
        latency_s: ``(low, high)``: each API request arrives a random time in this range after
            it was sent (it waits before being counted and served).
        rng: The source of those random delays.

    Attributes:
        objects: Record properties per object type (``contacts``, ``companies``) and record id.
        schemas: Property names that exist, per object type.
        requests: Every API request answered, in order (admin requests excluded).
        counts: API requests per ``"METHOD /route/{template}"``, faulted and limited included.
        token_requests: Requests to ``POST /oauth/v1/token``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        portal_id: int = DEFAULT_PORTAL_ID,
        private_tokens: Iterable[str] = ("pat-sandbox",),
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",  # noqa: S107 - a sandbox default, not a secret
        refresh_tokens: Iterable[str] = ("refresh-sandbox",),
        token_lifetime_s: float = 1800,
        rate_limit: int = 100,
        rate_window_s: float = 10.0,
        latency_s: tuple[float, float] = (0.0, 0.0),
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.portal_id = portal_id
        self.client_id = client_id
        self.token_lifetime_s = token_lifetime_s
        self.rate_limit = rate_limit
        self.rate_window_s = rate_window_s
        self.latency_s = latency_s
        self._rng = rng or random.Random()  # noqa: S311 - simulated latency, not security
        self.objects: dict[str, dict[str, Properties]] = {t: {} for t in DEFAULT_SCHEMAS}
        self.schemas: dict[str, set[str]] = {t: set(s) for t, s in DEFAULT_SCHEMAS.items()}
        self.requests: list[Recorded] = []
        self.counts: Counter[str] = Counter()
        self.token_requests = 0
        self._private_tokens = frozenset(private_tokens)
        self._client_secret = client_secret
        self._refresh_tokens = frozenset(refresh_tokens)
        self._access_tokens: dict[str, float] = {}
        self._windows: dict[str, deque[float]] = {}
        self._faults: _http.FaultQueue[_http.Fault] = _http.FaultQueue()
        self._last_id = 0

    def __repr__(self) -> str:
        sizes = {t: len(records) for t, records in self.objects.items()}
        return f"HubSpotSandbox(portal_id={self.portal_id}, records={sizes})"

    def add_record(
        self,
        object_type: str,
        properties: Mapping[str, str] | None = None,
        record_id: str | None = None,
    ) -> str:
        """Create a record; returns its id (increasing numbers unless ``record_id`` is given).

        Raises:
            ValueError: Unknown type or property, a non-numeric or taken id.
        """
        t = checked_type(object_type)
        props = dict(properties or {})
        unknown = sorted(set(props) - self.schemas[t])
        if unknown:
            raise ValueError(f"{t} have no properties {unknown}; add_property() first")
        if record_id is None:
            record_id = str(self._last_id + 1)
        if not record_id.isdigit() or record_id in self.objects[t]:
            raise ValueError(f"record id {record_id!r} is not numeric or already used")
        self._last_id = max(self._last_id, int(record_id))
        now = iso(self.clock())
        base = {"hs_object_id": record_id, "createdate": now, MODIFIED[t]: now}
        self.objects[t][record_id] = base | props
        return record_id

    def record(self, object_type: str, record_id: str) -> Properties:
        """A copy of a record's properties (cleared properties are absent).

        Raises:
            KeyError: No such record.
        """
        return dict(self.objects[checked_type(object_type)][record_id])

    def add_property(self, object_type: str, name: str) -> None:
        """Define a (string) property on an object type."""
        self.schemas[checked_type(object_type)].add(name)

    def reset_counts(self) -> None:
        """Forget recorded requests and counters (records, tokens and faults stay)."""
        self.requests.clear()
        self.counts.clear()
        self.token_requests = 0

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        body: dict[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        route: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``status``, changing nothing.

        Calls queue up: a request takes the oldest fault that matches it.

        Args:
            count: How many requests fail.
            status: The status to answer.
            body: The JSON body; ``None`` gives HubSpot's shape for the status (a 429 is the
                ``TEN_SECONDLY_ROLLING`` body, a 477 carries ``Retry-After``).
            headers: Extra headers.
            route: Only requests whose ``"METHOD /route/{template}"`` contains this text.
        """
        self._faults.add(count, _http.Fault(status, body, dict(headers or {})), route)

    def _take_fault(self, key: str) -> web.Response | None:
        fault = self._faults.take(lambda route: route in key)
        return None if fault is None else self._fault_response(fault)

    def _fault_response(self, fault: _http.Fault) -> web.Response:
        headers = dict(fault.headers)
        if fault.status == 477:
            headers.setdefault("Retry-After", str(FAULT_RETRY_AFTER_S))
        if fault.status == 429 and self.rate_limit > 0:
            headers = self._rate_headers(0) | headers
        body = fault.body
        if body is None and fault.status == 429:
            body = rate_limit_body()
        elif body is None:
            category, message = FAULT_TEXT.get(fault.status, ("ERROR", "Injected failure"))
            body = error_body(category, message)
        return _http.json_response(body, fault.status, headers)

    async def _travel(self) -> None:
        low, high = self.latency_s
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high))

    def _find(self, t: str, id_value: str, id_property: str | None) -> str | None:
        records = self.objects[t]
        if id_property is None:
            return id_value if id_value in records else None
        if id_property not in UNIQUE[t]:
            raise invalid(
                f"Unable to perform update/upsert by non-unique {TYPE_IDS[t]} property"
                f" {id_property} in portal ID {self.portal_id}"
            )
        wanted = id_value.lower()  # unique string properties (email) match case-insensitively
        found = (rid for rid, p in records.items() if p.get(id_property, "").lower() == wanted)
        return next(found, None)

    def _view(
        self, t: str, record_id: str, names: Iterable[str], trace_id: str | None = None
    ) -> dict[str, object]:
        """A ``SimplePublicObject``: the named properties (``None`` when unset) plus defaults."""
        props = self.objects[t][record_id]
        wanted = (set(names) & self.schemas[t]) | {"hs_object_id", "createdate", MODIFIED[t]}
        view: dict[str, object] = {
            "id": record_id,
            "properties": {name: props.get(name) for name in sorted(wanted)},
            "createdAt": props["createdate"],
            "updatedAt": props[MODIFIED[t]],
            "archived": False,
        }
        if trace_id is not None:
            view["objectWriteTraceId"] = trace_id
        return view

    def _property_errors(self, t: str, properties: Iterable[str]) -> list[tuple[str, str, str]]:
        """``(name, code, message)`` of each property that cannot be written."""
        errors = []
        for name in properties:
            if name not in self.schemas[t]:
                errors.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            elif name in READ_ONLY:
                message = f'"{name}" is a read only property; its value cannot be set.'
                errors.append((name, "READ_ONLY_VALUE", message))
        return errors

    def _invalid_message(self, errors: list[tuple[str, str, str]]) -> str:
        details = [
            {
                "isValid": False,
                "message": message,
                "error": code,
                "name": name,
                "localizedErrorMessage": message,
                "portalId": self.portal_id,
            }
            for name, code, message in errors
        ]
        return f"Property values were not valid: {json.dumps(details, separators=(',', ':'))}"

    def _write(self, t: str, record_id: str, properties: Properties) -> None:
        record = self.objects[t][record_id]
        for name, value in properties.items():
            if value == "":  # HubSpot clears a property written as ""
                record.pop(name, None)
            else:
                record[name] = value
        record[MODIFIED[t]] = iso(self.clock())

    def _update_one(self, t: str, item: UpdateInput) -> dict[str, object]:
        """Apply one batch input; raises ``ApiError`` carrying its ``StandardError`` context."""
        record_id = self._find(t, item.id, item.id_property)
        if record_id is None:
            message = not_found_message(t)
            raise ApiError(404, "OBJECT_NOT_FOUND", message, context={"ids": [item.id]})
        errors = self._property_errors(t, item.properties)
        if errors:
            context = (
                {"ids": [item.id]}
                if item.trace_id is None
                else {"objectWriteTraceId": [item.trace_id]}
            )
            raise ApiError(400, "VALIDATION_ERROR", self._invalid_message(errors), context=context)
        self._write(t, record_id, item.properties)
        return self._view(t, record_id, item.properties, item.trace_id)


def not_found_message(t: str) -> str:
    """The message of a batch ``OBJECT_NOT_FOUND``."""
    return (
        f"Could not get some {SINGULAR[t]} objects, they may be deleted or not exist."
        " Check that ids are valid."
    )


SANDBOX = web.AppKey("hubspot_sandbox", HubSpotSandbox)

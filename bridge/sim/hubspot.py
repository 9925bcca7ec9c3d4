"""A faithful fake of HubSpot's CRM API, and tools that send webhooks the way HubSpot does.

The sandbox serves, under one base URL, what a HubSpot connector calls: the OAuth refresh
(``POST /oauth/v1/token``), the property listing, single read and update, and batch read and
update of contacts and companies (``/crm/v3/...``). It follows the contract in
``crm-apis.md`` §1.5 to 1.7: every value a string, at most 100 inputs per batch, 207 with one
``StandardError`` per failed input, HubSpot's error bodies, bearer auth with 30-minute OAuth
tokens, and the ``TEN_SECONDLY_ROLLING`` burst limit with the ``X-HubSpot-RateLimit-*`` headers:
requests counted as they arrive, in a true rolling window, per private app (token) and for all
OAuth tokens of the account together (§1.7). Faults (429, 423, 477, 5xx) can be injected per
request, all on an injectable clock; ``latency_s`` delays each API request on its way in, as a
network does, before it is counted.

Example::

    sandbox = HubSpotSandbox(clock=clock, rate_limit=100)
    contact_id = sandbox.add_record("contacts", {"email": "ada@example.com"})
    runner = await serve(sandbox)
    url = base_url(runner)  # bearer token: "pat-sandbox"
    sandbox.fail_next(1, 429, route="batch/update")  # the client must retry once
    ...
    assert sandbox.record("contacts", contact_id)["phone"] == "+44 20 7946 0000"
    assert sandbox.counts["POST /crm/v3/objects/{objectType}/batch/update"] == 2
    await runner.cleanup()

The other direction, HubSpot calling the bridge, needs no server::

    events = [property_change(int(contact_id), "lance_enrich", "yes", portal_id=62515)]
    status = await send_webhook(session, "http://127.0.0.1:8080/hubspot", secret, events)

App webhooks are signed v1 + v3 (:func:`send_webhook`, :func:`webhook_headers`); workflow
"Send a webhook" calls are signed v2 + v3 (``webhook_headers(..., version="v2")`` over a
:func:`workflow_payload` or :func:`legacy_contact_payload` body).

Admin surface (no auth, not counted): ``GET /_sim/objects/{objectType}/{objectId}``,
``POST /_sim/objects/{objectType}`` with ``{"properties"?, "id"?}``, ``GET /_sim/requests``,
``POST /_sim/faults`` with ``{"count", "status", "body"?, "headers"?, "route"?}``,
``POST /_sim/reset-counts`` and ``POST /_sim/expire-tokens``.

Not from HubSpot's text (its docs do not show them; chosen to look like the rest): the bodies of
injected 423/477/5xx answers and of unknown routes, the batch-size and missing-field messages,
``READ_ONLY_VALUE`` for read-only properties, ``BAD_CLIENT_ID`` for a wrong client secret and
``BAD_GRANT_TYPE``. Rejecting non-string property values is stricter than HubSpot, which may
coerce numbers: it catches clients that would depend on that.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import itertools
import json
import random
import secrets
import time
import urllib.parse
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.sim import _http

bound_port = _http.bound_port
base_url = _http.base_url

DEFAULT_PORTAL_ID = 62515
DEFAULT_APP_ID = 54321
DEFAULT_SUBSCRIPTION_ID = 12345
MAX_BATCH_INPUTS = 100
MAX_WEBHOOK_EVENTS = 100
WEBHOOK_TIMEOUT_S = 5.0  # HubSpot gives up on (and retries) slower answers
FAULT_RETRY_AFTER_S = 1  # default Retry-After of an injected 477, short for tests
USER_AGENT = (
    "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio-http-client)"
    " - WebhooksExecutorDaemon-executor"
)

OAUTH = "/oauth/v1/token"
PROPERTIES = "/crm/v3/properties/{objectType}"
OBJECT = "/crm/v3/objects/{objectType}/{objectId}"
BATCH_READ = "/crm/v3/objects/{objectType}/batch/read"
BATCH_UPDATE = "/crm/v3/objects/{objectType}/batch/update"
CRM_PREFIX = "/crm/"
ADMIN_PREFIX = "/_sim/"

DEFAULT_SCHEMAS: dict[str, frozenset[str]] = {
    "contacts": frozenset(
        [
            "email",
            "hs_additional_emails",
            "phone",
            "mobilephone",
            "firstname",
            "lastname",
            "company",
            "lance_person_id",
            "lance_company_id",
            "lance_last_enriched",
            "lance_enrichment_status",
            "hs_object_id",
            "createdate",
            "lastmodifieddate",
        ]
    ),
    "companies": frozenset(
        [
            "name",
            "domain",
            "description",
            "phone",
            "lance_company_id",
            "lance_last_enriched",
            "lance_enrichment_status",
            "hs_object_id",
            "createdate",
            "hs_lastmodifieddate",
        ]
    ),
}
_TYPES = {"contacts": "contacts", "0-1": "contacts", "companies": "companies", "0-2": "companies"}
_TYPE_IDS = {"contacts": "0-1", "companies": "0-2"}
_SINGULAR = {"contacts": "CONTACT", "companies": "COMPANY"}
_MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
_GROUPS = {"contacts": "contactinformation", "companies": "companyinformation"}
_UNIQUE = {"contacts": frozenset({"email"}), "companies": frozenset[str]()}
# What HubSpot returns when a read names no properties.
_DEFAULT_READ = {
    "contacts": ("email", "firstname", "lastname"),
    "companies": ("domain", "name"),
}
_READ_ONLY = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"})
_KINDS = {"hs_object_id": ("number", "number")} | dict.fromkeys(
    ("createdate", "lastmodifieddate", "hs_lastmodifieddate"), ("datetime", "date")
)
_NO_CREDENTIALS = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you"
    " can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
_FAULT_TEXT = {
    423: ("LOCKED", "The resource is locked by a high-volume sync. Wait 2 seconds and retry."),
    477: ("MIGRATION_IN_PROGRESS", "Migration in progress. Retry after the Retry-After delay."),
    500: ("INTERNAL_ERROR", "internal error"),
    502: ("BAD_GATEWAY", "Bad Gateway"),
    503: ("SERVICE_UNAVAILABLE", "Service Unavailable"),
}
_EVENT_IDS = itertools.count(1)

Properties = dict[str, str]


def _uuid() -> str:
    return str(uuid.uuid4())


def _iso(timestamp_s: float) -> str:
    return datetime.fromtimestamp(timestamp_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def error_body(
    category: str,
    message: str,
    *,
    context: Mapping[str, list[str]] | None = None,
    errors: list[dict[str, object]] | None = None,
) -> dict[str, object]:
    """HubSpot's error body: ``status``, ``message``, ``correlationId``, ``category``, …"""
    body: dict[str, object] = {
        "status": "error",
        "message": message,
        "correlationId": _uuid(),
        "category": category,
    }
    if context is not None:
        body["context"] = dict(context)
    if errors is not None:
        body["errors"] = errors
    return body


def standard_error(category: str, message: str, context: Mapping[str, list[str]]) -> dict[str, Any]:
    """One ``StandardError`` of a 207 batch answer."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": dict(context),
        "errors": [],
        "links": {},
    }


def rate_limit_body() -> dict[str, object]:
    """The 429 body of the ten-secondly burst limit."""
    return {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": _uuid(),
        "policyName": "TEN_SECONDLY_ROLLING",
        "requestId": _uuid(),
    }


@dataclasses.dataclass(eq=False)
class ApiError(Exception):
    """An error answer; ``raw`` replaces the standard body when HubSpot uses another shape."""

    status: int
    category: str
    message: str
    context: dict[str, list[str]] | None = None
    errors: list[dict[str, object]] | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    raw: dict[str, object] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def response(self) -> web.Response:
        """The aiohttp answer."""
        body = self.raw
        if body is None:
            body = error_body(self.category, self.message, context=self.context, errors=self.errors)
        return _http.json_response(body, self.status, self.headers)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message)


def _missing(model: str, names: Iterable[str]) -> ApiError:
    listed = ", ".join(names)
    return _invalid(
        f"Invalid input JSON: Cannot build {model}, some of required attributes are not set"
        f" [{listed}]"
    )


def _oauth_error(status: str, message: str) -> ApiError:
    raw: dict[str, object] = {"status": status, "message": message, "correlationId": _uuid()}
    return ApiError(400, status, message, raw=raw)


def canonical_type(object_type: str) -> str | None:
    """``contacts`` or ``companies`` for a name or ``0-1``/``0-2`` id; ``None`` if unknown."""
    return _TYPES.get(object_type)


def _resolve(object_type: str) -> str:
    canonical = canonical_type(object_type)
    if canonical is None:
        raise _invalid(f"Unable to infer object type from: {object_type}")
    return canonical


def _checked_type(object_type: str) -> str:
    canonical = canonical_type(object_type)
    if canonical is None:
        raise ValueError(f"unknown object type {object_type!r}; use contacts, companies, 0-1, 0-2")
    return canonical


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


@dataclasses.dataclass
class _Fault:
    remaining: int
    status: int
    body: dict[str, object] | None
    headers: dict[str, str]
    route: str | None


@dataclasses.dataclass(frozen=True)
class _UpdateInput:
    id: str
    properties: Properties
    id_property: str | None
    trace_id: str | None


class HubSpotSandbox:
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
        self._faults: list[_Fault] = []
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
        t = _checked_type(object_type)
        props = dict(properties or {})
        unknown = sorted(set(props) - self.schemas[t])
        if unknown:
            raise ValueError(f"{t} have no properties {unknown}; add_property() first")
        if record_id is None:
            record_id = str(self._last_id + 1)
        if not record_id.isdigit() or record_id in self.objects[t]:
            raise ValueError(f"record id {record_id!r} is not numeric or already used")
        self._last_id = max(self._last_id, int(record_id))
        now = _iso(self.clock())
        base = {"hs_object_id": record_id, "createdate": now, _MODIFIED[t]: now}
        self.objects[t][record_id] = base | props
        return record_id

    def record(self, object_type: str, record_id: str) -> Properties:
        """A copy of a record's properties (cleared properties are absent).

        Raises:
            KeyError: No such record.
        """
        return dict(self.objects[_checked_type(object_type)][record_id])

    def add_property(self, object_type: str, name: str) -> None:
        """Define a (string) property on an object type."""
        self.schemas[_checked_type(object_type)].add(name)

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
        if count > 0:
            self._faults.append(_Fault(count, status, body, dict(headers or {}), route))

    def expire_tokens(self) -> int:
        """Make every issued OAuth access token expired now; returns how many there are."""
        now = self.clock()
        for token, expires_at in self._access_tokens.items():
            self._access_tokens[token] = min(expires_at, now)
        return len(self._access_tokens)

    def _take_fault(self, key: str) -> web.Response | None:
        for fault in self._faults:
            if fault.route is None or fault.route in key:
                fault.remaining -= 1
                if not fault.remaining:
                    self._faults.remove(fault)
                return self._fault_response(fault)
        return None

    def _fault_response(self, fault: _Fault) -> web.Response:
        headers = dict(fault.headers)
        if fault.status == 477:
            headers.setdefault("Retry-After", str(FAULT_RETRY_AFTER_S))
        if fault.status == 429 and self.rate_limit > 0:
            headers = self._rate_headers(0) | headers
        body = fault.body
        if body is None and fault.status == 429:
            body = rate_limit_body()
        elif body is None:
            category, message = _FAULT_TEXT.get(fault.status, ("ERROR", "Injected failure"))
            body = error_body(category, message)
        return _http.json_response(body, fault.status, headers)

    def _authenticate(self, token: str | None) -> None:
        if token in self._private_tokens:
            return
        expires_at = None if token is None else self._access_tokens.get(token)
        if expires_at is None:
            raise ApiError(401, "INVALID_AUTHENTICATION", _NO_CREDENTIALS)
        now = self.clock()
        if now >= expires_at:
            ago = int(now - expires_at)
            raise ApiError(
                401,
                "EXPIRED_AUTHENTICATION",
                f"The OAuth token used to make this call expired {ago} second(s) ago.",
                context={"expire time": [_iso(expires_at)]},
            )

    def _rate_headers(self, remaining: int) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.rate_window_s * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.rate_limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
        }

    async def _travel(self) -> None:
        low, high = self.latency_s
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high))

    def _admit(self, token: str) -> dict[str, str]:
        """Count one arriving request in its window; returns the rate-limit headers.

        HubSpot's burst limit is per private app and, for OAuth, per installing account: a
        refreshed access token does not start a new window. A request arriving at ``now`` is
        refused while ``rate_limit`` others arrived in ``(now - rate_window_s, now]``.

        Raises:
            ApiError: 429 once the window is full; refused requests do not fill it.
        """
        if self.rate_limit <= 0:
            return {}
        now = self.clock()
        account = token if token in self._private_tokens else "oauth"
        window = self._windows.setdefault(account, deque())
        while window and window[0] <= now - self.rate_window_s:
            window.popleft()
        if len(window) >= self.rate_limit:
            raise ApiError(
                429, "RATE_LIMIT", "", headers=self._rate_headers(0), raw=rate_limit_body()
            )
        window.append(now)
        return self._rate_headers(self.rate_limit - len(window))

    def _refresh(self, form: Mapping[str, str]) -> dict[str, object]:
        secret = form.get("client_secret", "").encode()
        if form.get("client_id") != self.client_id or not hmac.compare_digest(
            secret, self._client_secret.encode()
        ):
            raise _oauth_error("BAD_CLIENT_ID", "missing or unknown client id or client secret")
        if form.get("grant_type") != "refresh_token":
            raise _oauth_error("BAD_GRANT_TYPE", "grant_type must be refresh_token")
        refresh = form.get("refresh_token", "")
        if refresh not in self._refresh_tokens:
            raise _oauth_error("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        access = secrets.token_urlsafe(75)  # 100 characters, like HubSpot's
        self._access_tokens[access] = self.clock() + self.token_lifetime_s
        return {
            "token_type": "bearer",
            "refresh_token": refresh,
            "access_token": access,
            "expires_in": int(self.token_lifetime_s),
        }

    def _find(self, t: str, id_value: str, id_property: str | None) -> str | None:
        records = self.objects[t]
        if id_property is None:
            return id_value if id_value in records else None
        if id_property not in _UNIQUE[t]:
            raise _invalid(
                f"Unable to perform update/upsert by non-unique {_TYPE_IDS[t]} property"
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
        wanted = (set(names) & self.schemas[t]) | {"hs_object_id", "createdate", _MODIFIED[t]}
        view: dict[str, object] = {
            "id": record_id,
            "properties": {name: props.get(name) for name in sorted(wanted)},
            "createdAt": props["createdate"],
            "updatedAt": props[_MODIFIED[t]],
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
            elif name in _READ_ONLY:
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
        record[_MODIFIED[t]] = _iso(self.clock())

    def _update_one(self, t: str, item: _UpdateInput) -> dict[str, object]:
        """Apply one batch input; raises ``ApiError`` carrying its ``StandardError`` context."""
        record_id = self._find(t, item.id, item.id_property)
        if record_id is None:
            message = _not_found_message(t)
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


def _not_found_message(t: str) -> str:
    return (
        f"Could not get some {_SINGULAR[t]} objects, they may be deleted or not exist."
        " Check that ids are valid."
    )


SANDBOX = web.AppKey("hubspot_sandbox", HubSpotSandbox)


# ---- request plumbing -------------------------------------------------------------------


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def _peek_json(request: web.Request) -> object:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


async def _read_json(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except json.JSONDecodeError as exc:
        raise _invalid(
            f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    except ValueError as exc:  # not UTF-8
        raise _invalid(f"Invalid input JSON: {exc}") from exc


def _object(value: object, model: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"Invalid input JSON: {model} must be a JSON object")
    return value


def _string_map(value: object, where: str) -> Properties:
    if not isinstance(value, dict):
        raise _invalid(f"Invalid input JSON: {where} must be a JSON object")
    for name, item in value.items():
        if not isinstance(item, str):
            kind = type(item).__name__
            raise _invalid(f"Invalid input JSON: {where}.{name} must be a string, not {kind}")
    return value


def _http_error(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return ApiError(404, "OBJECT_NOT_FOUND", "resource not found")
    return ApiError(exc.status, "VALIDATION_ERROR", exc.reason)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return err.response()
    except web.HTTPException as exc:  # no such route or method
        return _http_error(exc).response()


async def _dispatch(
    sandbox: HubSpotSandbox, request: web.Request, handler: Handler
) -> web.StreamResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return await _guarded(request, handler)
    key = _http.route_key(request)
    sandbox.counts[key] += 1
    if key == f"POST {OAUTH}":
        sandbox.token_requests += 1
    token = _bearer(request)
    body = await _peek_json(request)
    # Not `or`: an aiohttp response is a mapping, and an empty one is falsy.
    fault = sandbox._take_fault(key)
    response = await _api(sandbox, request, handler, token) if fault is None else fault
    route = key.partition(" ")[2]
    query = dict(request.query)
    sandbox.requests.append(
        Recorded(request.method, request.path, route, query, body, response.status, token)
    )
    return response


async def _api(
    sandbox: HubSpotSandbox, request: web.Request, handler: Handler, token: str | None
) -> web.StreamResponse:
    rate_headers: dict[str, str] = {}
    if request.path.startswith(CRM_PREFIX):
        await sandbox._travel()
        try:
            sandbox._authenticate(token)
            assert token is not None
            rate_headers = sandbox._admit(token)
        except ApiError as err:
            return err.response()
    response = await _guarded(request, handler)
    response.headers.update(rate_headers)
    return response


# ---- API handlers -----------------------------------------------------------------------


async def _token(request: web.Request) -> web.Response:
    text = (await request.read()).decode("utf-8", "replace")
    form = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
    return _http.json_response(request.app[SANDBOX]._refresh(form))


def _property_json(t: str, name: str) -> dict[str, object]:
    kind, field_type = _KINDS.get(name, ("string", "text"))
    read_only = name in _READ_ONLY
    stamp = _iso(0)
    return {
        "updatedAt": stamp,
        "createdAt": stamp,
        "name": name,
        "label": name,
        "type": kind,
        "fieldType": field_type,
        "description": "",
        "groupName": _GROUPS[t],
        "options": [],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": name in _UNIQUE[t],
        "hidden": False,
        "hubspotDefined": name in DEFAULT_SCHEMAS[t] and not name.startswith("lance_"),
        "modificationMetadata": {
            "archivable": not read_only,
            "readOnlyDefinition": name in DEFAULT_SCHEMAS[t],
            "readOnlyValue": read_only,
        },
        "formField": not read_only,
    }


async def _list_properties(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    t = _resolve(request.match_info["objectType"])
    results = [_property_json(t, name) for name in sorted(sandbox.schemas[t])]
    return _http.json_response({"results": results})


def _query_properties(request: web.Request) -> list[str]:
    values = request.query.getall("properties", [])
    return [name for value in values for name in value.split(",") if name]


def _found(sandbox: HubSpotSandbox, request: web.Request, t: str) -> str:
    object_id = request.match_info["objectId"]
    record_id = sandbox._find(t, object_id, request.query.get("idProperty"))
    if record_id is None:
        message = "Object not found.  objectId are usually numeric."
        raise ApiError(404, "OBJECT_NOT_FOUND", message, context={"id": [object_id]})
    return record_id


async def _get_object(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    t = _resolve(request.match_info["objectType"])
    record_id = _found(sandbox, request, t)
    names = _query_properties(request) or _DEFAULT_READ[t]
    return _http.json_response(sandbox._view(t, record_id, names))


async def _patch_object(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    t = _resolve(request.match_info["objectType"])
    body = _object(await _read_json(request), "SimplePublicObjectInput")
    if "properties" not in body:
        raise _missing("SimplePublicObjectInput", ["properties"])
    properties = _string_map(body["properties"], "properties")
    record_id = _found(sandbox, request, t)
    errors = sandbox._property_errors(t, properties)
    if errors:
        details: list[dict[str, object]] = [
            {"message": message, "code": code, "context": {"propertyName": [name]}}
            for name, code, message in errors
        ]
        raise ApiError(400, "VALIDATION_ERROR", sandbox._invalid_message(errors), errors=details)
    sandbox._write(t, record_id, properties)
    return _http.json_response(sandbox._view(t, record_id, properties))


def _inputs(body: dict[str, Any], model: str) -> list[object]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise _missing(model, ["inputs"])
    if len(inputs) > MAX_BATCH_INPUTS:
        raise _invalid(
            f"The maximum number of inputs supported in a batch request is {MAX_BATCH_INPUTS}."
            f" {len(inputs)} were given. Please reduce the number of items and try again."
        )
    return inputs


def _update_input(value: object, index: int) -> _UpdateInput:
    item = _object(value, f"inputs[{index}]")
    missing = [name for name in ("id", "properties") if name not in item]
    if missing:
        raise _missing("SimplePublicObjectBatchInput", missing)
    if not isinstance(item["id"], str):
        raise _invalid(f"Invalid input JSON: inputs[{index}].id must be a string")
    properties = _string_map(item["properties"], f"inputs[{index}].properties")
    extra = {name: item.get(name) for name in ("idProperty", "objectWriteTraceId")}
    for name, text in extra.items():
        if text is not None and not isinstance(text, str):
            raise _invalid(f"Invalid input JSON: inputs[{index}].{name} must be a string")
    return _UpdateInput(item["id"], properties, extra["idProperty"], extra["objectWriteTraceId"])


def _batch_response(
    results: list[dict[str, object]], errors: list[dict[str, Any]], started: str, completed: str
) -> web.Response:
    body: dict[str, object] = {"status": "COMPLETE", "results": results}
    if errors:
        body |= {"numErrors": len(errors), "errors": errors}
    body |= {"startedAt": started, "completedAt": completed}
    return _http.json_response(body, 207 if errors else 200)


async def _batch_update(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    t = _resolve(request.match_info["objectType"])
    body = _object(await _read_json(request), "BatchInputSimplePublicObjectBatchInput")
    items = [_update_input(v, i) for i, v in enumerate(_inputs(body, "BatchInput"))]
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=ids.index)
    if duplicates:
        raise _invalid(f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]")
    started = _iso(sandbox.clock())
    results, errors = [], []
    for item in items:
        try:
            results.append(sandbox._update_one(t, item))
        except ApiError as err:
            errors.append(standard_error(err.category, err.message, err.context or {}))
    return _batch_response(results, errors, started, _iso(sandbox.clock()))


def _read_ids(body: dict[str, Any]) -> list[str]:
    ids = []
    for index, value in enumerate(_inputs(body, "BatchReadInputSimplePublicObjectId")):
        item = _object(value, f"inputs[{index}]")
        if not isinstance(item.get("id"), str):
            raise _missing("SimplePublicObjectId", ["id"])
        ids.append(item["id"])
    return list(dict.fromkeys(ids))


def _names(value: object, t: str) -> list[str]:
    if value is None:
        return list(_DEFAULT_READ[t])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid("Invalid input JSON: properties must be an array of strings")
    return value


async def _batch_read(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    t = _resolve(request.match_info["objectType"])
    body = _object(await _read_json(request), "BatchReadInputSimplePublicObjectId")
    ids, names = _read_ids(body), _names(body.get("properties"), t)
    id_property = body.get("idProperty")
    if id_property is not None and not isinstance(id_property, str):
        raise _invalid("Invalid input JSON: idProperty must be a string")
    started = _iso(sandbox.clock())
    results, missing = [], []
    for object_id in ids:
        record_id = sandbox._find(t, object_id, id_property)
        if record_id is None:
            missing.append(object_id)
        else:
            results.append(sandbox._view(t, record_id, names))
    errors = [standard_error("OBJECT_NOT_FOUND", _not_found_message(t), {"ids": missing})]
    return _batch_response(results, errors if missing else [], started, _iso(sandbox.clock()))


# ---- admin surface ----------------------------------------------------------------------


async def _admin_get(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    t, record_id = _resolve(request.match_info["objectType"]), request.match_info["objectId"]
    if record_id not in sandbox.objects[t]:
        raise ApiError(404, "OBJECT_NOT_FOUND", f"no {t} record {record_id}")
    return _http.json_response({"id": record_id, "properties": sandbox.record(t, record_id)})


async def _admin_create(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    body = _object(await _read_json(request), "body")
    properties = _string_map(body.get("properties", {}), "properties")
    record_id = body.get("id")
    try:
        created = sandbox.add_record(
            request.match_info["objectType"],
            properties,
            None if record_id is None else str(record_id),
        )
    except ValueError as exc:
        raise _invalid(str(exc)) from exc
    return _http.json_response({"id": created}, 201)


def _stats(sandbox: HubSpotSandbox) -> dict[str, object]:
    return {
        "counts": dict(sandbox.counts),
        "total": sandbox.counts.total(),
        "tokenRequests": sandbox.token_requests,
    }


async def _admin_requests(request: web.Request) -> web.Response:
    return _http.json_response(_stats(request.app[SANDBOX]))


async def _admin_faults(request: web.Request) -> web.Response:
    body = _object(await _read_json(request), "body")
    count, status = body.get("count"), body.get("status")
    if not isinstance(count, int) or not isinstance(status, int):
        raise _invalid("count and status must be integers")
    fault_body, headers, route = body.get("body"), body.get("headers"), body.get("route")
    if fault_body is not None and not isinstance(fault_body, dict):
        raise _invalid("body must be a JSON object")
    if route is not None and not isinstance(route, str):
        raise _invalid("route must be a string")
    request.app[SANDBOX].fail_next(
        count, status, body=fault_body, headers=_string_map(headers or {}, "headers"), route=route
    )
    return _http.json_response({"queued": max(count, 0)})


async def _admin_reset(request: web.Request) -> web.Response:
    request.app[SANDBOX].reset_counts()
    return web.Response(status=204)


async def _admin_expire(request: web.Request) -> web.Response:
    return _http.json_response({"expired": request.app[SANDBOX].expire_tokens()})


def create_app(sandbox: HubSpotSandbox) -> web.Application:
    """Build the aiohttp application serving the API and the ``/_sim/`` admin surface."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _dispatch(sandbox, request, handler)

    app = web.Application(middlewares=[middleware])
    app[SANDBOX] = sandbox
    add_get, add_post = app.router.add_get, app.router.add_post
    add_post(OAUTH, _token)
    add_get(PROPERTIES, _list_properties)
    add_post(BATCH_READ, _batch_read)
    add_post(BATCH_UPDATE, _batch_update)
    add_get(OBJECT, _get_object)
    app.router.add_patch(OBJECT, _patch_object)
    add_get("/_sim/objects/{objectType}/{objectId}", _admin_get)
    add_post("/_sim/objects/{objectType}", _admin_create)
    add_get("/_sim/requests", _admin_requests)
    add_post("/_sim/faults", _admin_faults)
    add_post("/_sim/reset-counts", _admin_reset)
    add_post("/_sim/expire-tokens", _admin_expire)
    return app


async def serve(sandbox: HubSpotSandbox, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve ``sandbox`` on ``host:port`` (0 picks a free port; see :func:`bound_port`).

    Returns:
        The started runner; the caller owns it and must ``await runner.cleanup()``.
    """
    return await _http.serve_app(create_app(sandbox), host, port)


# ---- inbound webhooks (HubSpot → the bridge) --------------------------------------------


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign_v1(secret: str, body: bytes | str) -> str:
    """``X-HubSpot-Signature`` v1: SHA-256 hex of ``secret + body`` (app webhooks)."""
    return hashlib.sha256(secret.encode() + _bytes(body)).hexdigest()


def sign_v2(secret: str, method: str, uri: str, body: bytes | str) -> str:
    """``X-HubSpot-Signature`` v2: SHA-256 hex of ``secret + method + uri + body`` (workflows)."""
    return hashlib.sha256(f"{secret}{method}{uri}".encode() + _bytes(body)).hexdigest()


def sign_v3(secret: str, method: str, uri: str, body: bytes | str, timestamp_ms: str | int) -> str:
    """``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of ``method + uri + body + timestamp``.

    ``uri`` is the full URL HubSpot called, exactly as sent; ``timestamp_ms`` is the
    ``X-HubSpot-Request-Timestamp`` header text (milliseconds).
    """
    message = f"{method}{uri}".encode() + _bytes(body) + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_headers(
    secret: str,
    body: bytes | str,
    *,
    method: str = "POST",
    uri: str,
    now_ms: int,
    version: Literal["v1", "v2"] = "v1",
) -> dict[str, str]:
    """The headers HubSpot sends with a signed request.

    Args:
        secret: The app's client secret.
        body: The exact bytes sent (empty for a GET).
        method: The HTTP method.
        uri: The full URL called (scheme, host, path, query).
        now_ms: The request timestamp in Unix milliseconds.
        version: ``v1`` for app webhooks, ``v2`` for workflow webhooks; v3 is always added.
    """
    legacy = sign_v1(secret, body) if version == "v1" else sign_v2(secret, method, uri, body)
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature": legacy,
        "X-HubSpot-Signature-Version": version,
        "X-HubSpot-Signature-v3": sign_v3(secret, method, uri, body, now_ms),
        "X-HubSpot-Request-Timestamp": str(now_ms),
        "X-HubSpot-Timeout-Millis": "10000",
        "User-Agent": USER_AGENT,
    }


def _event(
    object_id: int,
    subscription_type: str,
    *,
    portal_id: int,
    app_id: int,
    subscription_id: int,
    event_id: int | None,
    occurred_at_ms: int | None,
    attempt: int,
    clock: Callable[[], float],
) -> dict[str, Any]:
    return {
        "eventId": next(_EVENT_IDS) if event_id is None else event_id,
        "subscriptionId": subscription_id,
        "portalId": portal_id,
        "appId": app_id,
        "occurredAt": int(clock() * 1000) if occurred_at_ms is None else occurred_at_ms,
        "subscriptionType": subscription_type,
        "attemptNumber": attempt,
        "objectId": object_id,
    }


def property_change(
    object_id: int,
    property_name: str,
    value: str,
    *,
    object_type: str = "contact",
    portal_id: int = DEFAULT_PORTAL_ID,
    app_id: int = DEFAULT_APP_ID,
    subscription_id: int = DEFAULT_SUBSCRIPTION_ID,
    event_id: int | None = None,
    occurred_at_ms: int | None = None,
    attempt: int = 0,
    change_source: str = "CRM_UI",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A ``{object_type}.propertyChange`` app-webhook event (``propertyValue`` is the new value).

    ``event_id`` defaults to a process-wide counter and ``occurred_at_ms`` to ``clock()``.
    """
    event = _event(
        object_id,
        f"{object_type}.propertyChange",
        portal_id=portal_id,
        app_id=app_id,
        subscription_id=subscription_id,
        event_id=event_id,
        occurred_at_ms=occurred_at_ms,
        attempt=attempt,
        clock=clock,
    )
    return event | {
        "propertyName": property_name,
        "propertyValue": value,
        "changeSource": change_source,
    }


def creation(
    object_id: int,
    *,
    object_type: str = "contact",
    portal_id: int = DEFAULT_PORTAL_ID,
    app_id: int = DEFAULT_APP_ID,
    subscription_id: int = DEFAULT_SUBSCRIPTION_ID,
    event_id: int | None = None,
    occurred_at_ms: int | None = None,
    attempt: int = 0,
    change_source: str = "CRM_UI",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A ``{object_type}.creation`` app-webhook event, with ``changeFlag: "CREATED"``."""
    event = _event(
        object_id,
        f"{object_type}.creation",
        portal_id=portal_id,
        app_id=app_id,
        subscription_id=subscription_id,
        event_id=event_id,
        occurred_at_ms=occurred_at_ms,
        attempt=attempt,
        clock=clock,
    )
    return event | {"changeFlag": "CREATED", "changeSource": change_source}


async def send_webhook(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    events: list[dict[str, Any]],
    *,
    now_ms: int | None = None,
    max_attempts: int = 3,
) -> int:
    """POST ``events`` to ``url`` as HubSpot does: one JSON array, signed v1 and v3.

    Each attempt serialises the batch once, signs those bytes and sends them; a non-2xx answer,
    a connection error or a 5-second timeout is retried at once with ``attemptNumber`` raised by
    one in every event. ``events`` is not modified.

    Args:
        session: The client session to send with.
        url: The target URL; it is also the signed URI.
        secret: The app's client secret.
        events: 1 to 100 events (see :func:`property_change`, :func:`creation`).
        now_ms: The request timestamp; ``None`` uses the wall clock at each attempt.
        max_attempts: Attempts in total.

    Returns:
        The status of the last attempt.

    Raises:
        ValueError: No events or more than 100, or ``max_attempts`` below 1.
        aiohttp.ClientError: The last attempt could not connect.
    """
    if not 1 <= len(events) <= MAX_WEBHOOK_EVENTS or max_attempts < 1:
        raise ValueError(f"send 1 to {MAX_WEBHOOK_EVENTS} events in at least one attempt")
    timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
    status = 0
    for attempt in range(max_attempts):
        batch = [e | {"attemptNumber": int(e.get("attemptNumber", 0)) + attempt} for e in events]
        body = json.dumps(batch, separators=(",", ":")).encode()
        stamp = int(time.time() * 1000) if now_ms is None else now_ms
        headers = webhook_headers(secret, body, uri=url, now_ms=stamp)
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            if attempt == max_attempts - 1:
                raise
            continue
        if 200 <= status < 300:
            break
    return status


def workflow_payload(
    object_id: int | str, properties: Mapping[str, str], *, object_type: str = "contacts"
) -> dict[str, object]:
    """The body of a workflow "Send a webhook" call (newer editor, chosen properties).

    HubSpot signs these calls v2 (``X-HubSpot-Signature-Version: v2``) plus v3: build the
    headers with ``webhook_headers(secret, body, uri=url, now_ms=…, version="v2")``. The exact
    body of the newer editor is not documented; this shape is the sandbox's assumption.
    """
    t = _checked_type(object_type)
    return {"objectId": int(object_id), "objectType": _SINGULAR[t], "properties": dict(properties)}


def legacy_contact_payload(
    vid: int,
    properties: Mapping[str, str],
    *,
    portal_id: int = DEFAULT_PORTAL_ID,
    timestamp_ms: int | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, object]:
    """A contact workflow webhook body in the legacy v1 contact shape (values with history).

    Signed like :func:`workflow_payload` (v2 plus v3).
    """
    stamp = int(clock() * 1000) if timestamp_ms is None else timestamp_ms

    def versioned(value: str) -> dict[str, object]:
        version = {
            "value": value,
            "source-type": "CRM_UI",
            "source-id": None,
            "source-label": None,
            "timestamp": stamp,
            "selected": False,
        }
        return {"value": value, "versions": [version]}

    return {
        "vid": vid,
        "canonical-vid": vid,
        "merged-vids": [],
        "portal-id": portal_id,
        "is-contact": True,
        "properties": {name: versioned(value) for name, value in properties.items()},
    }

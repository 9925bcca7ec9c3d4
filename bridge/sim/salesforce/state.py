"""The state of a fake Salesforce org: records, sessions, API usage, requests and faults."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bridge.sim import _http
from bridge.sim.salesforce.errors import FAULT_DEFAULTS, RETIRED, UNKNOWN_EXCEPTION, RestError
from bridge.sim.salesforce.ids import ID_SCRAMBLE, base62, normalize_id, with_checksum
from bridge.sim.salesforce.oauth import OAuth
from bridge.sim.salesforce.schema import (
    DEFAULT_SCHEMAS,
    KEY_PREFIXES,
    LATEST_VERSION,
    release_label,
)
from bridge.sim.salesforce.updates import Updates

_PATH_VERSION = re.compile(r"/services/data/v([0-9]+\.[0-9]+)(?:/|$)")
_ROUTE_REGEX = re.compile(r"\{(\w+):[^{}]+\}")


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One request seen by the sandbox (admin requests excluded).

    Attributes:
        method: HTTP method.
        path: Request path, without the query string.
        route: Route template (``<unmatched>`` if none), as in :attr:`SalesforceSandbox.counts`.
        body: Decoded JSON, the token form with secrets masked, raw text, or ``None`` if empty.
        status: HTTP status answered.
    """

    method: str
    path: str
    route: str
    body: Any
    status: int


class SalesforceSandbox(Updates, OAuth):
    """State of the fake org: records, sessions, API usage, recorded requests and faults.

    Serve it with :func:`serve` (or :func:`create_app` and pytest-aiohttp).

    Args:
        clock: Unix-seconds clock for sessions, JWT ``exp`` and ``issued_at``.
        org_id: 18-character organization id.
        client_id: The connected app's consumer key (also the JWT ``iss``).
        client_secret: The consumer secret.
        jwt_public_key_pem: PEM public key verifying JWT bearer assertions; ``None`` refuses
            that grant.
        jwt_username: The only username (JWT ``sub``) with access.
        session_lifetime_s: Inactivity timeout of access tokens; each call resets it.
        daily_limit: API requests allowed (``Sforce-Limit-Info`` ``M``); then 403.
        min_version: Lowest API version served; older ones answer 410.

    Attributes:
        records: sObject type -> 18-character id -> fields (``Id`` included).
        schemas: sObject type -> field API names.
        key_prefixes: sObject type -> the 3-character id prefix.
        api_usage: Requests counted toward ``daily_limit``.
        requests: Every non-admin request, in order.
        counts: Requests per ``"METHOD /route/{template}"``.
        token_requests: Token requests per ``grant_type`` (``""`` when missing).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        org_id: str = "00D000000000001EAA",
        client_id: str = "sandbox-consumer-key",
        client_secret: str = "sandbox-consumer-secret",  # noqa: S107 - a sandbox's own default
        jwt_public_key_pem: bytes | None = None,
        jwt_username: str = "integration@example.com",
        session_lifetime_s: float = 7200,
        daily_limit: int = 100_000,
        min_version: float = 31.0,
    ) -> None:
        self.clock = clock
        self.org_id = org_id
        self.client_id = client_id
        self._client_secret = client_secret
        self._jwt_key = jwt_public_key_pem
        self.jwt_username = jwt_username
        self.session_lifetime_s = session_lifetime_s
        self.daily_limit = daily_limit
        self.min_version = min_version
        self.user_id = with_checksum("005000000000001")
        self.schemas: dict[str, set[str]] = {k: set(v) for k, v in DEFAULT_SCHEMAS.items()}
        self.key_prefixes = dict(KEY_PREFIXES)
        self.records: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in self.schemas}
        self.api_usage = 0
        self.requests: list[Recorded] = []
        self.counts: Counter[str] = Counter()
        self.token_requests: Counter[str] = Counter()
        self._sessions: dict[str, float] = {}  # access token -> last use
        self._refresh_tokens: set[str] = set()
        self._validation_rules: dict[tuple[str, str], str] = {}
        self._faults: _http.FaultQueue[_http.Fault] = _http.FaultQueue()
        self._serial = itertools.count(1)

    def __repr__(self) -> str:
        total = sum(len(by_id) for by_id in self.records.values())
        return f"SalesforceSandbox(org_id={self.org_id!r}, records={total}, {self.limit_info})"

    @property
    def limit_info(self) -> str:
        """The ``Sforce-Limit-Info`` header value, ``api-usage=N/M``."""
        return f"api-usage={self.api_usage}/{self.daily_limit}"

    def add_record(self, sobject: str, fields: Mapping[str, Any] | None = None) -> str:
        """Create a record and return its new 18-character id.

        Raises:
            ValueError: Unknown sObject type or field.
        """
        name = self._known_type(sobject)
        changes, bad = self._changes(name, fields or {})
        if bad:
            raise ValueError(f"{name} has no writable fields {bad}")
        serial = base62(next(self._serial) * ID_SCRAMBLE % 62**10, 10)
        record_id = with_checksum(f"{self.key_prefixes[name]}5g{serial}")
        self.records.setdefault(name, {})[record_id] = {"Id": record_id, **changes}
        return record_id

    def record(self, sobject: str, record_id: str) -> dict[str, Any]:
        """A copy of a record's fields.

        Raises:
            KeyError: No such record.
        """
        found = self._find(self._known_type(sobject), record_id)
        if found is None:
            raise KeyError(f"{sobject} {record_id}")
        return dict(found)

    def add_validation_rule(self, sobject: str, record_id: str, message: str) -> None:
        """Make every update of this record fail with ``FIELD_CUSTOM_VALIDATION_EXCEPTION``."""
        canonical = normalize_id(record_id) or record_id
        self._validation_rules[(self._known_type(sobject), canonical)] = message

    def set_usage(self, used: int) -> None:
        """Set the API requests already used today."""
        self.api_usage = used

    def reset_counts(self) -> None:
        """Forget recorded requests and counters (not the API usage)."""
        self.requests.clear()
        self.counts.clear()
        self.token_requests.clear()

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        body: list[Any] | dict[str, Any] | None = None,
        route: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` and ``body``.

        Args:
            count: How many requests to fail.
            status: HTTP status to answer.
            body: JSON body; ``None`` picks the documented error for the status.
            route: Only requests of this ``"METHOD /template"`` or ``"/template"`` (as in
                :attr:`counts`); ``None`` matches any non-admin request.
        """
        if count < 1:
            return
        if route is not None:  # accept this module's constants, whose {version} has a regex
            route = _ROUTE_REGEX.sub(r"{\1}", route)
        self._faults.add(count, _http.Fault(status, body), route)

    def versions(self) -> list[dict[str, str]]:
        """The ``GET /services/data/`` list, oldest first."""
        return [
            {"label": release_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(math.ceil(self.min_version), LATEST_VERSION + 1)
        ]

    def admit(self, path: str, authorization: str) -> None:
        """Check a REST call: API version, session, then the daily limit; count it.

        Raises:
            RestError: 410 ``GONE``, 401 ``INVALID_SESSION_ID`` or 403 ``REQUEST_LIMIT_EXCEEDED``.
        """
        match = _PATH_VERSION.match(path)
        if match is not None and float(match[1]) < self.min_version:
            raise RestError(410, "GONE", RETIRED)
        self._authenticate(authorization)
        if self.api_usage >= self.daily_limit:
            raise RestError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_usage += 1

    def take_fault(self, route_key: str, token_endpoint: bool) -> web.Response | None:
        """The injected failure answering this request, if one is queued for its route."""
        template = route_key.partition(" ")[2]
        fault = self._faults.take(lambda route: route in (route_key, template))
        return None if fault is None else _fault_response(fault, token_endpoint)

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary for ``GET /_sim/counts``."""
        return {
            "counts": dict(self.counts),
            "tokenRequests": dict(self.token_requests),
            "apiUsage": self.api_usage,
            "dailyLimit": self.daily_limit,
            "records": {name: len(by_id) for name, by_id in self.records.items()},
        }


def _fault_response(fault: _http.Fault, token_endpoint: bool) -> web.Response:
    body = fault.body
    if body is None and token_endpoint:
        body = {"error": "unknown_error", "error_description": "retry your request"}
    elif body is None:
        code, message = FAULT_DEFAULTS.get(fault.status, UNKNOWN_EXCEPTION)
        body = [{"message": message, "errorCode": code}]
    return _http.json_response(body, fault.status)

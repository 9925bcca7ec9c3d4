"""A faithful Salesforce sandbox: the REST API the bridge writes to, and Outbound Messages.

It serves, under one base URL, the OAuth token endpoint (client credentials, JWT bearer and
refresh token grants), the versions list, ``describe``, a SOQL ``query`` limited to
``SELECT … FROM T WHERE Id IN (…)``, sObject Collections retrieve and update, and the single
record ``PATCH``, with the documented shapes: error arrays with ``errorCode``, SaveResults with
``statusCode``, 401 ``INVALID_SESSION_ID``, 403 ``REQUEST_LIMIT_EXCEEDED``, 410 for retired
versions and ``Sforce-Limit-Info`` on every REST answer. The other direction, Salesforce calling
the bridge, is covered by :func:`outbound_message` (the SOAP envelope of a workflow Outbound
Message), :func:`send_outbound_message` (POST it until an Ack) and :func:`is_ack`.

Example::

    sandbox = SalesforceSandbox(clock=clock, daily_limit=1_000)
    lead_id = sandbox.add_record("Lead", {"LastName": "Lovelace", "Company": "Analytical"})
    runner = await serve(sandbox)
    url = base_url(runner)  # POST {url}/services/oauth2/token, then /services/data/v66.0/…
    sandbox.fail_next(1, 503, route="PATCH /services/data/v{version}/composite/sobjects")
    ...
    assert sandbox.record("Lead", lead_id)["Lance_Status__c"] == "found"
    await runner.cleanup()

Admin surface (no auth, not counted): ``GET /_sim/records/{sobject}/{id}``,
``POST /_sim/records/{sobject}`` with the fields (answers ``{"id"}``), ``GET /_sim/counts``,
``POST /_sim/faults`` with ``{"count", "status", "body"?, "route"?}``, ``POST /_sim/reset`` and
``POST /_sim/expire-sessions``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import html
import itertools
import json
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import jwt
from aiohttp import web
from aiohttp.typedefs import Handler
from defusedxml import ElementTree as SafeElementTree  # type: ignore[import-untyped]
from defusedxml.common import DefusedXmlException  # type: ignore[import-untyped]

from bridge.sim import _http

bound_port = _http.bound_port
base_url = _http.base_url

TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a path, not a secret
VERSIONS_PATH = "/services/data/"
REST_PREFIX = "/services/data/v"
ADMIN_PREFIX = "/_sim/"
_V = "/services/data/v{version:[0-9]+\\.[0-9]+}"
DESCRIBE = _V + "/sobjects/{sobject}/describe"
QUERY = _V + "/query"
RECORD = _V + "/sobjects/{sobject}/{id}"
COLLECTION = _V + "/composite/sobjects"
RETRIEVE = _V + "/composite/sobjects/{sobject}"

LATEST_VERSION = 67  # Summer '26
MAX_RECORDS = 200  # sObject Collections update
MAX_RETRIEVE_IDS = 2000  # sObject Collections retrieve (POST)
MAX_CHUNKS = 10  # runs of one type in a collection
MAX_NOTIFICATIONS = 100  # per Outbound Message
JWT_MAX_AHEAD_S = 180  # "exp" at most 3 minutes ahead
MAX_BACKOFF_S = 7200.0  # Outbound Message retries are capped at 2 hours apart
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
LIMIT_HEADER = "Sforce-Limit-Info"

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
OUTBOUND_HEADERS = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'}

KEY_PREFIXES = {"Lead": "00Q", "Contact": "003", "Account": "001"}
_LANCE = ("Lance_Last_Enriched__c", "Lance_Status__c")
_PERSON = ("Id", "FirstName", "LastName", "Email", "Phone", "MobilePhone", "Description")
DEFAULT_SCHEMAS: Mapping[str, frozenset[str]] = {
    "Lead": frozenset((*_PERSON, "Company", "Lance_Person_Id__c", *_LANCE)),
    "Contact": frozenset((*_PERSON, "Lance_Person_Id__c", *_LANCE)),
    "Account": frozenset(
        ("Id", "Name", "Description", "Phone", "Website", "Lance_Company_Id__c", *_LANCE)
    ),
}
_FIELD_TYPES = {
    "Id": "id",
    "Email": "email",
    "Phone": "phone",
    "MobilePhone": "phone",
    "Description": "textarea",
    "Website": "url",
    "Lance_Last_Enriched__c": "datetime",
}
_FIELD_LENGTHS = {"id": 18, "phone": 40, "email": 80, "textarea": 32000, "datetime": 0}
_REQUIRED_FIELDS = frozenset({"Id", "LastName", "Company", "Name"})

_RETIRED = (
    "The requested resource is no longer available. This API version has been retired; "
    "use a supported API version."
)
_NO_RESOURCE = "The requested resource does not exist"
_ROLLED_BACK = (
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header"
)
_TOO_MANY_RECORDS = "record limit reached. cannot submit more than 200 records into this call"
_TOO_MANY_CHUNKS = (
    "Cannot have more than 10 chunks in a single operation. "
    "Please rearrange the data to reduce chunking."
)
_QUERY_FORM = "SELECT f1, f2 FROM T WHERE Id IN ('id1', 'id2', …)"
_SECRET_FORM_FIELDS = frozenset({"client_secret", "assertion", "refresh_token", "password"})
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_SCRAMBLE = 1_000_000_007  # a prime: n -> n*p mod 62**10 is a bijection, ids look varied
_ID15 = re.compile(r"[a-zA-Z0-9]{15}")
_SOQL = re.compile(
    r"\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)\s+"
    r"WHERE\s+Id\s+IN\s*\((?P<ids>[^()]*)\)\s*",
    re.IGNORECASE | re.DOTALL,
)
_SOQL_FIELD = re.compile(r"[A-Za-z]\w*")
_SOQL_ID = re.compile(r"\s*'([^'\\]*)'\s*")
_PATH_VERSION = re.compile(r"/services/data/v([0-9]+\.[0-9]+)(?:/|$)")
_ROUTE_REGEX = re.compile(r"\{(\w+):[^{}]+\}")
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_FAULT_DEFAULTS = {
    401: ("INVALID_SESSION_ID", "Session expired or invalid"),
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    404: ("NOT_FOUND", _NO_RESOURCE),
    503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable, please retry"),
}
_UNKNOWN_EXCEPTION = (
    "UNKNOWN_EXCEPTION",
    "An unexpected error occurred. Please include this ErrorId if you contact support: "
    "1386145113-38862 (-1527283742)",
)


@dataclasses.dataclass(eq=False)
class RestError(Exception):
    """A REST error answer: an array of one ``{"message", "errorCode", "fields"?}``."""

    status: int
    code: str
    message: str
    fields: list[str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def response(self) -> web.Response:
        """The error array answer."""
        item: dict[str, object] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            item["fields"] = self.fields
        return _http.json_response([item], self.status)


@dataclasses.dataclass(eq=False)
class OAuthError(Exception):
    """A token endpoint error: HTTP 400 ``{"error", "error_description"}``."""

    error: str
    description: str

    def __post_init__(self) -> None:
        super().__init__(self.description)

    def response(self) -> web.Response:
        """The OAuth error answer."""
        body = {"error": self.error, "error_description": self.description}
        return _http.json_response(body, 400)


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


@dataclasses.dataclass
class _Fault:
    remaining: int
    status: int
    body: list[Any] | dict[str, Any] | None
    route: str | None


@dataclasses.dataclass(frozen=True)
class _Update:
    sobject: str
    record_id: str
    changes: dict[str, Any]


def with_checksum(id15: str) -> str:
    """The 18-character, case-insensitive form of a 15-character Salesforce id."""
    suffix = ""
    for start in (0, 5, 10):
        chunk = id15[start : start + 5]
        suffix += _ID_ALPHABET[sum(1 << i for i, c in enumerate(chunk) if "A" <= c <= "Z")]
    return id15 + suffix


def normalize_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or ``None`` if malformed."""
    if len(value) == 15 and _ID15.fullmatch(value):
        return with_checksum(value)
    if len(value) == 18 and _ID15.fullmatch(value[:15]):
        full = with_checksum(value[:15])
        return full if full[15:] == value[15:].upper() else None
    return None


def token_signature(client_secret: str, identity_url: str, issued_at: str) -> str:
    """``signature`` of a token answer: base64(HMAC-SHA256(client_secret, id + issued_at))."""
    mac = hmac.new(client_secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def release_label(version: int) -> str:
    """The release name of an API version: 66 -> ``"Spring '26"``, 65 -> ``"Winter '26"``."""
    cycle, season = divmod(version - 63, 3)  # 63.0 is Spring '25; three releases a year
    year = 25 + cycle + (season == 2)  # Winter releases are named after the next year
    return f"{('Spring', 'Summer', 'Winter')[season]} '{year % 100:02d}"


def _base62(number: int, width: int) -> str:
    digits = ""
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits = _BASE62[digit] + digits
    return digits


def _json_error(exc: ValueError) -> RestError:
    where = (
        f" at [line:{exc.lineno}, column:{exc.colno}]"
        if isinstance(exc, json.JSONDecodeError)
        else ""
    )
    return RestError(400, "JSON_PARSER_ERROR", f"Unexpected character{where}")


def _decode_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _json_error(exc) from exc


def _invalid_type(name: str) -> RestError:
    return RestError(
        400,
        "INVALID_TYPE",
        f"sObject type '{name}' is not supported. If you are attempting to use a custom object, "
        "be sure to append the '__c' after the entity name. Please reference your WSDL or the "
        "describe call for the appropriate names.",
    )


def _invalid_field(name: str, sobject: str) -> RestError:
    return RestError(
        400,
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom "
        "field, be sure to append the '__c' after the custom field name. Please reference your "
        "WSDL or the describe call for the appropriate names.",
    )


def _save_error(code: str, message: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    error = {"statusCode": code, "message": message, "fields": list(fields)}
    return {"success": False, "errors": [error]}


def _unwritable(names: Sequence[str]) -> dict[str, Any]:
    return _save_error(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {', '.join(names)}. Please check the security "
        "settings of this field and verify that it is read/write for your profile or "
        "permission set.",
        names,
    )


def _scalar_fields(record: Mapping[str, Any]) -> None:
    for name, value in record.items():
        if name != "attributes" and isinstance(value, dict | list):
            raise RestError(
                400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {name} from a structure"
            )


class SalesforceSandbox:
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
        self._faults: list[_Fault] = []
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
        serial = _base62(next(self._serial) * _ID_SCRAMBLE % 62**10, 10)
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

    def expire_sessions(self) -> None:
        """Invalidate every access token issued so far."""
        self._sessions.clear()

    def set_usage(self, used: int) -> None:
        """Set the API requests already used today."""
        self.api_usage = used

    def issue_refresh_token(self) -> str:
        """A refresh token (as the web-server flow would issue) for the ``refresh_token`` grant."""
        token = f"5Aep861{secrets.token_urlsafe(40)}"
        self._refresh_tokens.add(token)
        return token

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
        self._faults.append(_Fault(count, status, body, route))

    def versions(self) -> list[dict[str, str]]:
        """The ``GET /services/data/`` list, oldest first."""
        return [
            {"label": release_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(math.ceil(self.min_version), LATEST_VERSION + 1)
        ]

    def describe(self, sobject: str, version: str) -> dict[str, Any]:
        """The ``describe`` of an sObject type.

        Raises:
            RestError: 404 ``NOT_FOUND`` for an unknown type.
        """
        name = self._type_or_404(sobject)
        fields = sorted(self.schemas[name], key=lambda f: (f != "Id", f.endswith("__c"), f))
        base = f"/services/data/v{version}/sobjects/{name}"
        return {
            "name": name,
            "label": name,
            "labelPlural": f"{name}s",
            "keyPrefix": self.key_prefixes.get(name),
            "custom": False,
            "createable": True,
            "updateable": True,
            "queryable": True,
            "fields": [_describe_field(f) for f in fields],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def query(self, soql: str, version: str) -> dict[str, Any]:
        """Run ``SELECT f1, f2 FROM T WHERE Id IN ('id1', …)``.

        Raises:
            RestError: 400 ``MALFORMED_QUERY``, ``INVALID_TYPE``, ``INVALID_FIELD`` or
                ``INVALID_QUERY_FILTER_OPERATOR``.
        """
        match = _SOQL.fullmatch(soql)
        if match is None:
            raise RestError(
                400, "MALFORMED_QUERY", f"unexpected token: this sandbox only runs {_QUERY_FORM}"
            )
        sobject = self._canonical_type(match["sobject"])
        if sobject is None:
            raise _invalid_type(match["sobject"])
        fields = [self._query_field(sobject, f.strip()) for f in match["fields"].split(",")]
        ids = dict.fromkeys(_query_id(item) for item in match["ids"].split(","))
        stored = self.records.get(sobject, {})
        rows = [self._row(sobject, i, fields, version) for i in ids if i in stored]
        return {"totalSize": len(rows), "done": True, "records": rows}

    def retrieve(self, sobject: str, body: object, version: str) -> list[dict[str, Any] | None]:
        """sObject Collections retrieve: records in ``ids`` order, ``None`` for unknown ids.

        Raises:
            RestError: 404 for an unknown type, 400 for a bad body or field.
        """
        name = self._type_or_404(sobject)
        ids, fields = _retrieve_body(body)
        canonical = [self._query_field(name, f) for f in fields]
        stored = self.records.get(name, {})
        found = [normalize_id(i) or "" for i in ids]
        return [self._row(name, i, canonical, version) if i in stored else None for i in found]

    def update_collection(self, body: object) -> list[dict[str, Any]]:
        """sObject Collections update: one SaveResult per record, in input order.

        Raises:
            RestError: 400 for a malformed request (the whole request is refused).
        """
        records, all_or_none = self._collection_body(body)
        plans = [self._plan(record) for record in records]
        failed = any(not isinstance(plan, _Update) for plan in plans)
        if all_or_none and failed:
            return [_rolled_back(plan) for plan in plans]
        return [self._apply(plan) if isinstance(plan, _Update) else plan for plan in plans]

    def update_one(self, sobject: str, record_id: str, body: object) -> None:
        """``PATCH /sobjects/{T}/{id}``.

        Raises:
            RestError: 404 for an unknown type or record, 400 for a bad body or a failed rule.
        """
        name = self._type_or_404(sobject)
        canonical = self._existing_id(name, record_id)
        if not isinstance(body, dict):
            raise RestError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        _scalar_fields(body)
        fields = {k: v for k, v in body.items() if k != "attributes"}
        names = self._field_names(name)
        unknown = [k for k in fields if k.lower() not in names]
        if unknown:
            message = f"No such column '{unknown[0]}' on sobject of type {name}"
            raise RestError(400, "INVALID_FIELD", message)
        plan = self._checked_update(name, canonical, fields)
        if not isinstance(plan, _Update):
            error = plan["errors"][0]
            raise RestError(400, error["statusCode"], error["message"], error["fields"])
        self._apply(plan)

    def grant(
        self, form: Mapping[str, str], authorization: str | None, origin: str
    ) -> dict[str, str]:
        """Answer a token request: the token body, or raise :class:`OAuthError`.

        Args:
            form: The decoded form fields.
            authorization: The ``Authorization`` header, if any (HTTP Basic client auth).
            origin: ``scheme://host`` the request came to: the ``instance_url`` to return.
        """
        grant_type = form.get("grant_type", "")
        if grant_type == "client_credentials":
            self._check_client(*_client_auth(form, authorization), secret_required=True)
        elif grant_type == JWT_GRANT:
            self._check_assertion(form.get("assertion", ""), origin)
        elif grant_type == "refresh_token":
            self._check_client(*_client_auth(form, authorization), secret_required=False)
            if form.get("refresh_token") not in self._refresh_tokens:
                raise OAuthError("invalid_grant", "expired access/refresh token")
        else:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        return self._token_body(origin)

    def admit(self, path: str, authorization: str) -> None:
        """Check a REST call: API version, session, then the daily limit; count it.

        Raises:
            RestError: 410 ``GONE``, 401 ``INVALID_SESSION_ID`` or 403 ``REQUEST_LIMIT_EXCEEDED``.
        """
        match = _PATH_VERSION.match(path)
        if match is not None and float(match[1]) < self.min_version:
            raise RestError(410, "GONE", _RETIRED)
        self._authenticate(authorization)
        if self.api_usage >= self.daily_limit:
            raise RestError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_usage += 1

    def take_fault(self, route_key: str, token_endpoint: bool) -> web.Response | None:
        """The injected failure answering this request, if one is queued for its route."""
        template = route_key.partition(" ")[2]
        for fault in self._faults:
            if fault.route is None or fault.route in (route_key, template):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return _fault_response(fault, token_endpoint)
        return None

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary for ``GET /_sim/counts``."""
        return {
            "counts": dict(self.counts),
            "tokenRequests": dict(self.token_requests),
            "apiUsage": self.api_usage,
            "dailyLimit": self.daily_limit,
            "records": {name: len(by_id) for name, by_id in self.records.items()},
        }

    def _canonical_type(self, name: str) -> str | None:
        lowered = name.lower()
        return next((known for known in self.schemas if known.lower() == lowered), None)

    def _known_type(self, name: str) -> str:
        canonical = self._canonical_type(name)
        if canonical is None:
            raise ValueError(f"unknown sObject type {name!r}; known: {sorted(self.schemas)}")
        return canonical

    def _type_or_404(self, name: str) -> str:
        canonical = self._canonical_type(name)
        if canonical is None:
            raise RestError(404, "NOT_FOUND", _NO_RESOURCE)
        return canonical

    def _existing_id(self, sobject: str, record_id: str) -> str:
        canonical = normalize_id(record_id)
        if canonical is None or canonical[:3] != self.key_prefixes.get(sobject):
            message = f"Provided external ID field does not exist or is not accessible: {record_id}"
            raise RestError(404, "NOT_FOUND", message)
        if canonical not in self.records.get(sobject, {}):
            raise RestError(404, "NOT_FOUND", _NO_RESOURCE)
        return canonical

    def _find(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        canonical = normalize_id(record_id)
        return None if canonical is None else self.records.get(sobject, {}).get(canonical)

    def _field_names(self, sobject: str) -> dict[str, str]:
        return {name.lower(): name for name in self.schemas[sobject]}

    def _query_field(self, sobject: str, name: object) -> str:
        if not isinstance(name, str) or not _SOQL_FIELD.fullmatch(name):
            raise RestError(400, "MALFORMED_QUERY", f"unexpected token: {name!r}")
        canonical = self._field_names(sobject).get(name.lower())
        if canonical is None:
            raise _invalid_field(name, sobject)
        return canonical

    def _row(self, sobject: str, record_id: str, fields: list[str], version: str) -> dict[str, Any]:
        stored = self.records[sobject][record_id]
        url = f"/services/data/v{version}/sobjects/{sobject}/{record_id}"
        row: dict[str, Any] = {"attributes": {"type": sobject, "url": url}}
        row.update((field, stored.get(field)) for field in fields)
        return row

    def _changes(self, sobject: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Fields keyed by their API names, and the names that are unknown or read-only."""
        names = self._field_names(sobject)
        changes: dict[str, Any] = {}
        bad: list[str] = []
        for name, value in fields.items():
            canonical = names.get(name.lower())
            if canonical is None or canonical == "Id":
                bad.append(name)
            else:
                changes[canonical] = value
        return changes, bad

    def _collection_body(self, body: object) -> tuple[list[dict[str, Any]], bool]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise RestError(
                400, "INVALID_INPUT", 'The request body must be {"allOrNone", "records": [...]}'
            )
        records: list[object] = body["records"]
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise RestError(400, "JSON_PARSER_ERROR", "Cannot deserialize allOrNone: not a boolean")
        if len(records) > MAX_RECORDS:
            raise RestError(400, "EXCEEDED_ID_LIMIT", _TOO_MANY_RECORDS)
        checked = [self._typed_record(record) for record in records]
        chunks = sum(1 for _ in itertools.groupby(r["attributes"]["type"] for r in checked))
        if chunks > MAX_CHUNKS:
            raise RestError(400, "INVALID_INPUT", _TOO_MANY_CHUNKS)
        return checked, all_or_none

    def _typed_record(self, record: object) -> dict[str, Any]:
        """The record with ``attributes.type`` replaced by the canonical type name."""
        if not isinstance(record, dict):
            raise RestError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
        attributes = record.get("attributes")
        if not isinstance(attributes, dict) or not isinstance(attributes.get("type"), str):
            raise RestError(400, "INVALID_INPUT", "Each record must have attributes.type")
        sobject: str = attributes["type"]
        canonical = self._canonical_type(sobject)
        if canonical is None:
            raise _invalid_type(sobject)
        _scalar_fields(record)
        return {**record, "attributes": {**attributes, "type": canonical}}

    def _plan(self, record: dict[str, Any]) -> _Update | dict[str, Any]:
        sobject: str = record["attributes"]["type"]
        ids = [value for key, value in record.items() if key.lower() == "id"]
        fields = {k: v for k, v in record.items() if k != "attributes" and k.lower() != "id"}
        if not ids or not isinstance(ids[0], str) or not ids[0]:
            return _save_error("MISSING_ARGUMENT", "Id not specified in an update call")
        canonical = normalize_id(ids[0])
        if canonical is None or canonical[:3] != self.key_prefixes.get(sobject):
            message = f"{sobject} ID: id value of incorrect type: {ids[0]}"
            return _save_error("MALFORMED_ID", message, ["Id"])
        if canonical not in self.records.get(sobject, {}):
            return _save_error("ENTITY_IS_DELETED", "entity is deleted")
        return self._checked_update(sobject, canonical, fields)

    def _checked_update(
        self, sobject: str, record_id: str, fields: Mapping[str, Any]
    ) -> _Update | dict[str, Any]:
        changes, bad = self._changes(sobject, fields)
        if bad:
            return _unwritable(bad)
        rule = self._validation_rules.get((sobject, record_id))
        if rule is not None:
            return _save_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule)
        return _Update(sobject, record_id, changes)

    def _apply(self, update: _Update) -> dict[str, Any]:
        self.records[update.sobject][update.record_id].update(update.changes)
        return {"id": update.record_id, "success": True, "errors": []}

    def _check_client(
        self, client_id: str | None, client_secret: str | None, *, secret_required: bool
    ) -> None:
        id_ok = client_id is not None and hmac.compare_digest(client_id, self.client_id)
        secret_ok = (client_secret is None and not secret_required) or (
            client_secret is not None and hmac.compare_digest(client_secret, self._client_secret)
        )
        if not (id_ok and secret_ok):
            raise OAuthError("invalid_client", "invalid client credentials")

    def _check_assertion(self, assertion: str, origin: str) -> None:
        claims = self._verified_claims(assertion)
        if claims["iss"] != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        allowed = {*LOGIN_AUDIENCES, origin}
        if not any(isinstance(a, str) and a.rstrip("/") in allowed for a in audiences):
            raise OAuthError("invalid_grant", "audience is invalid")
        if claims["sub"] != self.jwt_username:
            raise OAuthError("invalid_grant", "invalid assertion")
        expires, now = claims["exp"], self.clock()
        if not isinstance(expires, int | float) or expires > now + JWT_MAX_AHEAD_S:
            raise OAuthError("invalid_grant", "invalid assertion")
        if expires <= now:
            raise OAuthError("invalid_grant", "expired authorization code")

    def _verified_claims(self, assertion: str) -> dict[str, Any]:
        if self._jwt_key is None or not assertion:
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            # Time claims are checked against the injected clock, audience and issuer by hand.
            return jwt.decode(
                assertion,
                self._jwt_key,
                algorithms=["RS256"],
                options={
                    "require": ["iss", "sub", "aud", "exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc

    def _token_body(self, origin: str) -> dict[str, str]:
        now = self.clock()
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
        self._sessions[token] = now
        issued_at = str(int(now * 1000))
        identity = f"https://login.salesforce.com/id/{self.org_id}/{self.user_id}"
        return {
            "access_token": token,
            "signature": token_signature(self._client_secret, identity, issued_at),
            "scope": "api",
            "instance_url": origin,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }

    def _authenticate(self, authorization: str) -> None:
        scheme, _, token = authorization.partition(" ")
        last_use = self._sessions.get(token) if scheme.lower() in ("bearer", "oauth") else None
        now = self.clock()
        if last_use is None or now - last_use >= self.session_lifetime_s:
            self._sessions.pop(token, None)
            raise RestError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        self._sessions[token] = now  # the timeout counts inactivity


def _describe_field(name: str) -> dict[str, Any]:
    kind = _FIELD_TYPES.get(name, "string")
    return {
        "name": name,
        "label": name.removesuffix("__c").replace("_", " "),
        "type": kind,
        "length": _FIELD_LENGTHS.get(kind, 255),
        "custom": name.endswith("__c"),
        "nillable": name not in _REQUIRED_FIELDS,
        "createable": name != "Id",
        "updateable": name != "Id",
        "filterable": True,
    }


def _query_id(item: str) -> str:
    match = _SOQL_ID.fullmatch(item)
    if match is None:
        raise RestError(400, "MALFORMED_QUERY", f"unexpected token: {item.strip()!r}")
    canonical = normalize_id(match[1])
    if canonical is None:
        raise RestError(400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {match[1]}")
    return canonical


def _retrieve_body(body: object) -> tuple[list[str], list[object]]:
    ids = body.get("ids") if isinstance(body, dict) else None
    fields = body.get("fields") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise RestError(400, "INVALID_INPUT", "ids: a non-empty list of record ids is required")
    if not isinstance(fields, list) or not fields:
        raise RestError(400, "INVALID_INPUT", "fields: a non-empty list of field names is required")
    if len(ids) > MAX_RETRIEVE_IDS:
        raise RestError(
            400, "EXCEEDED_ID_LIMIT", f"cannot retrieve more than {MAX_RETRIEVE_IDS} records"
        )
    return ids, fields


def _rolled_back(plan: _Update | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(plan, _Update):
        return plan
    result = _save_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", _ROLLED_BACK)
    return {"id": plan.record_id, **result}


def _fault_response(fault: _Fault, token_endpoint: bool) -> web.Response:
    body = fault.body
    if body is None and token_endpoint:
        body = {"error": "unknown_error", "error_description": "retry your request"}
    elif body is None:
        code, message = _FAULT_DEFAULTS.get(fault.status, _UNKNOWN_EXCEPTION)
        body = [{"message": message, "errorCode": code}]
    return _http.json_response(body, fault.status)


def _client_auth(
    form: Mapping[str, str], authorization: str | None
) -> tuple[str | None, str | None]:
    """``(client_id, client_secret)`` from HTTP Basic if present, else from the form."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return form.get("client_id"), form.get("client_secret")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _form(request: web.Request, raw: bytes) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        return {}
    return dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _recorded_body(path: str, raw: bytes) -> Any:
    if not raw:
        return None
    if path == TOKEN_PATH:
        pairs = parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)
        return {k: "***" if k in _SECRET_FORM_FIELDS else v for k, v in pairs}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    if request.path == TOKEN_PATH:
        return OAuthError("invalid_request", exc.reason).response()
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}"
        return RestError(405, "METHOD_NOT_ALLOWED", message).response()
    if exc.status == 404:
        return RestError(404, "NOT_FOUND", _NO_RESOURCE).response()
    return RestError(exc.status, exc.reason.upper().replace(" ", "_"), exc.reason).response()


async def _answer(
    sandbox: SalesforceSandbox, request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        if request.path.startswith(REST_PREFIX):
            sandbox.admit(request.path, request.headers.get("Authorization", ""))
        return await handler(request)
    except (RestError, OAuthError) as err:
        return err.response()
    except web.HTTPException as exc:  # no such route or method, body too large
        return _http_error(exc, request)


@web.middleware
async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    sandbox = request.app[SANDBOX]
    if request.path.startswith(ADMIN_PREFIX):
        return await _admin_guarded(request, handler)
    key = _http.route_key(request)
    sandbox.counts[key] += 1
    raw = await request.read()
    response: web.StreamResponse | None = sandbox.take_fault(key, request.path == TOKEN_PATH)
    if response is None:
        response = await _answer(sandbox, request, handler)
    if request.path.startswith(REST_PREFIX):
        response.headers[LIMIT_HEADER] = sandbox.limit_info
    route = key.partition(" ")[2]
    body = _recorded_body(request.path, raw)
    sandbox.requests.append(Recorded(request.method, request.path, route, body, response.status))
    return response


async def _token(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    form = _form(request, await request.read())
    sandbox.token_requests[form.get("grant_type", "")] += 1
    body = sandbox.grant(form, request.headers.get("Authorization"), _origin(request))
    return _http.json_response(body)


async def _versions(request: web.Request) -> web.Response:
    return _http.json_response(request.app[SANDBOX].versions())


async def _describe(request: web.Request) -> web.Response:
    info = request.match_info
    return _http.json_response(request.app[SANDBOX].describe(info["sobject"], info["version"]))


async def _query(request: web.Request) -> web.Response:
    soql = request.query.get("q")
    if not soql:
        raise RestError(400, "MALFORMED_QUERY", "A query string has to be specified")
    version = request.match_info["version"]
    return _http.json_response(request.app[SANDBOX].query(soql, version))


async def _retrieve(request: web.Request) -> web.Response:
    body = _decode_json(await request.read())
    info = request.match_info
    records = request.app[SANDBOX].retrieve(info["sobject"], body, info["version"])
    return _http.json_response(records)


async def _update_collection(request: web.Request) -> web.Response:
    body = _decode_json(await request.read())
    return _http.json_response(request.app[SANDBOX].update_collection(body))


async def _update_one(request: web.Request) -> web.Response:
    body = _decode_json(await request.read())
    info = request.match_info
    request.app[SANDBOX].update_one(info["sobject"], info["id"], body)
    return web.Response(status=204)


class _AdminError(Exception):
    """An admin request that cannot be served; answered 400 or 404 ``{"error"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _admin_guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except _AdminError as err:
        return _http.json_response({"error": str(err)}, err.status)
    except web.HTTPException as exc:
        return _http.json_response({"error": exc.reason}, exc.status)


async def _admin_json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise _AdminError(400, "the body must be JSON") from exc
    if not isinstance(body, dict):
        raise _AdminError(400, "the body must be a JSON object")
    return body


async def _admin_get_record(request: web.Request) -> web.Response:
    info = request.match_info
    try:
        return _http.json_response(request.app[SANDBOX].record(info["sobject"], info["id"]))
    except (KeyError, ValueError) as exc:
        raise _AdminError(404, f"no record {info['sobject']} {info['id']}") from exc


async def _admin_add_record(request: web.Request) -> web.Response:
    fields = await _admin_json(request)
    try:
        record_id = request.app[SANDBOX].add_record(request.match_info["sobject"], fields)
    except ValueError as exc:
        raise _AdminError(400, str(exc)) from exc
    return _http.json_response({"id": record_id}, 201)


async def _admin_counts(request: web.Request) -> web.Response:
    return _http.json_response(request.app[SANDBOX].stats())


async def _admin_faults(request: web.Request) -> web.Response:
    body = await _admin_json(request)
    count, status, route = body.get("count", 1), body.get("status"), body.get("route")
    fault_body = body.get("body")
    if not (isinstance(count, int) and isinstance(status, int) and 100 <= status <= 599):
        raise _AdminError(400, 'use {"count": int, "status": 100..599, "body"?, "route"?}')
    if not (route is None or isinstance(route, str)) or not isinstance(
        fault_body, list | dict | None
    ):
        raise _AdminError(400, "route must be a string and body a JSON array or object")
    request.app[SANDBOX].fail_next(count, status, body=fault_body, route=route)
    return _http.json_response({"queued": count})


async def _admin_reset(request: web.Request) -> web.Response:
    request.app[SANDBOX].reset_counts()
    return web.Response(status=204)


async def _admin_expire(request: web.Request) -> web.Response:
    request.app[SANDBOX].expire_sessions()
    return web.Response(status=204)


SANDBOX = web.AppKey("salesforce_sandbox", SalesforceSandbox)


def create_app(sandbox: SalesforceSandbox) -> web.Application:
    """Build the aiohttp application serving ``sandbox`` (API and ``/_sim/`` admin surface)."""
    app = web.Application(middlewares=[_dispatch])
    app[SANDBOX] = sandbox
    router = app.router
    router.add_post(TOKEN_PATH, _token)
    router.add_get(VERSIONS_PATH, _versions)
    router.add_get(DESCRIBE, _describe)
    router.add_get(QUERY, _query)
    router.add_patch(COLLECTION, _update_collection)
    router.add_patch(COLLECTION + "/", _update_collection)  # the docs show a trailing slash
    router.add_post(RETRIEVE, _retrieve)
    router.add_patch(RECORD, _update_one)
    router.add_get("/_sim/records/{sobject}/{id}", _admin_get_record)
    router.add_post("/_sim/records/{sobject}", _admin_add_record)
    router.add_get("/_sim/counts", _admin_counts)
    router.add_post("/_sim/faults", _admin_faults)
    router.add_post("/_sim/reset", _admin_reset)
    router.add_post("/_sim/expire-sessions", _admin_expire)
    return app


async def serve(
    sandbox: SalesforceSandbox, host: str = "127.0.0.1", port: int = 0
) -> web.AppRunner:
    """Serve ``sandbox`` on ``host:port`` (0 picks a free port; see :func:`bound_port`).

    Returns:
        The started runner; the caller owns it and must ``await runner.cleanup()``.
    """
    return await _http.serve_app(create_app(sandbox), host, port)


# --- Outbound Messages: Salesforce -> the bridge -------------------------------------------

ACK_RESPONSE = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>\n'
    b' <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack></notificationsResponse>\n"
    b"</soapenv:Body></soapenv:Envelope>"
)


def _xml_text(value: str) -> str:
    if _XML_INVALID.search(value):
        raise ValueError(f"{value!r} holds characters XML 1.0 cannot carry")
    return html.escape(value, quote=False)


def _xml_name(name: str) -> str:
    if not _XML_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an sObject or field API name")
    return name


def _notification(notification_id: str, sobject: str, fields: Mapping[str, str | None]) -> str:
    record_id = fields.get("Id")
    if not record_id:
        raise ValueError(f"notification {notification_id!r} has no Id field")
    ordered = {"Id": record_id, **{k: v for k, v in fields.items() if v is not None}}
    values = "".join(
        f"     <sf:{_xml_name(k)}>{_xml_text(v)}</sf:{k}>\n" for k, v in ordered.items()
    )
    return (
        "   <Notification>\n"
        f"    <Id>{_xml_text(notification_id)}</Id>\n"
        f'    <sObject xsi:type="sf:{_xml_name(sobject)}" xmlns:sf="{SOBJECT_NS}">\n'
        f"{values}"
        "    </sObject>\n"
        "   </Notification>\n"
    )


def outbound_message(
    org_id: str,
    notifications: Sequence[tuple[str, str, Mapping[str, str | None]]],
    *,
    action_id: str = "04k000000000001AAA",
    session_id: str | None = None,
    instance_url: str = "https://example.my.salesforce.com",
    api_version: str = "66.0",
) -> bytes:
    """The SOAP envelope Salesforce POSTs for a workflow Outbound Message.

    Args:
        org_id: ``OrganizationId`` (18 characters; URLs carry its first 15).
        notifications: ``(notification Id, sObject type, fields)`` each; fields must include
            ``"Id"``; fields set to ``None`` are left out, as Salesforce leaves out nulls.
        action_id: ``ActionId`` of the rule or action that sent it.
        session_id: ``SessionId``, or ``None`` for ``xsi:nil`` ("Send Session ID" off).
        instance_url: Base of ``EnterpriseUrl`` and ``PartnerUrl``.
        api_version: API version in those URLs.

    Returns:
        The UTF-8 envelope.

    Raises:
        ValueError: Not 1 to 100 notifications, a missing ``Id``, a bad name or character.
    """
    if not 1 <= len(notifications) <= MAX_NOTIFICATIONS:
        raise ValueError(f"an Outbound Message carries 1 to {MAX_NOTIFICATIONS} notifications")
    session = (
        '<SessionId xsi:nil="true"/>'
        if session_id is None
        else f"<SessionId>{_xml_text(session_id)}</SessionId>"
    )
    soap_path = f"{api_version}/{org_id[:15]}"
    body = "".join(_notification(*notification) for notification in notifications)
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        " <soapenv:Body>\n"
        f'  <notifications xmlns="{OUTBOUND_NS}">\n'
        f"   <OrganizationId>{_xml_text(org_id)}</OrganizationId>\n"
        f"   <ActionId>{_xml_text(action_id)}</ActionId>\n"
        f"   {session}\n"
        f"   <EnterpriseUrl>{_xml_text(instance_url)}/services/Soap/c/{soap_path}</EnterpriseUrl>\n"
        f"   <PartnerUrl>{_xml_text(instance_url)}/services/Soap/u/{soap_path}</PartnerUrl>\n"
        f"{body}"
        "  </notifications>\n"
        " </soapenv:Body>\n"
        "</soapenv:Envelope>\n"
    )
    return text.encode()


def is_ack(body: bytes) -> bool:
    """Whether a reply is the SOAP ``notificationsResponse`` with ``<Ack>true</Ack>``.

    Parsed with defusedxml and no DTD allowed, so hostile replies are refused, not expanded.
    """
    try:
        root = SafeElementTree.fromstring(body, forbid_dtd=True)
    except (SafeElementTree.ParseError, DefusedXmlException, ValueError):
        return False
    if root.tag != f"{{{SOAP_ENV_NS}}}Envelope":
        return False
    ack = root.find(
        f"{{{SOAP_ENV_NS}}}Body/{{{OUTBOUND_NS}}}notificationsResponse/{{{OUTBOUND_NS}}}Ack"
    )
    return ack is not None and (ack.text or "").strip() == "true"


async def _deliver(session: aiohttp.ClientSession, url: str, envelope: bytes) -> bool:
    try:
        async with session.post(url, data=envelope, headers=OUTBOUND_HEADERS) as response:
            reply = await response.read()
    except (aiohttp.ClientError, TimeoutError):
        return False
    return response.status == 200 and is_ack(reply)


async def send_outbound_message(
    session: aiohttp.ClientSession,
    url: str,
    envelope: bytes,
    *,
    max_attempts: int = 3,
    backoff_s: float = 0.0,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> bool:
    """POST an Outbound Message as Salesforce does, retrying until it is acknowledged.

    A non-200 status, a body that is not the SOAP Ack, ``<Ack>false</Ack>`` and connection
    errors all count as failed attempts.

    Args:
        session: The client session to send with.
        url: The endpoint configured on the Outbound Message.
        envelope: From :func:`outbound_message`.
        max_attempts: Attempts before giving up.
        backoff_s: Wait before the second attempt, doubled each time (0 in tests).
        max_backoff_s: Cap on the wait (Salesforce caps it at 2 hours).

    Returns:
        Whether an attempt was acknowledged.
    """
    for attempt in range(max_attempts):
        if attempt and backoff_s:
            await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), max_backoff_s))
        if await _deliver(session, url, envelope):
            return True
    return False


def _doctype_envelope(doctype: str, value: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}"><soapenv:Body>'
        f'<notifications xmlns="{OUTBOUND_NS}"><OrganizationId>{value}</OrganizationId>'
        "</notifications></soapenv:Body></soapenv:Envelope>\n"
    ).encode()


_LAUGHS = "\n".join(
    ['<!ENTITY lol "lol">']
    + [f'<!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">' for i in range(1, 10)]
)
XML_BOMB = _doctype_envelope(f"<!DOCTYPE lolz [\n{_LAUGHS}\n]>", "&lol9;")
"""Billion laughs: nine levels of ten-fold entity expansion inside a SOAP envelope."""

EXTERNAL_ENTITY = _doctype_envelope(
    '<!DOCTYPE soapenv:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"
)
"""XXE: an external entity reading ``file:///etc/passwd`` into ``OrganizationId``."""

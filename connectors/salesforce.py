"""Salesforce, both directions: Outbound Messages trigger enrichments; results update records.

Inbound (``POST /hooks/salesforce``, or ``/hooks/salesforce/<name>`` to pick one of several orgs):

- Outbound Messages (SOAP, ``text/xml``), sent by a Flow or workflow rule: 1 to 100
  ``Notification`` elements, each a Lead, Contact or Account with its fields. Salesforce signs
  nothing, so a message is accepted only when its ``OrganizationId`` is ``organization_id``
  (15- and 18-character forms match) and, when ``action_ids`` is set, its ``ActionId`` is one of
  them. The XML is parsed with defusedxml and no DTD: entity expansion (XML bombs) and external
  entities are refused. The notification ``Id`` is the dedupe key (``notification:<Id>``), so a
  message Salesforce delivers again triggers nothing new. The reply is the SOAP
  ``notificationsResponse`` ``<Ack>true</Ack>``, sent only once the events are durable; refusals
  are SOAP faults. Lead and Contact trigger the configured fields (emails, phones) of the
  person in their Lance-id field; Account tracks the company summary (Lance starts those).
- Flow HTTP Callouts (JSON, ``application/json``), authenticated with ``Authorization: Bearer
  <flow_token>``: one record ``{"recordId", "objectType", "lanceId", "fields"?}`` or a list of up
  to 200. The dedupe key is the SHA-256 of the body (``flow:<hex>:<index>``): the very same body
  sent again triggers nothing. Answered with the JSON summary, refusals with the JSON error.

Outbound: ``PATCH /services/data/v{api_version}/composite/sobjects`` (sObject Collections, at
most 200 records per request, ``allOrNone: false``), all events of one record merged into one
record; per-record SaveResults become per-delivery outcomes (validation errors and the like
are ``dead`` with Salesforce's words, lock contention is retried). Each mapped field has a
write policy, as for HubSpot: ``fill_if_empty`` (default; the current values are read first
through sObject Collections retrieve), ``overwrite`` or ``never``; an empty Lance value never
clears a field. Auth: OAuth 2.0 client credentials or JWT bearer, the token cached with its
``instance_url`` and fetched again once on ``INVALID_SESSION_ID``. ``REQUEST_LIMIT_EXCEEDED``
(a 403) is throttling, never a reason to log in again; ``Sforce-Limit-Info`` is tracked and,
past ``slow_down_at`` of the daily cap, deliveries wait instead of spending the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import html
import json
import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiohttp
import jwt
import pydantic
from aiohttp import web
from defusedxml import ElementTree as SafeElementTree  # type: ignore[import-untyped]
from defusedxml.common import DefusedXmlException  # type: ignore[import-untyped]
from pydantic import Field, SecretStr

from bridge import classify, connector, errors, model, registry
from bridge.classify import Outcome
from bridge.connector import Event, HookError, HookRequest
from connectors import mapping

logger = logging.getLogger(__name__)

MAX_RECORDS = 200  # sObject Collections update
MAX_RETRIEVE_IDS = 2000  # sObject Collections retrieve
MAX_NOTIFICATIONS = 100  # per Outbound Message
MAX_FLOW_RECORDS = 200  # per Flow callout
JWT_LIFETIME_S = 180  # Salesforce refuses an "exp" more than 3 minutes ahead
SLOW_DOWN_DELAY_S = 900.0
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a path, not a secret
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LIMIT_HEADER = "Sforce-Limit-Info"
# The Sforce-Limit-Info segments that count toward a cap Salesforce enforces with 403s.
DAILY_CAPS = ("api-usage", "per-app-api-usage")

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV_NS = "http://www.w3.org/2003/05/soap-envelope"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
SOAP_MEDIA_TYPES = frozenset({"text/xml", "application/soap+xml"})
JSON_MEDIA_TYPE = "application/json"
ACK_RESPONSE = (
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}"><soapenv:Body>\n'
    f' <notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>\n'
    "</soapenv:Body></soapenv:Envelope>"
).encode()

# Per-record statusCodes that retrying the same write cannot fix.
PERMANENT_CODES = frozenset(
    {
        "CANNOT_UPDATE_CONVERTED_LEAD",
        "DUPLICATES_DETECTED",
        "DUPLICATE_VALUE",
        "ENTITY_IS_DELETED",
        "ENTITY_IS_LOCKED",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "FIELD_FILTER_VALIDATION_EXCEPTION",
        "FIELD_INTEGRITY_EXCEPTION",
        "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_EMAIL_ADDRESS",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_ID_FIELD",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "INVALID_TYPE",
        "MALFORMED_ID",
        "MISSING_ARGUMENT",
        "NOT_FOUND",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "REQUIRED_FIELD_MISSING",
        "STRING_TOO_LONG",
    }
)
# Token endpoint error descriptions and what the administrator should do about them.
_TOKEN_HINTS = (
    (
        "hasn't approved this consumer",
        "pre-authorise the integration user: in the app's OAuth policies choose 'Admin approved"
        " users are pre-authorized' and add the user's profile or permission set",
    ),
    (
        "audience is invalid",
        "set audience to https://login.salesforce.com (production) or"
        " https://test.salesforce.com (sandbox)",
    ),
    (
        "invalid assertion",
        "check client_id (the consumer key), username, and that private_key_file matches the"
        " certificate uploaded to the app",
    ),
    ("expired authorization code", "the JWT had expired on arrival: check this machine's clock"),
    (
        "invalid client credentials",
        "check client_id (the consumer key) and client_secret (the consumer secret)",
    ),
    ("client identifier invalid", "check client_id: the consumer key of the app"),
    (
        "not supported on this domain",
        "client credentials need login_url set to the org's My Domain URL"
        " (https://<domain>.my.salesforce.com)",
    ),
    (
        "no client credentials user enabled",
        "choose a Run As user in the app's client credentials flow settings",
    ),
    ("grant type not supported", "enable this OAuth flow in the app's settings"),
)
_SALESFORCE_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_SHARED_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_UUID4 = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
_UUID4_RE = re.compile(_UUID4)
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_LIMIT_SEGMENT = re.compile(r"^\s*([A-Za-z][\w.-]*)\s*=\s*(\d+)\s*/\s*(\d+)")
_NO_SUCH_COLUMN = re.compile(r"No such column '(\w+)'")

ObjectType = Literal["Lead", "Contact", "Account"]
OBJECT_TYPES: tuple[ObjectType, ...] = ("Lead", "Contact", "Account")
_BY_LOWER: dict[str, ObjectType] = {name.lower(): name for name in OBJECT_TYPES}
RecordKey = tuple[str, str]  # (sObject type, record id)
_Wanted = dict[str, tuple[str, mapping.PropertyMap]]  # field -> (value, its mapping)


def _is_json(request: HookRequest) -> bool:
    """Whether a request is a Flow callout (JSON) rather than an Outbound Message (SOAP)."""
    return _media_type(request.headers) == JSON_MEDIA_TYPE


def object_type_of(name: str) -> ObjectType | None:
    """``Lead``, ``Contact`` or ``Account`` for any casing of those names, else ``None``."""
    return _BY_LOWER.get(name.strip().lower())


def id18(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character Salesforce id, or ``None`` if malformed."""
    if not _SALESFORCE_ID.fullmatch(value):
        return None
    if len(value) == 18:
        return value
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(value[start : start + 5]) if char.isupper())
        suffix += _CHECKSUM_ALPHABET[bits]
    return value + suffix


def same_org_id(given: str, expected: str) -> bool:
    """Whether two 15- or 18-character ids name the same thing (the first 15 are the id)."""
    valid = len(given) in (15, 18) and len(expected) in (15, 18)
    return valid and hmac.compare_digest(given[:15].encode(), expected[:15].encode())


def parse_limit_info(value: str | None) -> dict[str, tuple[int, int]]:
    """``Sforce-Limit-Info`` as ``{segment: (used, limit)}``; unreadable segments are skipped.

    ``"api-usage=10018/100000; per-app-api-usage=17/250(appName=app)"`` gives
    ``{"api-usage": (10018, 100000), "per-app-api-usage": (17, 250)}``.
    """
    found: dict[str, tuple[int, int]] = {}
    for segment in re.split(r"[;,]", value or ""):
        match = _LIMIT_SEGMENT.match(segment)
        if match:
            found[match[1].lower()] = (int(match[2]), int(match[3]))
    return found


# -- configuration -----------------------------------------------------------------------------


class ObjectSettings(pydantic.BaseModel):
    """How one sObject type (Lead, Contact or Account) is enriched and written back."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    DEFAULT_FIELDS: ClassVar[dict[str, str]] = {}

    lance_id_field: str = Field(min_length=1)
    enrich: tuple[Literal["emails", "phones", "summary"], ...]
    fields: dict[str, mapping.PropertyMap] = Field(default_factory=dict)

    @pydantic.field_validator("fields", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        # Entries add to or replace the defaults; `policy = "never"` switches one off.
        if isinstance(value, Mapping):
            return {**cls.DEFAULT_FIELDS, **value}
        return value

    @pydantic.field_validator("fields")
    @classmethod
    def _api_names(cls, value: dict[str, mapping.PropertyMap]) -> dict[str, mapping.PropertyMap]:
        bad = [name for name in value if not _API_NAME.match(name)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a field API name (e.g. Phone, Lance_Status__c)")
        return value

    @pydantic.field_validator("lance_id_field")
    @classmethod
    def _api_name(cls, value: str) -> str:
        if not _API_NAME.match(value):
            raise ValueError(f"{value!r} is not a field API name (e.g. Lance_Person_Id__c)")
        return value

    def writable(self) -> dict[str, mapping.PropertyMap]:
        """The mapped fields whose policy allows writing."""
        return {name: m for name, m in self.fields.items() if m.policy != "never"}


class PersonSettings(ObjectSettings):
    """``Lead`` and ``Contact``: a person's emails and phones."""

    DEFAULT_FIELDS: ClassVar[dict[str, str]] = {
        "Email": "emails[0]",
        "Phone": "phones[0]",
        "MobilePhone": "phones[1]",
    }

    lance_id_field: str = Field(default="Lance_Person_Id__c", min_length=1)
    enrich: tuple[Literal["emails", "phones"], ...] = ("emails", "phones")
    fields: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(PersonSettings.DEFAULT_FIELDS)
    )


class AccountSettings(ObjectSettings):
    """``Account``: a company's summary (tracked, since Lance starts those itself)."""

    DEFAULT_FIELDS: ClassVar[dict[str, str]] = {"Description": "summary"}

    lance_id_field: str = Field(default="Lance_Company_Id__c", min_length=1)
    enrich: tuple[Literal["summary"], ...] = ("summary",)
    fields: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(AccountSettings.DEFAULT_FIELDS)
    )


class SalesforceConfig(connector.ConnectorConfig):
    """Settings of a Salesforce connector (``type = "salesforce"``)."""

    type: str = "salesforce"
    login_url: str = "https://login.salesforce.com"
    auth: Literal["client_credentials", "jwt_bearer"] = "client_credentials"
    client_id: str = ""
    client_secret: SecretStr | None = None
    username: str = ""
    private_key_file: Path | None = None
    audience: str = ""
    api_version: str = "66.0"
    organization_id: str = ""
    action_ids: tuple[str, ...] = ()
    flow_token: SecretStr | None = None
    slow_down_at: float = Field(default=0.9, gt=0, le=1)
    slow_down_delay_seconds: float = Field(default=SLOW_DOWN_DELAY_S, ge=0)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    lead: PersonSettings = Field(default_factory=PersonSettings)
    contact: PersonSettings = Field(default_factory=PersonSettings)
    account: AccountSettings = Field(default_factory=AccountSettings)

    _secrets_not_blank = pydantic.field_validator("client_secret", "flow_token")(
        connector.not_blank
    )

    @pydantic.field_validator("login_url", "audience")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value:
            return value
        parts = urllib.parse.urlsplit(value)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(
                "must be a URL starting with https:// (e.g. https://acme.my.salesforce.com)"
            )
        if not parts.hostname or parts.path or parts.query:
            raise ValueError(
                "must be the host only, e.g. https://acme.my.salesforce.com"
                " (no /services/oauth2/token: the bridge adds it)"
            )
        return value

    @pydantic.field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        version = value.strip().removeprefix("v")
        if not re.fullmatch(r"\d{2,3}\.0", version):
            raise ValueError(f"{value!r} is not an API version like 66.0")
        return version

    @pydantic.field_validator("organization_id")
    @classmethod
    def _org_id(cls, value: str) -> str:
        if value and not (value.startswith("00D") and _SALESFORCE_ID.fullmatch(value)):
            raise ValueError(
                "a 15- or 18-character id starting with 00D (Setup → Company Information)"
            )
        return value

    @pydantic.field_validator("action_ids")
    @classmethod
    def _action_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [item for item in value if not _SALESFORCE_ID.fullmatch(item)]
        if bad:
            raise ValueError(f"{bad[0][:40]!r} is not a 15- or 18-character Outbound Message id")
        return value

    @pydantic.model_validator(mode="after")
    def _auth_complete(self) -> SalesforceConfig:
        if not self.client_id:
            raise ValueError("set client_id: the consumer key of the Salesforce app")
        host = urllib.parse.urlsplit(self.login_url).hostname
        if self.auth == "client_credentials" and host in _SHARED_LOGIN_HOSTS:
            raise ValueError(
                f"auth = client_credentials needs login_url set to your My Domain URL"
                f" (https://<domain>.my.salesforce.com); {host} refuses this flow"
            )
        if self.auth == "jwt_bearer" and not (self.username and self.private_key_file):
            raise ValueError("auth = jwt_bearer also needs username and private_key_file")
        return self

    def objects(self) -> dict[ObjectType, ObjectSettings]:
        """The settings of each sObject type."""
        return {"Lead": self.lead, "Contact": self.contact, "Account": self.account}


class FlowRecord(pydantic.BaseModel):
    """One record of a Flow HTTP Callout body."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    record_id: str = Field(alias="recordId", pattern=r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
    object_type: ObjectType = Field(alias="objectType")
    lance_id: str = Field(alias="lanceId", pattern=_UUID4)
    fields: tuple[Literal["emails", "phones", "summary"], ...] | None = Field(
        default=None, min_length=1
    )


# -- SOAP ----------------------------------------------------------------------------------------


class _JsonRefusal(HookError):
    """A refused Flow callout: answered with the JSON error body, not a SOAP fault."""


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _notifications(body: bytes) -> Any:
    """The ``notifications`` element of an Outbound Message envelope.

    Raises:
        HookError: 400 for malformed XML, any DTD (bombs, external entities), another body.
    """
    try:
        root = SafeElementTree.fromstring(body, forbid_dtd=True)
    except DefusedXmlException:
        raise HookError(
            400, "invalid_xml", "XML with a DTD or entity declarations is refused"
        ) from None
    except (SafeElementTree.ParseError, ValueError, LookupError):
        raise HookError(400, "invalid_xml", "request body is not well-formed XML") from None
    namespace = root.tag.partition("}")[0].lstrip("{")
    found = None
    if _local(root.tag) == "Envelope" and namespace in (SOAP_ENV_NS, SOAP12_ENV_NS):
        found = root.find(f"{{{namespace}}}Body/{{{OUTBOUND_NS}}}notifications")
    if found is None:
        raise HookError(
            400, "invalid_body", "not an Outbound Message: expected a SOAP notifications envelope"
        )
    return found


def soap_fault(status: int, message: str) -> web.Response:
    """A SOAP 1.1 Fault answer: ``soapenv:Client`` for 4xx, ``soapenv:Server`` for 5xx."""
    code = "soapenv:Server" if status >= 500 else "soapenv:Client"
    text = html.escape(message, quote=False)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{text}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return web.Response(status=status, body=body.encode(), content_type="text/xml", charset="utf-8")


# -- the connector -------------------------------------------------------------------------------


class _AuthError(errors.ConnectorError):
    """No access token: credentials missing, refused, or the token endpoint failed."""


@dataclasses.dataclass(slots=True)
class _Answer:
    """A Salesforce REST response, read whole: status, decoded JSON body, headers."""

    status: int
    body: Any
    headers: Mapping[str, str]

    def error_code(self) -> str:
        """``errorCode`` of the first element of an error array, else ``""``."""
        first = self.body[0] if isinstance(self.body, list) and self.body else None
        return str(first.get("errorCode") or "") if isinstance(first, dict) else ""

    def message(self) -> str:
        """Salesforce's own words: ``errorCode: message`` of the first error."""
        first = self.body[0] if isinstance(self.body, list) and self.body else None
        if not isinstance(first, dict):
            return ""
        text = str(first.get("message") or "")[: classify.ERROR_EXCERPT_CHARS]
        code = self.error_code()
        return f"{code}: {text}" if code and text else code or text


class SalesforceConnector(connector.Connector):
    """Writes enrichment results to Salesforce records; takes Outbound Messages and Flow calls.

    Attributes:
        limits: The last ``Sforce-Limit-Info`` values, ``{segment: (used, limit)}``.
        requests: REST requests sent; ``token_requests``: token requests sent.
    """

    Config = SalesforceConfig
    max_batch = MAX_RECORDS
    needs_record = True
    hook_path = "/hooks/salesforce"

    def __init__(
        self,
        config: connector.ConnectorConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, session, clock=clock)
        assert isinstance(config, SalesforceConfig)
        self.settings = config
        self.limits: dict[str, tuple[int, int]] = {}
        self.requests = 0
        self.token_requests = 0
        self._limits_seen_at = float("-inf")
        self._slowing = False
        self._login: tuple[str, str] | None = None  # (access token, instance_url)
        self._login_lock = asyncio.Lock()
        self._private_key: bytes | None = None

    # -- inbound --------------------------------------------------------------------------

    def verify_hook(self, request: HookRequest) -> None:
        """Outbound Messages: the organization (and action) ids; Flow calls: the bearer token."""
        media = _media_type(request.headers)
        if media == JSON_MEDIA_TYPE:
            self._verify_flow(request)
            return
        if media not in SOAP_MEDIA_TYPES:
            raise HookError(
                415,
                "unsupported_media_type",
                f"Content-Type {media or '(none)'!r}: Outbound Messages are text/xml,"
                " Flow callouts application/json",
            )
        notifications = _notifications(request.body)
        settings = self.settings
        if not settings.organization_id:
            raise HookError(
                401,
                "unauthorized",
                f"connector {self.name} has no organization_id to check Outbound Messages against",
            )
        org = (notifications.findtext(f"{{{OUTBOUND_NS}}}OrganizationId") or "").strip()
        if not same_org_id(org, settings.organization_id):
            raise HookError(
                401, "unauthorized", f"OrganizationId {org[:20]!r} is not organization_id"
            )
        action = (notifications.findtext(f"{{{OUTBOUND_NS}}}ActionId") or "").strip()
        if settings.action_ids and not any(same_org_id(action, a) for a in settings.action_ids):
            raise HookError(401, "unauthorized", f"ActionId {action[:20]!r} is not in action_ids")

    def _verify_flow(self, request: HookRequest) -> None:
        if self.settings.flow_token is None:
            raise _JsonRefusal(
                401,
                "unauthorized",
                f"connector {self.name} has no flow_token; JSON callouts are refused",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        expected = self.settings.flow_token.get_secret_value()
        if scheme.lower() != "bearer" or not connector.same_secret(given.strip(), expected):
            raise _JsonRefusal(
                401, "unauthorized", "missing or wrong Authorization: Bearer <flow_token>"
            )

    def parse_hook(self, request: HookRequest) -> list[model.Inbound]:
        """The notifications of an Outbound Message, or the records of a Flow callout."""
        if _media_type(request.headers) == JSON_MEDIA_TYPE:
            return self._flow_events(request)
        notifications = _notifications(request.body)
        items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
        if not 1 <= len(items) <= MAX_NOTIFICATIONS:
            raise HookError(
                400,
                "invalid_body",
                f"an Outbound Message carries 1 to {MAX_NOTIFICATIONS} notifications,"
                f" not {len(items)}",
            )
        return [self._notification(index, item) for index, item in enumerate(items)]

    def _notification(self, index: int, item: Any) -> model.Inbound:
        notification_id = (item.findtext(f"{{{OUTBOUND_NS}}}Id") or "").strip()
        sobject = item.find(f"{{{OUTBOUND_NS}}}sObject")
        if not notification_id or sobject is None:
            raise HookError(
                400, "invalid_body", f"Notification {index + 1}: needs an Id and an sObject"
            )
        key = f"notification:{notification_id}"
        named = (sobject.get(XSI_TYPE) or "").rpartition(":")[2]
        values = {_local(child.tag).lower(): (child.text or "").strip() for child in sobject}
        record_id = values.get("id", "")
        object_type = object_type_of(named)
        if object_type is None:
            return model.Inbound(
                key,
                skipped=f"sObject type {named or '(none)'}: not a Lead, Contact or Account",
                record=(named, record_id),
            )
        canonical = id18(record_id)
        if canonical is None:
            return model.Inbound(
                key,
                skipped=f"{object_type} id {record_id[:20]!r} is not a Salesforce id",
                record=(object_type, record_id),
            )
        lance_field = self.settings.objects()[object_type].lance_id_field
        lance_id = values.get(lance_field.lower(), "")
        tasks = self.tasks_for(object_type, canonical, lance_id)
        if isinstance(tasks, str):
            return model.Inbound(key, skipped=tasks, record=(object_type, canonical))
        return model.Inbound(key, tasks=tasks, record=(object_type, canonical))

    def _flow_events(self, request: HookRequest) -> list[model.Inbound]:
        try:
            payload = request.json()
        except HookError as exc:
            raise _JsonRefusal(exc.status, exc.code, exc.message) from None
        items = payload if isinstance(payload, list) else [payload]
        if not isinstance(payload, list | dict) or not 1 <= len(items) <= MAX_FLOW_RECORDS:
            raise _JsonRefusal(
                400,
                "invalid_body",
                f"expected a record object or a list of 1 to {MAX_FLOW_RECORDS} of them",
            )
        digest = hashlib.sha256(request.body).hexdigest()
        events = []
        for index, item in enumerate(items):
            where = f"[{index}]" if isinstance(payload, list) else ""
            try:
                record = FlowRecord.model_validate(item)
            except pydantic.ValidationError as exc:
                message = registry.describe_validation_error(exc, where)
                raise _JsonRefusal(400, "invalid_body", message) from None
            canonical = id18(record.record_id)
            assert canonical is not None  # the pattern checked it
            tasks = self.tasks_for(record.object_type, canonical, record.lance_id, record.fields)
            if isinstance(tasks, str) and record.fields is not None:
                raise _JsonRefusal(400, "invalid_body", f"{where or 'body'}: {tasks}")
            key = f"flow:{digest}:{index}"
            target = (record.object_type, canonical)
            if isinstance(tasks, str):
                events.append(model.Inbound(key, skipped=tasks, record=target))
            else:
                events.append(model.Inbound(key, tasks=tasks, record=target))
        return events

    def tasks_for(
        self,
        object_type: ObjectType,
        record_id: str,
        lance_id: str,
        fields: Sequence[str] | None = None,
    ) -> connector.Lookup:
        """The enrichments a record with ``lance_id`` asks for, or why there are none."""
        settings = self.settings.objects()[object_type]
        if not lance_id:
            return f"no {settings.lance_id_field} on {object_type} {record_id}"
        if not _UUID4_RE.match(lance_id):
            return f"{settings.lance_id_field} {lance_id[:40]!r} is not a Lance id (UUID v4)"
        person = object_type != "Account"
        allowed = ("emails", "phones") if person else ("summary",)
        wanted = tuple(settings.enrich if fields is None else dict.fromkeys(fields))
        refused = [field for field in wanted if field not in allowed]
        if refused:
            return f"fields: {object_type} takes {' and '.join(allowed)}, not {refused[0]}"
        if not wanted:
            return f"{object_type}: enrich is empty in the connector settings"
        entity_type, mode = ("person", "trigger") if person else ("company", "track")
        target = (model.Target(self.name, object_type, record_id),)
        entity_id = str(uuid.UUID(lance_id))
        return tuple(model.Task(entity_type, entity_id, field, mode, target) for field in wanted)

    def hook_reply(self, request: HookRequest, received: model.Received) -> web.Response:
        """The SOAP Ack for an Outbound Message; the JSON summary for a Flow callout."""
        if _is_json(request):
            return super().hook_reply(request, received)
        return web.Response(body=ACK_RESPONSE, content_type="text/xml", charset="utf-8")

    def hook_error(self, request: HookRequest, error: HookError) -> web.Response:
        """A SOAP fault (Salesforce's Outbound Messages), or the JSON error for Flow callouts."""
        if isinstance(error, _JsonRefusal) or _is_json(request):
            return super().hook_error(request, error)
        return soap_fault(error.status, error.message)

    # -- outbound -------------------------------------------------------------------------

    def target_problem(self, object_type: str, object_id: str) -> str | None:
        """Salesforce records are Leads, Contacts or Accounts with 15- or 18-character ids."""
        unusable = _unusable((object_type, object_id))
        return unusable.error if unusable else None

    def batches(self, events: Sequence[Event]) -> list[list[int]]:
        """At most 200 records per request, all events of a record together, types in runs."""
        records: dict[RecordKey, list[int]] = {}
        for index, event in enumerate(events):
            records.setdefault(_record_key(event.target), []).append(index)
        order: dict[str, int] = {name: rank for rank, name in enumerate(OBJECT_TYPES)}
        groups = [
            indexes
            for _, indexes in sorted(
                records.items(), key=lambda item: order.get(item[0][0], len(order))
            )
        ]
        return [
            [i for group in groups[start : start + MAX_RECORDS] for i in group]
            for start in range(0, len(groups), MAX_RECORDS)
        ]

    async def _send(self, chunk: Sequence[Event]) -> list[Outcome]:
        keys = [_record_key(event.target) for event in chunk]
        outcomes: dict[RecordKey, Outcome] = {}
        wanted: dict[RecordKey, _Wanted] = {}
        for event, key in zip(chunk, keys, strict=True):
            refusal = _unusable(key)
            if refusal is not None:
                outcomes[key] = refusal
                continue
            settings = self.settings.objects()[_BY_LOWER[key[0].lower()]]
            fields = wanted.setdefault(key, {})
            payload = event.payload()
            for name, rule in settings.writable().items():
                value = rule.value(payload)
                if value is not None:
                    fields[name] = (value, rule)
        if wanted:
            outcomes |= await self._write(wanted)
        return [outcomes[key] for key in keys]

    async def _write(self, wanted: Mapping[RecordKey, _Wanted]) -> dict[RecordKey, Outcome]:
        """Apply the write policies and update the records; one outcome per record."""
        if not any(wanted.values()):
            return dict.fromkeys(wanted, Outcome.delivered())
        waiting = self._slow_down()
        if waiting is not None:
            return dict.fromkeys(wanted, waiting)
        try:
            current, outcomes = await self._current(wanted)
            keys: list[RecordKey] = []
            records: list[dict[str, Any]] = []
            for key, fields in wanted.items():
                if key in outcomes:
                    continue
                have = current.get(key, {})
                write = {
                    name: value
                    for name, (value, rule) in fields.items()
                    if rule.policy == "overwrite" or not mapping.filled(have.get(name.lower()))
                }
                if write:
                    keys.append(key)
                    records.append({"attributes": {"type": key[0]}, "id": key[1], **write})
                else:
                    outcomes[key] = Outcome.delivered()
            if records:
                outcomes |= await self._update(keys, records)
        except _AuthError as exc:
            failure = Outcome("retry", None, exc.message, classify.THROTTLE_MIN_DELAY_S)
            return dict.fromkeys(wanted, failure)
        return outcomes

    async def _current(
        self, wanted: Mapping[RecordKey, _Wanted]
    ) -> tuple[dict[RecordKey, dict[str, Any]], dict[RecordKey, Outcome]]:
        """Current values of the fields ``fill_if_empty`` may write (field names lower-cased).

        Returns:
            The values found, and the outcome of records whose read failed. A record the
            read did not find is left out: the update then reports why (``ENTITY_IS_DELETED``).
        """
        by_type: dict[str, tuple[list[str], set[str]]] = {}
        for (object_type, record_id), fields in wanted.items():
            names = {name for name, (_, m) in fields.items() if m.policy == "fill_if_empty"}
            if names:
                ids, all_names = by_type.setdefault(object_type, ([], set()))
                ids.append(record_id)
                all_names.update(names)
        current: dict[RecordKey, dict[str, Any]] = {}
        failed: dict[RecordKey, Outcome] = {}
        for object_type, (ids, names) in by_type.items():
            for start in range(0, len(ids), MAX_RETRIEVE_IDS):
                part = ids[start : start + MAX_RETRIEVE_IDS]
                answer = await self.call(
                    "POST",
                    f"/composite/sobjects/{object_type}",
                    {"ids": part, "fields": sorted(names)},
                )
                rows = answer.body
                if answer.status != 200 or not isinstance(rows, list) or len(rows) != len(part):
                    failed.update(
                        dict.fromkeys(((object_type, i) for i in part), self._failure(answer))
                    )
                    continue
                for record_id, row in zip(part, rows, strict=True):
                    if isinstance(row, dict):
                        current[(object_type, record_id)] = {
                            str(k).lower(): v for k, v in row.items()
                        }
        return current, failed

    async def _update(
        self, keys: Sequence[RecordKey], records: Sequence[dict[str, Any]]
    ) -> dict[RecordKey, Outcome]:
        """One collection update; a 400 for the whole request is narrowed to the faulty records."""
        answer = await self.call(
            "PATCH", "/composite/sobjects", {"allOrNone": False, "records": list(records)}
        )
        results = answer.body
        if answer.status == 200 and isinstance(results, list) and len(results) == len(records):
            return {key: _saved(result) for key, result in zip(keys, results, strict=True)}
        if answer.status == 400 and len(records) > 1:
            return await self._narrow(keys, records, answer)
        return dict.fromkeys(keys, self._failure(answer))

    async def _narrow(
        self, keys: Sequence[RecordKey], records: Sequence[dict[str, Any]], answer: _Answer
    ) -> dict[RecordKey, Outcome]:
        """After a 400 for the whole request: the records with the fields it names are dead.

        Salesforce refuses a collection as a whole only when the request is malformed (an
        unknown field, type or shape), never for one record's values, which get SaveResults.
        So the records carrying a field the error names fail and the others are sent again;
        an error naming no field fails every record (bisecting would only repeat it).
        """
        failure = self._failure(answer)
        named = _named_fields(answer)
        bad = {i for i, record in enumerate(records) if named & {k.lower() for k in record}}
        if not bad or len(bad) == len(records):
            return dict.fromkeys(keys, failure)
        rest = [i for i in range(len(records)) if i not in bad]
        outcomes = {keys[i]: failure for i in bad}
        return outcomes | await self._update([keys[i] for i in rest], [records[i] for i in rest])

    def _failure(self, answer: _Answer) -> Outcome:
        """The outcome of a whole request Salesforce refused or failed."""
        status, text = answer.status, answer.message()
        reason = f"HTTP {status}" + (f" {text}" if text else "")
        retry_after = classify.parse_retry_after(answer.headers.get("Retry-After"))
        if status == 410:
            return Outcome("dead", status, self._retired())
        if status == 403 and answer.error_code() == "REQUEST_LIMIT_EXCEEDED":
            wait_s = max(retry_after or 0.0, classify.THROTTLE_MIN_DELAY_S)
            return Outcome("retry", status, f"{reason} ({self.usage()}); throttled", wait_s)
        if status == 401:
            return Outcome(
                "retry",
                status,
                f"Salesforce refused a fresh session too: {reason}",
                classify.THROTTLE_MIN_DELAY_S,
            )
        if 200 <= status < 300:
            return Outcome("retry", status, f"HTTP {status}: an answer of an unexpected shape")
        outcome = classify.classify(status, retry_after=answer.headers.get("Retry-After"))
        return dataclasses.replace(outcome, error=reason)

    def _retired(self) -> str:
        return (
            f"Salesforce retired API version {self.settings.api_version} (HTTP 410);"
            f" set api_version of connector {self.name} to a supported one, e.g. 66.0"
        )

    # -- API usage ------------------------------------------------------------------------

    def usage(self) -> str:
        """The last daily API usage Salesforce reported, e.g. ``api-usage 950/1000``."""
        shown = [
            f"{name} {used}/{cap}"
            for name, (used, cap) in self.limits.items()
            if name in DAILY_CAPS
        ]
        return ", ".join(shown) or "API usage not reported yet"

    def _observe(self, header: str | None) -> None:
        found = parse_limit_info(header)
        if found:
            self.limits.update(found)
            self._limits_seen_at = self.clock()

    def _slow_down(self) -> Outcome | None:
        """A deferral while the last reported usage is past ``slow_down_at`` of a daily cap.

        The reading is trusted for ``slow_down_delay_seconds``; after that one request goes
        through to refresh it, so a cap that has cleared is noticed.
        """
        settings = self.settings
        used = max(
            (u / cap for name, (u, cap) in self.limits.items() if name in DAILY_CAPS and cap > 0),
            default=0.0,
        )
        fresh = self.clock() - self._limits_seen_at < settings.slow_down_delay_seconds
        if used < settings.slow_down_at or not fresh:
            self._slowing = False
            return None
        if not self._slowing:  # once per episode, not once per deferred chunk
            self._slowing = True
            logger.warning(
                "Salesforce %s is past slow_down_at: deliveries wait",
                self.usage(),
                extra={"event": "salesforce.slow_down", "connector": self.name},
            )
        return Outcome(
            "retry",
            None,
            f"Salesforce {self.usage()} is past slow_down_at ({settings.slow_down_at:.0%});"
            " deliveries wait so the rest of the daily cap stays for other integrations",
            max(settings.slow_down_delay_seconds, classify.THROTTLE_MIN_DELAY_S),
        )

    # -- HTTP -----------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> _Answer:
        """One REST request under ``/services/data/v{api_version}``; a new token once on 401.

        Only a 401 whose first error is ``INVALID_SESSION_ID`` logs in again; a 403
        ``REQUEST_LIMIT_EXCEEDED`` is throttling and is answered as it is.

        Raises:
            _AuthError: no token could be obtained.
            aiohttp.ClientError, TimeoutError: the request did not complete.
        """
        login = await self._session_login()
        answer = await self._request(method, path, body, login)
        if answer.status == 401 and answer.error_code() == "INVALID_SESSION_ID":
            login = await self._log_in(stale=login)
            answer = await self._request(method, path, body, login)
        return answer

    async def _request(self, method: str, path: str, body: Any, login: tuple[str, str]) -> _Answer:
        token, instance_url = login
        self.requests += 1
        reply = await self.request(
            method,
            f"{instance_url}/services/data/v{self.settings.api_version}{path}",
            endpoint=f"{method} {path}",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        self._observe(reply.headers.get(LIMIT_HEADER))
        return _Answer(reply.status, _decode(reply.raw), reply.headers)

    async def _session_login(self) -> tuple[str, str]:
        login = self._login
        return login if login is not None else await self._log_in(stale=None)

    async def _log_in(self, *, stale: tuple[str, str] | None) -> tuple[str, str]:
        """A new access token and instance URL (once, however many requests wait for it)."""
        async with self._login_lock:
            if self._login is not None and self._login != stale:
                return self._login  # another request logged in meanwhile
            self._login = await self._grant()
            logger.info(
                "Salesforce access token obtained",
                extra={"event": "salesforce.login", "connector": self.name},
            )
            return self._login

    async def _grant(self) -> tuple[str, str]:
        form = self._grant_form()
        self.token_requests += 1
        reply = await self.request(
            "POST", self.settings.login_url + TOKEN_PATH, endpoint="POST " + TOKEN_PATH, data=form
        )
        status, body = reply.status, _decode(reply.raw)
        if status == 200 and isinstance(body, dict):
            token, instance_url = body.get("access_token"), body.get("instance_url")
            usable = isinstance(instance_url, str) and re.match(r"^https?://[^/\s]+", instance_url)
            if isinstance(token, str) and token and usable:
                return token, str(instance_url).rstrip("/")
        raise _AuthError(self._refusal(status, body))

    def _grant_form(self) -> dict[str, str]:
        settings = self.settings
        if settings.auth == "jwt_bearer":
            return {"grant_type": JWT_GRANT, "assertion": self._assertion()}
        if settings.client_secret is None:
            variable = (
                f"LANCE_BRIDGE_CONNECTORS__{self.name.upper().replace('-', '_')}__CLIENT_SECRET"
            )
            raise _AuthError(f"connector {self.name}: client_secret is not set; set {variable}")
        return {
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret.get_secret_value(),
        }

    def _assertion(self) -> str:
        """A JWT bearer assertion signed with the private key (RS256), valid for 3 minutes."""
        settings = self.settings
        path = settings.private_key_file
        assert path is not None  # the config requires it for jwt_bearer
        if self._private_key is None:
            try:
                self._private_key = path.read_bytes()
            except OSError as exc:
                raise _AuthError(f"private_key_file {path}: cannot read: {exc.strerror}") from None
        claims = {
            "iss": settings.client_id,
            "sub": settings.username,
            "aud": settings.audience or _audience(settings.login_url),
            "exp": int(self.clock()) + JWT_LIFETIME_S,
        }
        try:
            return jwt.encode(claims, self._private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            self._private_key = None
            raise _AuthError(
                f"private_key_file {path}: not an RSA private key in PEM format"
            ) from None

    def _refusal(self, status: int, body: Any) -> str:
        """What went wrong at the token endpoint, in Salesforce's words, with a hint."""
        error = description = ""
        if isinstance(body, dict):
            error = str(body.get("error") or "")
            description = str(body.get("error_description") or "")[: classify.ERROR_EXCERPT_CHARS]
        said = ": ".join(part for part in (error, description) if part) or "no error given"
        hint = next((h for text, h in _TOKEN_HINTS if text in description.lower()), "")
        return (
            f"connector {self.name}: Salesforce refused the {self.settings.auth} token request"
            f" at {self.settings.login_url} (HTTP {status} {said})" + (f"; {hint}" if hint else "")
        )

    # -- check-config --online ------------------------------------------------------------

    async def check(self) -> None:
        """A token is granted and every mapped field (and the Lance-id one) is updateable.

        Objects whose ``enrich`` is empty are not checked.
        """
        problems = []
        for object_type, settings in self.settings.objects().items():
            if not settings.enrich:
                continue
            answer = await self.call("GET", f"/sobjects/{object_type}/describe")
            if answer.status == 410:
                raise errors.ConnectorError(self._retired())
            if answer.status != 200 or not isinstance(answer.body, dict):
                raise errors.ConnectorError(
                    f"describing {object_type}: HTTP {answer.status} {answer.message()}".strip()
                )
            problems += _field_problems(object_type, settings, answer.body)
        if problems:
            raise errors.ConnectorError("; ".join(problems))


def _field_problems(
    object_type: str, settings: ObjectSettings, describe: Mapping[str, Any]
) -> list[str]:
    found = {
        str(f.get("name", "")).lower(): f
        for f in describe.get("fields") or []
        if isinstance(f, dict)
    }
    mapped = [settings.lance_id_field, *settings.writable()]
    missing = [name for name in mapped if name.lower() not in found]
    locked = [
        name
        for name in settings.writable()
        if name.lower() in found and not found[name.lower()].get("updateable")
    ]
    problems = []
    if missing:
        problems.append(
            f"{object_type} has no field {', '.join(missing)}: create it (Setup → Object Manager →"
            f" {object_type} → Fields & Relationships) or change the mapping"
        )
    if locked:
        problems.append(
            f"{object_type} field {', '.join(locked)} is not updateable by the integration user:"
            " check its field-level security"
        )
    return problems


def _record_key(target: Mapping[str, Any] | None) -> RecordKey:
    target = target or {}
    named = str(target.get("objectType", ""))
    raw = str(target.get("objectId", ""))
    return (object_type_of(named) or named, id18(raw) or raw)


def _unusable(key: RecordKey) -> Outcome | None:
    object_type, record_id = key
    if object_type_of(object_type) is None:
        return Outcome(
            "dead",
            None,
            f"objectType {object_type[:40]!r}: the Salesforce connector writes"
            " Lead, Contact and Account",
        )
    if id18(record_id) is None:
        return Outcome(
            "dead", None, f"MALFORMED_ID: {record_id[:40]!r} is not a 15- or 18-character id"
        )
    return None


def _saved(result: Any) -> Outcome:
    """The outcome of one SaveResult: delivered, or Salesforce's ``statusCode: message``."""
    if not isinstance(result, dict):
        return Outcome("retry", 200, "Salesforce answered an unexpected SaveResult")
    if result.get("success") is True:
        return Outcome.delivered(200)
    found = [e for e in result.get("errors") or [] if isinstance(e, dict)]
    if not found:
        return Outcome("retry", 200, "Salesforce reported a failure without a reason")
    reason = "; ".join(_error_text(error) for error in found)[: classify.ERROR_EXCERPT_CHARS]
    permanent = str(found[0].get("statusCode") or "") in PERMANENT_CODES
    return Outcome("dead" if permanent else "retry", 200, reason)


def _error_text(error: Mapping[str, Any]) -> str:
    code, message = str(error.get("statusCode") or ""), str(error.get("message") or "")
    fields = [str(f) for f in error.get("fields") or []]
    text = f"{code}: {message}" if code and message else code or message
    return text + (f" ({', '.join(fields)})" if fields else "")


def _named_fields(answer: _Answer) -> set[str]:
    """Field names (lower-cased) an error array blames: its ``fields``, or "No such column"."""
    named: set[str] = set()
    for error in answer.body if isinstance(answer.body, list) else []:
        if isinstance(error, dict):
            named.update(str(f).lower() for f in error.get("fields") or [])
            named.update(m.lower() for m in _NO_SUCH_COLUMN.findall(str(error.get("message"))))
    return named


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _audience(login_url: str) -> str:
    """The JWT ``aud`` Salesforce expects: the login host, never a My Domain URL.

    Sandbox orgs (``test.salesforce.com``, ``*.sandbox.my.salesforce.com``) use the test host.
    """
    host = urllib.parse.urlsplit(login_url).hostname or ""
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return "https://test.salesforce.com"
    return "https://login.salesforce.com"

"""HubSpot, both directions: signed webhooks trigger enrichments; results update the records.

Inbound (``POST /hooks/hubspot``, or ``/hooks/hubspot/<name>`` to pick one of several apps):

- App webhook batches, a JSON array of up to 100 events. ``contact.propertyChange`` and
  ``company.propertyChange`` of the Lance-id property trigger the configured fields with the
  record as the delivery target; ``contact.creation`` / ``company.creation`` carry no
  properties, so the record is read (batch read, 100 ids per request) by the ``resolve`` job.
- Workflow "Send a webhook" calls: one record per call, its properties in the body: "include
  all properties" (``{"objectId", "properties": {name: value}}``, or the legacy contact
  ``{"vid", "properties": {name: {"value"}}}``) or a customised body with the chosen
  properties as top-level keys (``{"hs_object_id", "lance_person_id"}``);
  ``?objectType=companies`` on the URL for company workflows.
- Signatures: v3 (HMAC-SHA256 over method + URI + body + timestamp, at most
  ``signature_max_age_seconds`` old or ahead), else v1/v2 when ``legacy_signatures`` allows;
  compared in constant time. A retried or duplicated event is recognised and triggers nothing.

Outbound: ``POST /crm/v3/objects/{type}/batch/update``, 100 records per request, events of one
record merged into one input. Each mapped property has a write policy: ``fill_if_empty``
(default; the current values are read first, 100 records per request), ``overwrite`` or
``never``; an empty Lance value never clears a property. One request budget per connector
(default 100 per rolling 10 s) covers reads, writes and lookups. Auth: a private-app token, or
OAuth (refresh token + client id/secret), refreshed before expiry and once on a 401.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import aiohttp
import pydantic
from pydantic import Field, SecretStr

from bridge import classify, connector, errors, model, ratelimit
from bridge.classify import Outcome
from bridge.connector import Event, HookError, HookRequest
from connectors import mapping

logger = logging.getLogger(__name__)

MAX_INPUTS = 100  # batch read and batch update
MAX_EVENTS = 100  # events in one webhook request
LOCKED_MIN_DELAY_S = 2.0  # 423: "the lock lasts 2 s"
DAILY_LIMIT_DELAY_S = 3600.0  # 429 DAILY: the budget comes back at midnight in the portal's zone
# Categories of a per-record error that retrying cannot fix.
PERMANENT_CATEGORIES = frozenset(
    {"VALIDATION_ERROR", "OBJECT_NOT_FOUND", "CONFLICT", "MISSING_SCOPES", "BAD_REQUEST"}
)
# v3 signing decodes exactly these escapes in the URI, and no others.
_V3_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_V3_ESCAPES = re.compile("|".join(_V3_DECODED), re.IGNORECASE)
_UUID4 = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE
)

ObjectType = Literal["contacts", "companies"]
# HubSpot's names of an object type in URLs, events and workflow payloads.
_OBJECT_TYPES: dict[str, ObjectType] = {
    "contacts": "contacts",
    "contact": "contacts",
    "0-1": "contacts",
    "companies": "companies",
    "company": "companies",
    "0-2": "companies",
}


def object_type_of(name: str) -> ObjectType | None:
    """``contacts`` or ``companies`` for any of HubSpot's names of them, else ``None``."""
    return _OBJECT_TYPES.get(name.strip().lower())


# -- configuration -----------------------------------------------------------------------------


class ObjectSettings(pydantic.BaseModel):
    """How one object type (contacts or companies) is enriched and written back."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    DEFAULT_PROPERTIES: ClassVar[dict[str, str]] = {}

    lance_id_property: str = Field(min_length=1)
    enrich: tuple[Literal["emails", "phones", "summary"], ...]
    properties: dict[str, mapping.PropertyMap] = Field(default_factory=dict)

    @pydantic.field_validator("properties", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        # Entries add to or replace the defaults; `policy = "never"` switches one off.
        if isinstance(value, Mapping):
            return {**cls.DEFAULT_PROPERTIES, **value}
        return value

    def writable(self) -> dict[str, mapping.PropertyMap]:
        """The mapped properties whose policy allows writing."""
        return {name: m for name, m in self.properties.items() if m.policy != "never"}


class ContactSettings(ObjectSettings):
    """``contacts``: a person's emails and phones."""

    DEFAULT_PROPERTIES: ClassVar[dict[str, str]] = {
        "email": "emails[0]",
        "hs_additional_emails": "emails[1:]",
        "phone": "phones[0]",
        "mobilephone": "phones[1]",
    }

    lance_id_property: str = Field(default="lance_person_id", min_length=1)
    enrich: tuple[Literal["emails", "phones"], ...] = ("emails", "phones")
    properties: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(ContactSettings.DEFAULT_PROPERTIES)
    )


class CompanySettings(ObjectSettings):
    """``companies``: a company's summary (tracked, since Lance starts those itself)."""

    DEFAULT_PROPERTIES: ClassVar[dict[str, str]] = {"description": "summary"}

    lance_id_property: str = Field(default="lance_company_id", min_length=1)
    enrich: tuple[Literal["summary"], ...] = ("summary",)
    properties: dict[str, mapping.PropertyMap] = Field(
        default_factory=lambda: mapping.mappings(CompanySettings.DEFAULT_PROPERTIES)
    )


class HubSpotConfig(connector.ConnectorConfig):
    """Settings of a HubSpot connector (``type = "hubspot"``)."""

    type: str = "hubspot"
    base_url: str = "https://api.hubapi.com"
    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    client_id: str = ""
    client_secret: SecretStr | None = None
    portal_id: int | None = None
    legacy_signatures: bool = False
    signature_max_age_seconds: float = Field(default=300.0, gt=0)
    rate_limit_requests: int = Field(default=100, ge=0)
    rate_limit_window_seconds: float = Field(default=10.0, gt=0)
    token_refresh_margin_seconds: float = Field(default=300.0, ge=0)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    contacts: ContactSettings = Field(default_factory=ContactSettings)
    companies: CompanySettings = Field(default_factory=CompanySettings)

    _secrets_not_blank = pydantic.field_validator("access_token", "refresh_token", "client_secret")(
        connector.not_blank
    )

    @pydantic.field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @pydantic.model_validator(mode="after")
    def _one_auth(self) -> HubSpotConfig:
        if self.access_token is None and self.refresh_token is None:
            raise ValueError(
                "set access_token (a private app's token) or refresh_token with client_id and"
                " client_secret (OAuth)"
            )
        if self.refresh_token is not None and not (self.client_id and self.client_secret):
            raise ValueError("OAuth (refresh_token) also needs client_id and client_secret")
        return self

    def objects(self) -> dict[ObjectType, ObjectSettings]:
        """The settings of each object type."""
        return {"contacts": self.contacts, "companies": self.companies}


# -- signatures ----------------------------------------------------------------------------------


def v3_uri(uri: str) -> str:
    """The URI as HubSpot's v3 signature covers it: only the documented escapes decoded."""
    return _V3_ESCAPES.sub(lambda m: _V3_DECODED[m.group(0).upper()], uri)


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of method + URI + body + timestamp."""
    # The URI holds the Host header and path as received, bytes that are not text included.
    message = method.encode() + connector.wire_bytes(v3_uri(uri)) + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_v1(secret: str, body: bytes) -> str:
    """``X-HubSpot-Signature`` v1: SHA-256 hex of secret + body (app webhooks)."""
    return hashlib.sha256(secret.encode() + body).hexdigest()


def signature_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    """``X-HubSpot-Signature`` v2: SHA-256 hex of secret + method + URI + body (workflows)."""
    signed = secret.encode() + method.encode() + connector.wire_bytes(uri) + body
    return hashlib.sha256(signed).hexdigest()


def _same(given: str, expected: str) -> bool:
    return connector.same_secret(given.strip(), expected)


# -- the connector -------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Answer:
    """A HubSpot response, read whole: status, decoded JSON body (or ``None``), headers."""

    status: int
    body: Any
    headers: Mapping[str, str]

    def message(self) -> str:
        """HubSpot's own words: ``CATEGORY: message`` when the body has them."""
        if isinstance(self.body, dict):
            category = self.body.get("category") or self.body.get("policyName") or ""
            text = str(self.body.get("message") or "")[: classify.ERROR_EXCERPT_CHARS]
            if text:
                return f"{category}: {text}" if category else text
        return ""


class HubSpotConnector(connector.Connector):
    """Writes enrichment results to HubSpot records; takes HubSpot's webhooks."""

    Config = HubSpotConfig
    max_batch = MAX_INPUTS
    needs_record = True
    hook_path = "/hooks/hubspot"

    def __init__(
        self,
        config: connector.ConnectorConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, session, clock=clock)
        assert isinstance(config, HubSpotConfig)
        self.settings = config
        self.budget = ratelimit.RollingWindow(
            config.rate_limit_requests, config.rate_limit_window_seconds
        )
        self._token: str | None = (
            config.access_token.get_secret_value() if config.access_token else None
        )
        # A private-app token never expires; an OAuth one is fetched before the first request.
        self._token_expires_at = float("inf") if self._token else float("-inf")
        self._refresh_lock = asyncio.Lock()

    # -- inbound --------------------------------------------------------------------------

    def verify_hook(self, request: HookRequest) -> None:
        """Check the v3 signature (or v1/v2 when allowed) against the app's client secret."""
        if self.settings.client_secret is None:
            raise HookError(
                401, "unauthorized", f"connector {self.name} has no client_secret to verify with"
            )
        secret = self.settings.client_secret.get_secret_value()
        headers = request.headers
        v3 = headers.get("X-HubSpot-Signature-v3")
        if v3 is not None:
            stamp = headers.get("X-HubSpot-Request-Timestamp", "").strip()
            if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 16):
                raise HookError(
                    401, "unauthorized", "missing or invalid X-HubSpot-Request-Timestamp"
                )
            skew_s = abs(request.now * 1000 - int(stamp)) / 1000
            if skew_s > self.settings.signature_max_age_seconds:
                raise HookError(
                    401,
                    "unauthorized",
                    f"X-HubSpot-Request-Timestamp is {skew_s:.0f} s from now"
                    f" (at most {self.settings.signature_max_age_seconds:.0f} s allowed)",
                )
            expected = signature_v3(secret, request.method, request.url, request.body, stamp)
            if not _same(v3, expected):
                raise HookError(401, "unauthorized", _bad_signature("v3", request))
            self._verify_portal(request)
            return
        legacy = headers.get("X-HubSpot-Signature")
        if legacy is None or not self.settings.legacy_signatures:
            raise HookError(401, "unauthorized", "missing X-HubSpot-Signature-v3 header")
        version = headers.get("X-HubSpot-Signature-Version", "v1").strip().lower()
        if version == "v1":
            expected = signature_v1(secret, request.body)
        elif version == "v2":
            expected = signature_v2(secret, request.method, request.url, request.body)
        else:
            raise HookError(401, "unauthorized", f"unknown signature version {version[:10]!r}")
        if not _same(legacy.lower(), expected):
            raise HookError(401, "unauthorized", _bad_signature(version, request))
        self._verify_portal(request)

    def _verify_portal(self, request: HookRequest) -> None:
        """With ``portal_id`` set, the events must be that account's.

        Several connectors (one per HubSpot account) can share one public app, and so its
        secret and its webhook URL: a batch of another account is refused here, so the next
        connector can take it, instead of being acknowledged and dropped.
        """
        wanted = self.settings.portal_id
        if wanted is None:
            return
        try:
            payload = request.json()
        except HookError:
            return  # parse_hook answers malformed bodies
        events = payload if isinstance(payload, list) else [payload]
        portals = {e.get("portalId", e.get("portal-id")) for e in events if isinstance(e, dict)}
        portals.discard(None)
        if portals - {wanted}:
            others = ", ".join(sorted(str(p) for p in portals - {wanted}))
            raise HookError(401, "unauthorized", f"events of portal {others}, not {wanted}")

    def parse_hook(self, request: HookRequest) -> list[model.Inbound]:
        """App webhook events (a JSON array) or one workflow record (a JSON object)."""
        payload = request.json()
        if isinstance(payload, list):
            if not 1 <= len(payload) <= MAX_EVENTS:
                raise HookError(
                    400, "invalid_body", f"HubSpot sends 1 to {MAX_EVENTS} events per request"
                )
            return [self._app_event(index, item) for index, item in enumerate(payload)]
        if isinstance(payload, dict):
            return [self._workflow_call(payload, request)]
        raise HookError(400, "invalid_body", "expected a JSON array of events or a record object")

    def _app_event(self, index: int, item: Any) -> model.Inbound:
        if not isinstance(item, dict):
            raise HookError(400, "invalid_body", f"[{index}]: an event must be an object")
        kind = item.get("subscriptionType") or item.get("eventType")
        object_id = item.get("objectId")
        if not isinstance(kind, str) or not _is_id(object_id):
            # One event of a shape the bridge does not act on (an association change, say)
            # must not make HubSpot retry, and finally drop, the other 99 with it.
            digest = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()
            return model.Inbound(
                f"unparsed:{digest}", skipped="no subscriptionType and numeric objectId"
            )
        key = ":".join(
            str(item.get(name, ""))
            for name in ("portalId", "subscriptionId", "eventId", "occurredAt", "propertyName")
        )
        key = f"{kind}:{object_id}:{key}"
        scope, _, action = kind.partition(".")
        object_type = object_type_of(
            str(item.get("objectTypeId", "")) if scope == "object" else scope
        )
        record = (object_type or scope, str(object_id))
        if object_type is None:
            return model.Inbound(key, skipped=f"{kind}: not a contact or company", record=record)
        if action == "creation":
            return model.Inbound(key, lookup=record)
        if action != "propertyChange":
            return model.Inbound(key, skipped=f"{kind}: not an event that triggers", record=record)
        settings = self.settings.objects()[object_type]
        name = item.get("propertyName")
        if name != settings.lance_id_property:
            return model.Inbound(
                key, skipped=f"change of {name}, not {settings.lance_id_property}", record=record
            )
        return self._inbound(key, object_type, str(object_id), item.get("propertyValue"))

    def _workflow_call(self, payload: dict[str, Any], request: HookRequest) -> model.Inbound:
        object_type = self._workflow_object_type(payload, request)
        properties = _workflow_properties(payload)
        object_id = _workflow_record_id(payload, properties)
        if object_id is None:
            raise HookError(
                400,
                "invalid_body",
                "a workflow call needs the record id (a number): objectId, vid or hs_object_id",
            )
        name = self.settings.objects()[object_type].lance_id_property
        if properties is payload and name not in payload:
            # A customised body without the Lance-id key is a workflow set up wrongly: say
            # so to HubSpot (it shows the answer in the workflow's history) instead of a skip.
            raise HookError(
                400,
                "invalid_body",
                f"a workflow call for {object_type} needs {name} in the body"
                " (or ?objectType= naming the other object type)",
            )
        key = "workflow:" + hashlib.sha256(request.body).hexdigest()
        lance_id = _property_value(properties, name)
        return self._inbound(key, object_type, str(object_id), lance_id)

    def _workflow_object_type(self, payload: dict[str, Any], request: HookRequest) -> ObjectType:
        """``?objectType=`` on the URL, else the body's ``objectType``, else contacts."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)
        named = (query.get("objectType") or [str(payload.get("objectType") or "")])[0]
        object_type = object_type_of(named) if named else "contacts"
        if object_type is None:
            raise HookError(
                400, "invalid_body", f"objectType {named[:40]!r}: contacts or companies"
            )
        return object_type

    def _inbound(
        self, key: str, object_type: ObjectType, object_id: str, lance_id: Any
    ) -> model.Inbound:
        record = (object_type, object_id)
        tasks = self.tasks_for(object_type, object_id, lance_id)
        if isinstance(tasks, str):
            return model.Inbound(key, skipped=tasks, record=record)
        return model.Inbound(key, tasks=tasks, record=record)

    def tasks_for(self, object_type: ObjectType, object_id: str, lance_id: Any) -> connector.Lookup:
        """The enrichments a record with ``lance_id`` asks for, or why there are none."""
        settings = self.settings.objects()[object_type]
        if not isinstance(lance_id, str) or not lance_id.strip():
            return f"no {settings.lance_id_property} on {object_type} {object_id}"
        if not _UUID4.match(lance_id.strip()):
            return f"{settings.lance_id_property} {lance_id[:40]!r} is not a Lance id (UUID v4)"
        entity_id = str(uuid.UUID(lance_id.strip()))
        entity_type, mode = (
            ("person", "trigger") if object_type == "contacts" else ("company", "track")
        )
        target = (model.Target(self.name, object_type, object_id),)
        return tuple(
            model.Task(entity_type, entity_id, field, mode, target) for field in settings.enrich
        )

    async def lookup(
        self, records: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], connector.Lookup]:
        """Read created records (100 per request) for their Lance id."""
        found: dict[tuple[str, str], connector.Lookup] = {}
        for object_type, ids in _by_type(records).items():
            settings = self.settings.objects()[object_type]
            for start in range(0, len(ids), MAX_INPUTS):
                chunk = ids[start : start + MAX_INPUTS]
                try:
                    current = await self._read(object_type, chunk, [settings.lance_id_property])
                except errors.ConnectorError as exc:
                    current = Outcome("retry", None, exc.message)
                if isinstance(current, Outcome) and current.kind == "dead":
                    # HubSpot refuses this read for good: waiting would block newer events.
                    reason = f"HubSpot refused to read {object_type}: {current.error}"
                    found |= {(object_type, object_id): reason for object_id in chunk}
                    continue
                if isinstance(current, Outcome):
                    logger.warning(
                        "reading created %s failed: %s",
                        object_type,
                        current.error,
                        extra={"event": "lookup.failed", "connector": self.name},
                    )
                    continue
                for object_id in chunk:
                    properties = current.get(object_id)
                    found[(object_type, object_id)] = (
                        f"HubSpot has no {object_type} record {object_id}"
                        if properties is None
                        else self.tasks_for(
                            object_type, object_id, properties.get(settings.lance_id_property)
                        )
                    )
        for named, object_id in records:
            if object_type_of(named) is None:
                found[(named, object_id)] = f"{named}: not a contact or company"
        return found

    # -- outbound -------------------------------------------------------------------------

    def batches(self, events: Sequence[Event]) -> list[list[int]]:
        """One object type per request, at most 100 records, all events of a record together."""
        records: dict[tuple[str, str], list[int]] = {}
        for index, event in enumerate(events):
            target = event.target or {}
            key = (str(target.get("objectType", "")), str(target.get("objectId", "")))
            records.setdefault(key, []).append(index)
        by_type: dict[str, list[list[int]]] = {}
        for (object_type, _), indexes in records.items():
            by_type.setdefault(object_type, []).append(indexes)
        return [
            [i for group in groups[start : start + MAX_INPUTS] for i in group]
            for groups in by_type.values()
            for start in range(0, len(groups), MAX_INPUTS)
        ]

    def target_problem(self, object_type: str, object_id: str) -> str | None:
        """HubSpot records are contacts or companies with numeric ids."""
        if object_type_of(object_type) is None:
            return f"objectType {object_type[:40]!r}: HubSpot records are contacts or companies"
        if not _is_id(object_id):
            return f"objectId {object_id[:40]!r}: HubSpot record ids are numbers"
        return None

    async def _send(self, chunk: Sequence[Event]) -> list[Outcome]:
        try:
            return await self._send_chunk(chunk)
        except errors.ConnectorError as exc:
            # The token could not be had (refused, or the endpoint failed): retry later, and say
            # why on every delivery concerned instead of an unexplained internal error.
            return [Outcome("retry", None, exc.message, classify.THROTTLE_MIN_DELAY_S)] * len(
                chunk
            )

    async def _send_chunk(self, chunk: Sequence[Event]) -> list[Outcome]:
        target = chunk[0].target or {}
        named = str(target.get("objectType", ""))
        object_type = object_type_of(named)
        if object_type is None:
            reason = f"objectType {named!r}: the HubSpot connector writes contacts and companies"
            return [Outcome("dead", None, reason)] * len(chunk)
        settings = self.settings.objects()[object_type]
        wanted: dict[str, dict[str, tuple[str, mapping.PropertyMap]]] = {}
        unusable: dict[str, Outcome] = {}
        for event in chunk:
            object_id = str((event.target or {}).get("objectId", ""))
            if not _is_id(object_id):
                unusable[object_id] = Outcome(
                    "dead", None, f"objectId {object_id[:40]!r}: HubSpot record ids are numbers"
                )
                continue
            payload = event.payload()
            props = wanted.setdefault(object_id, {})
            for name, rule in settings.writable().items():
                value = rule.value(payload)
                if value is not None:
                    props[name] = (value, rule)
        outcomes = unusable | (await self._write(object_type, wanted) if wanted else {})
        return [outcomes[str((event.target or {}).get("objectId", ""))] for event in chunk]

    async def _write(
        self,
        object_type: ObjectType,
        wanted: Mapping[str, Mapping[str, tuple[str, mapping.PropertyMap]]],
    ) -> dict[str, Outcome]:
        """Apply the write policies and update the records; one outcome per record id."""
        outcomes: dict[str, Outcome] = {}
        to_check = sorted(
            {
                n
                for props in wanted.values()
                for n, (_, m) in props.items()
                if m.policy == "fill_if_empty"
            }
        )
        current: dict[str, dict[str, Any]] = {}
        if to_check:
            read = await self._read(object_type, list(wanted), to_check)
            if isinstance(read, Outcome):
                return dict.fromkeys(wanted, read)
            current = read
        inputs = []
        for object_id, props in wanted.items():
            if to_check and object_id not in current:
                outcomes[object_id] = Outcome(
                    "dead", 404, f"HubSpot has no {object_type} record {object_id}"
                )
                continue
            have = current.get(object_id, {})
            write = {
                name: value
                for name, (value, rule) in props.items()
                if rule.policy == "overwrite" or not mapping.filled(have.get(name))
            }
            if write:
                inputs.append(
                    {"id": object_id, "properties": write, "objectWriteTraceId": object_id}
                )
            else:
                outcomes[object_id] = Outcome.delivered()
        if inputs:
            outcomes |= await self._update(object_type, inputs)
        return outcomes

    async def _read(
        self, object_type: str, ids: Sequence[str], properties: Sequence[str]
    ) -> dict[str, dict[str, Any]] | Outcome:
        """Current properties of up to 100 records; missing records are left out."""
        answer = await self.call(
            "POST",
            f"/crm/v3/objects/{object_type}/batch/read",
            {"properties": list(properties), "inputs": [{"id": i} for i in ids]},
        )
        if answer.status not in (200, 207) or not isinstance(answer.body, dict):
            return self._failure(answer)
        found = {}
        for result in answer.body.get("results") or []:
            if isinstance(result, dict) and "id" in result:
                found[str(result["id"])] = result.get("properties") or {}
        return found

    async def _update(self, object_type: str, inputs: list[dict[str, Any]]) -> dict[str, Outcome]:
        """One batch update; a 400 for several inputs is split until the bad one is alone."""
        answer = await self.call(
            "POST", f"/crm/v3/objects/{object_type}/batch/update", {"inputs": inputs}
        )
        ids = [str(item["id"]) for item in inputs]
        if answer.status == 400 and len(inputs) > 1:
            half = len(inputs) // 2
            first = await self._update(object_type, inputs[:half])
            return first | await self._update(object_type, inputs[half:])
        if answer.status not in (200, 207) or not isinstance(answer.body, dict):
            return dict.fromkeys(ids, self._failure(answer))
        return _per_record(answer, ids)

    def _failure(self, answer: _Answer) -> Outcome:
        """The outcome of a whole request HubSpot refused or failed."""
        status, text = answer.status, answer.message()
        reason = f"HTTP {status}" + (f" {text}" if text else "")
        retry_after = classify.parse_retry_after(answer.headers.get("Retry-After"))
        if status == 401:
            return Outcome(
                "retry",
                status,
                f"HubSpot rejected the token: {reason}",
                classify.THROTTLE_MIN_DELAY_S,
            )
        if status == 423:
            return Outcome("retry", status, reason, max(retry_after or 0.0, LOCKED_MIN_DELAY_S))
        if status == 429:
            daily = isinstance(answer.body, dict) and answer.body.get("policyName") == "DAILY"
            wait_s = DAILY_LIMIT_DELAY_S if daily else (retry_after or 0.0)
            return Outcome("retry", status, reason, max(wait_s, classify.THROTTLE_MIN_DELAY_S))
        if status == 477:
            return Outcome("retry", status, reason, retry_after or classify.THROTTLE_MIN_DELAY_S)
        outcome = classify.classify(status, retry_after=answer.headers.get("Retry-After"))
        return dataclasses.replace(outcome, error=reason)

    # -- HTTP -----------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> _Answer:
        """One request within the budget, authorised; a 401 refreshes an OAuth token once.

        Raises:
            aiohttp.ClientError, TimeoutError: the request did not complete.
        """
        answer = await self._request(method, path, body)
        if answer.status == 401 and self.settings.refresh_token is not None:
            await self._refresh(stale=True)
            answer = await self._request(method, path, body)
        if answer.status == 429:
            self._throttled(answer)
        return answer

    async def _request(self, method: str, path: str, body: Any) -> _Answer:
        token = await self._access_token()
        async with self.budget.slot():  # held until the answer is read: see ratelimit
            reply = await self.request(
                method,
                self.settings.base_url + path,
                endpoint=f"{method} {path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        try:
            decoded = json.loads(reply.raw) if reply.raw else None
        except ValueError:
            decoded = None
        return _Answer(reply.status, decoded, reply.headers)

    def _throttled(self, answer: _Answer) -> None:
        """Hold every request of this connector for one window.

        A longer ``Retry-After`` is honoured by rescheduling the deliveries concerned, not by
        sleeping here: a delivery run must not stall for minutes inside one connector.
        """
        self.budget.pause(self.settings.rate_limit_window_seconds)
        logger.warning(
            "HubSpot rate limit reached: %s",
            answer.message() or "429",
            extra={"event": "hubspot.throttled", "connector": self.name},
        )

    async def _access_token(self) -> str:
        if self._token is None or self.clock() >= self._token_expires_at:
            await self._refresh(stale=False)
        assert self._token is not None
        return self._token

    async def _refresh(self, *, stale: bool) -> None:
        """Get a new OAuth access token (once, however many requests wait for it)."""
        settings = self.settings
        if settings.refresh_token is None or settings.client_secret is None:
            return
        seen = self._token
        async with self._refresh_lock:
            if self._token != seen or (not stale and self.clock() < self._token_expires_at):
                return  # another caller refreshed meanwhile
            form = {
                "grant_type": "refresh_token",
                "refresh_token": settings.refresh_token.get_secret_value(),
                "client_id": settings.client_id,
                "client_secret": settings.client_secret.get_secret_value(),
            }
            try:
                async with self.budget.slot():
                    reply = await self.request(
                        "POST",
                        settings.base_url + "/oauth/v1/token",
                        endpoint="POST /oauth/v1/token",
                        data=form,
                        allow_redirects=True,
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise errors.ConnectorError(
                    f"connector {self.name}: HubSpot's token endpoint failed: {exc!r}"
                ) from exc
            raw, status = reply.raw, reply.status
            text = raw.decode("utf-8", "replace")[: classify.ERROR_EXCERPT_CHARS]
            if 400 <= status < 500:
                raise errors.ConnectorError(
                    f"connector {self.name}: HubSpot refused the refresh token"
                    f" (HTTP {status}: {text}); authorise the app again"
                )
            try:
                granted: Any = json.loads(raw) if status == 200 else None
                token = str(granted["access_token"])
                lifetime = float(granted.get("expires_in", 1800))
            except (ValueError, TypeError, KeyError):
                raise errors.ConnectorError(
                    f"connector {self.name}: HubSpot's token endpoint answered HTTP {status}"
                    f" without a token: {text}"
                ) from None
            self._token = token
            self._token_expires_at = self.clock() + max(
                lifetime - settings.token_refresh_margin_seconds, lifetime / 2
            )

    # -- check-config --online ------------------------------------------------------------

    async def check(self) -> None:
        """The token works and every mapped property (and the Lance-id one) exists."""
        for object_type, settings in self.settings.objects().items():
            answer = await self.call("GET", f"/crm/v3/properties/{object_type}")
            if answer.status != 200 or not isinstance(answer.body, dict):
                raise errors.ConnectorError(
                    f"reading {object_type} properties: HTTP {answer.status} {answer.message()}"
                )
            names = {p.get("name") for p in answer.body.get("results") or [] if isinstance(p, dict)}
            mapped = [settings.lance_id_property, *settings.writable()]
            missing = [name for name in mapped if name not in names]
            if missing:
                raise errors.ConnectorError(
                    f"{object_type}: HubSpot has no propert{'y' if len(missing) == 1 else 'ies'}"
                    f" {', '.join(missing)}; create {'it' if len(missing) == 1 else 'them'}"
                    " (Settings → Properties) or change the mapping"
                )


def _per_record(answer: _Answer, ids: Sequence[str]) -> dict[str, Outcome]:
    """Per-record outcomes of a 200/207 batch answer, errors matched through ``context``."""
    body = answer.body
    done = {str(r.get("id")) for r in body.get("results") or [] if isinstance(r, dict)}
    outcomes = {i: Outcome.delivered(answer.status) for i in ids if i in done}
    unmatched: list[Outcome] = []
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        category = str(error.get("category") or "")
        message = str(error.get("message") or "")[: classify.ERROR_EXCERPT_CHARS]
        reason = f"{category}: {message}" if category else message
        kind: Literal["retry", "dead"] = "dead" if category in PERMANENT_CATEGORIES else "retry"
        outcome = Outcome(kind, answer.status, reason or "HubSpot reported an error")
        context = error.get("context") or {}
        named = [
            str(v) for key in ("objectWriteTraceId", "ids", "id") for v in context.get(key) or []
        ]
        matched = [i for i in named if i in ids and i not in outcomes]
        for object_id in matched:
            outcomes[object_id] = outcome
        if not matched:
            unmatched.append(outcome)
    for object_id in ids:
        if object_id not in outcomes:
            fallback = unmatched[0] if len(unmatched) == 1 else None
            outcomes[object_id] = fallback or Outcome(
                "retry", answer.status, "HubSpot's answer did not mention this record"
            )
    return outcomes


def _by_type(records: Sequence[tuple[str, str]]) -> dict[ObjectType, list[str]]:
    grouped: dict[ObjectType, dict[str, None]] = {}
    for named, object_id in records:
        object_type = object_type_of(named)
        if object_type is not None:
            grouped.setdefault(object_type, {})[object_id] = None
    return {object_type: list(ids) for object_type, ids in grouped.items()}


def _workflow_properties(payload: dict[str, Any]) -> Mapping[str, Any]:
    """The record's properties: ``properties`` of an "all properties" body, else the body.

    A customised body ("Customize request body") puts the chosen properties at the top level.
    """
    properties = payload.get("properties", payload)
    if not isinstance(properties, dict):
        raise HookError(400, "invalid_body", "properties of a workflow call must be an object")
    return properties


def _workflow_record_id(payload: dict[str, Any], properties: Mapping[str, Any]) -> Any:
    """The record id of a workflow call, or ``None``: the first of the names HubSpot uses."""
    for found in (
        payload.get("objectId"),
        payload.get("vid"),
        payload.get("hs_object_id"),
        _property_value(properties, "hs_object_id"),
    ):
        if _is_id(found):
            return found
    return None


def _property_value(properties: Mapping[str, Any], name: str) -> Any:
    """A property's value in a workflow payload: plain, or legacy ``{"value": ...}``."""
    value = properties.get(name)
    return value.get("value") if isinstance(value, dict) else value


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 30


def _bad_signature(version: str, request: HookRequest) -> str:
    return (
        f"{version} signature does not match (checked against {request.url};"
        " behind a proxy set server.public_url to the URL HubSpot calls)"
    )

"""Salesforce inbound: Outbound Messages (SOAP) and Flow HTTP Callouts (JSON) become tasks."""

from __future__ import annotations

import hashlib
import html
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic
from aiohttp import web
from defusedxml import ElementTree as SafeElementTree  # type: ignore[import-untyped]
from defusedxml.common import DefusedXmlException  # type: ignore[import-untyped]
from pydantic import Field

from bridge import connector, model, registry
from bridge.connector import HookError, HookRequest
from connectors.salesforce import auth
from connectors.salesforce.config import (
    MAX_FLOW_RECORDS,
    MAX_NOTIFICATIONS,
    UUID4,
    UUID4_RE,
    ObjectType,
    PersonSettings,
    id18,
    object_type_of,
    same_org_id,
)

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


def _is_json(request: HookRequest) -> bool:
    """Whether a request is a Flow callout (JSON) rather than an Outbound Message (SOAP)."""
    return _media_type(request.headers) == JSON_MEDIA_TYPE


class FlowRecord(pydantic.BaseModel):
    """One record of a Flow HTTP Callout body."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    record_id: str = Field(alias="recordId", pattern=r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
    object_type: ObjectType = Field(alias="objectType")
    lance_id: str | None = Field(default=None, alias="lanceId", pattern=UUID4)
    # Instead of the Lance id, a Lead's or Contact's LinkedIn URL: the person is found first.
    linkedin_url: str | None = Field(default=None, alias="linkedinUrl", max_length=2000)
    fields: tuple[Literal["emails", "phones", "summary"], ...] | None = Field(
        default=None, min_length=1
    )

    @pydantic.model_validator(mode="after")
    def _one_person(self) -> FlowRecord:
        if (self.lance_id is None) == (self.linkedin_url is None):
            raise ValueError("give lanceId or linkedinUrl (exactly one)")
        return self


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


class Hooks(auth.Api):
    """Takes Outbound Messages and Flow callouts (``/hooks/salesforce``)."""

    hook_path = "/hooks/salesforce"

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
        if isinstance(tasks, str) and not lance_id:
            tasks = self._match(object_type, canonical, values) or tasks
        return connector.inbound_of(key, tasks, (object_type, canonical))

    def _match(
        self, object_type: ObjectType, record_id: str, values: Mapping[str, str]
    ) -> model.Match | None:
        """The person search a Lead or Contact without a Lance id asks for, if it can."""
        settings = self.settings.objects()[object_type]
        if not isinstance(settings, PersonSettings):
            return None
        record = model.Target(self.name, object_type, record_id)
        for kind in settings.match_by:
            if kind == "linkedin":
                value = values.get(settings.linkedin_field.lower())
                match = connector.linkedin_match(
                    value,
                    settings.linkedin_field,
                    settings.enrich,
                    record,
                    write_back=settings.write_back,
                )
            else:
                first = values.get(settings.first_name_field.lower(), "")
                last = values.get(settings.last_name_field.lower(), "")
                match = connector.name_match(
                    f"{first} {last}",
                    values.get(settings.company_field.lower()),
                    settings.enrich,
                    record,
                    write_back=settings.write_back,
                )
            if match is not None:
                return match
        return None

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
            tasks = self._flow_tasks(record, canonical)
            if isinstance(tasks, str) and record.fields is not None:
                raise _JsonRefusal(400, "invalid_body", f"{where or 'body'}: {tasks}")
            key = f"flow:{digest}:{index}"
            target = (record.object_type, canonical)
            events.append(connector.inbound_of(key, tasks, target))
        return events

    def _flow_tasks(self, record: FlowRecord, canonical: str) -> connector.Lookup:
        """A callout's record: its tasks by Lance id, or the search its LinkedIn URL asks for."""
        if record.lance_id is not None:
            return self.tasks_for(record.object_type, canonical, record.lance_id, record.fields)
        settings = self.settings.objects()[record.object_type]
        if not isinstance(settings, PersonSettings):
            return f"{record.object_type}: only Leads and Contacts are matched by linkedinUrl"
        fields = settings.enrich if record.fields is None else record.fields
        if "summary" in fields:
            return f"fields: {record.object_type} takes emails and phones, not summary"
        target = model.Target(self.name, record.object_type, canonical)
        match = connector.linkedin_match(
            record.linkedin_url, "linkedinUrl", fields, target, write_back=settings.write_back
        )
        return match or f"no {settings.lance_id_field} and no linkedinUrl"

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
        if not UUID4_RE.match(lance_id):
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

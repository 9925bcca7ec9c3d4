"""HubSpot inbound: app webhook batches and workflow calls become tasks.

``contact.creation`` / ``company.creation`` events carry no properties: those records are read
(100 ids per request) for their Lance id by the lookup job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from bridge import connector, errors, model
from bridge.classify import Outcome
from bridge.connector import HookError, HookRequest
from connectors.hubspot import auth
from connectors.hubspot.config import MAX_EVENTS, MAX_INPUTS, ObjectType, is_id, object_type_of

logger = logging.getLogger(__name__)


class Hooks(auth.Api):
    """Takes HubSpot's webhooks (``/hooks/hubspot``) and reads created records."""

    hook_path = "/hooks/hubspot"

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
        if not isinstance(kind, str) or not is_id(object_id):
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
        return self._property_change(key, object_type, str(object_id), item)

    def _property_change(
        self, key: str, object_type: ObjectType, object_id: str, item: dict[str, Any]
    ) -> model.Inbound:
        """A change of the Lance-id property triggers; one of a match property searches."""
        record = (object_type, object_id)
        name = item.get("propertyName")
        value = item.get("propertyValue")
        if object_type == "contacts" and name in self.settings.contacts.match_properties():
            # The event names one property: the record may already hold a Lance id, which a
            # search must never replace. Read the record (batched by the lookup job) instead.
            return model.Inbound(key, lookup=record)
        lance_id_property = self.settings.objects()[object_type].lance_id_property
        if name != lance_id_property:
            return model.Inbound(
                key, skipped=f"change of {name}, not {lance_id_property}", record=record
            )
        return self._inbound(key, object_type, object_id, value)

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
        known = {
            name,
            *(self.settings.contacts.match_properties() if object_type == "contacts" else ()),
        }
        if properties is payload and not known & payload.keys():
            # A customised body without the Lance-id key is a workflow set up wrongly: say
            # so to HubSpot (it shows the answer in the workflow's history) instead of a skip.
            raise HookError(
                400,
                "invalid_body",
                f"a workflow call for {object_type} needs {name} in the body"
                " (or ?objectType= naming the other object type)",
            )
        key = "workflow:" + hashlib.sha256(request.body).hexdigest()
        if name not in properties:
            # A customised body with match properties only: whether the record already has a
            # Lance id is not in it, so read the record rather than search on a guess.
            return model.Inbound(key, lookup=(object_type, str(object_id)))
        values = {prop: _property_value(properties, prop) for prop in known}
        found = self.record_tasks(object_type, str(object_id), values)
        return connector.inbound_of(key, found, (object_type, str(object_id)))

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
        tasks = self.tasks_for(object_type, object_id, lance_id)
        return connector.inbound_of(key, tasks, (object_type, object_id))

    def record_tasks(
        self, object_type: ObjectType, object_id: str, properties: Mapping[str, Any]
    ) -> connector.Lookup:
        """What a record with these properties asks for: its tasks when it has a Lance id,
        else (contacts) the person search its match properties allow, else why nothing."""
        lance_id = properties.get(self.settings.objects()[object_type].lance_id_property)
        found = self.tasks_for(object_type, object_id, lance_id)
        if object_type != "contacts" or not isinstance(found, str) or _filled(lance_id):
            return found
        return self._match(object_id, properties) or found

    def _match(self, object_id: str, properties: Mapping[str, Any]) -> model.Match | None:
        contacts = self.settings.contacts
        record = model.Target(self.name, "contacts", object_id)
        for kind in contacts.match_by:
            if kind == "linkedin":
                value = properties.get(contacts.linkedin_property)
                where = contacts.linkedin_property
                match = connector.linkedin_match(
                    value, where, contacts.enrich, record, write_back=contacts.write_back
                )
            else:
                first = properties.get(contacts.first_name_property)
                last = properties.get(contacts.last_name_property)
                full = " ".join(p for p in (first, last) if isinstance(p, str) and p.strip())
                company = properties.get(contacts.company_property)
                match = connector.name_match(
                    full, company, contacts.enrich, record, write_back=contacts.write_back
                )
            if match is not None:
                return match
        return None

    def tasks_for(self, object_type: ObjectType, object_id: str, lance_id: Any) -> connector.Lookup:
        """The enrichments a record with ``lance_id`` asks for, or why there are none."""
        settings = self.settings.objects()[object_type]
        if not isinstance(lance_id, str) or not lance_id.strip():
            return f"no {settings.lance_id_property} on {object_type} {object_id}"
        if not auth.UUID4.match(lance_id.strip()):
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
                wanted = [settings.lance_id_property]
                if object_type == "contacts":
                    wanted += self.settings.contacts.match_properties()
                try:
                    current = await self._read(object_type, chunk, wanted)
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
                        else self.record_tasks(object_type, object_id, properties)
                    )
        for named, object_id in records:
            if object_type_of(named) is None:
                found[(named, object_id)] = f"{named}: not a contact or company"
        return found


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
        if is_id(found):
            return found
    return None


def _filled(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _property_value(properties: Mapping[str, Any], name: str) -> Any:
    """A property's value in a workflow payload: plain, or legacy ``{"value": ...}``."""
    value = properties.get(name)
    return value.get("value") if isinstance(value, dict) else value

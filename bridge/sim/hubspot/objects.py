"""The CRM endpoints of the HubSpot sandbox: properties, single and batch read and update."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.sim import _http
from bridge.sim.hubspot import validation
from bridge.sim.hubspot.errors import ApiError, invalid, missing_attributes, standard_error
from bridge.sim.hubspot.schema import (
    DEFAULT_READ,
    DEFAULT_SCHEMAS,
    GROUPS,
    KINDS,
    READ_ONLY,
    UNIQUE,
    iso,
    resolve,
)
from bridge.sim.hubspot.state import SANDBOX, HubSpotSandbox, not_found_message


def _property_json(t: str, name: str) -> dict[str, object]:
    kind, field_type = KINDS.get(name, ("string", "text"))
    read_only = name in READ_ONLY
    stamp = iso(0)
    return {
        "updatedAt": stamp,
        "createdAt": stamp,
        "name": name,
        "label": name,
        "type": kind,
        "fieldType": field_type,
        "description": "",
        "groupName": GROUPS[t],
        "options": [],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": name in UNIQUE[t],
        "hidden": False,
        "hubspotDefined": name in DEFAULT_SCHEMAS[t] and not name.startswith("lance_"),
        "modificationMetadata": {
            "archivable": not read_only,
            "readOnlyDefinition": name in DEFAULT_SCHEMAS[t],
            "readOnlyValue": read_only,
        },
        "formField": not read_only,
    }


async def list_properties(request: web.Request) -> web.Response:
    """``GET /crm/v3/properties/{objectType}``."""
    sandbox = request.app[SANDBOX]
    t = resolve(request.match_info["objectType"])
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


async def get_object(request: web.Request) -> web.Response:
    """``GET /crm/v3/objects/{objectType}/{objectId}``."""
    sandbox = request.app[SANDBOX]
    t = resolve(request.match_info["objectType"])
    record_id = _found(sandbox, request, t)
    names = _query_properties(request) or DEFAULT_READ[t]
    return _http.json_response(sandbox._view(t, record_id, names))


async def patch_object(request: web.Request) -> web.Response:
    """``PATCH /crm/v3/objects/{objectType}/{objectId}``."""
    sandbox = request.app[SANDBOX]
    t = resolve(request.match_info["objectType"])
    body = validation.json_object(await validation.read_json(request), "SimplePublicObjectInput")
    if "properties" not in body:
        raise missing_attributes("SimplePublicObjectInput", ["properties"])
    properties = validation.string_map(body["properties"], "properties")
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


def _batch_response(
    results: list[dict[str, object]], errors: list[dict[str, Any]], started: str, completed: str
) -> web.Response:
    body: dict[str, object] = {"status": "COMPLETE", "results": results}
    if errors:
        body |= {"numErrors": len(errors), "errors": errors}
    body |= {"startedAt": started, "completedAt": completed}
    return _http.json_response(body, 207 if errors else 200)


async def batch_update(request: web.Request) -> web.Response:
    """``POST /crm/v3/objects/{objectType}/batch/update``: 207 with the inputs that failed."""
    sandbox = request.app[SANDBOX]
    t = resolve(request.match_info["objectType"])
    body = validation.json_object(
        await validation.read_json(request), "BatchInputSimplePublicObjectBatchInput"
    )
    items = [
        validation.update_input(v, i)
        for i, v in enumerate(validation.batch_inputs(body, "BatchInput"))
    ]
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=ids.index)
    if duplicates:
        raise invalid(f"Duplicate IDs found in batch input: [{', '.join(duplicates)}]")
    started = iso(sandbox.clock())
    results, errors = [], []
    for item in items:
        try:
            results.append(sandbox._update_one(t, item))
        except ApiError as err:
            errors.append(standard_error(err.category, err.message, err.context or {}))
    return _batch_response(results, errors, started, iso(sandbox.clock()))


async def batch_read(request: web.Request) -> web.Response:
    """``POST /crm/v3/objects/{objectType}/batch/read``: 207 naming the ids not found."""
    sandbox = request.app[SANDBOX]
    t = resolve(request.match_info["objectType"])
    body = validation.json_object(
        await validation.read_json(request), "BatchReadInputSimplePublicObjectId"
    )
    ids, names = validation.read_ids(body), validation.property_names(body.get("properties"), t)
    id_property = body.get("idProperty")
    if id_property is not None and not isinstance(id_property, str):
        raise invalid("Invalid input JSON: idProperty must be a string")
    started = iso(sandbox.clock())
    results, missing = [], []
    for object_id in ids:
        record_id = sandbox._find(t, object_id, id_property)
        if record_id is None:
            missing.append(object_id)
        else:
            results.append(sandbox._view(t, record_id, names))
    errors = [standard_error("OBJECT_NOT_FOUND", not_found_message(t), {"ids": missing})]
    return _batch_response(results, errors if missing else [], started, iso(sandbox.clock()))

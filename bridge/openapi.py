"""The OpenAPI 3.1 document served at ``/openapi.json``.

Request and response schemas are generated from the pydantic models in :mod:`bridge.schemas`,
so the document cannot drift from the validation; the routes, parameters and status codes are
written here, next to one another, and ``tests/integration/test_openapi_fuzz.py`` holds the
handlers to them with schemathesis.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import Any

import pydantic
from pydantic import json_schema

import bridge
from bridge import schemas

_REF = "#/components/schemas/{model}"
# The schema of a model: a ``$ref`` into ``components.schemas``.
Refs = Callable[[type[Any]], dict[str, Any]]
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
# The largest id the handlers read: 18 digits, under SQLite's 2**63 - 1.
MAX_ID = 10**18 - 1
# web.MAX_PAGE: web imports this module, so the value is repeated; a test compares the two.
MAX_PAGE = 1000

_REQUESTS: tuple[type[Any], ...] = (schemas.TriggerRequest, schemas.QueryRequest)
_RESPONSES: tuple[type[Any], ...] = (
    schemas.TriggerAnswer,
    schemas.QueryRecord,
    schemas.EnrichmentWithDeliveries,
    schemas.EnrichmentPage,
    schemas.Delivery,
    schemas.DeliveryPage,
    schemas.InboundPage,
    schemas.Health,
    schemas.Ready,
    schemas.NotReady,
    schemas.Error,
)

# What each error status means on the routes that can answer it; the body is always Error.
_ERROR_TEXT = {
    400: "`invalid_parameter`: a query parameter is not one the route accepts",
    401: "`unauthorized`: no bearer token, a wrong one, or none configured (server.api_tokens)",
    404: "`not_found`: no row with this id (an id that is not a number is not found either)",
    409: "`not_dead`: only a dead delivery can be replayed",
    413: "`body_too_large`: the body exceeds server.max_body_bytes",
    422: "`validation_error` or `unknown_connector`: the body is JSON but not a valid request;"
    " `details` locates each problem of the shape",
    500: "`internal_error`: the bridge failed to handle the request; see its log",
    503: "`ledger_unavailable`: the ledger cannot be used now (disk full, I/O error, file"
    " deleted); nothing was stored, retry later",
}
_METRICS_503 = "`starting`: the ledger is not open yet; `ledger_unavailable`: it cannot be read now"
_TRIGGER_422 = (
    "`validation_error`: not a valid request (`details` locates each problem of the shape);"
    " only person phones/emails can be triggered, and a CRM target needs objectType and objectId."
    " `unknown_connector`: a target names no configured connector"
)
_BODY_400 = (
    "`invalid_json`: the body is not JSON, or nests deeper than server.max_json_depth;"
    " `invalid_body`: it does not decode as its Content-Encoding says"
)


class _NoFieldTitles(json_schema.GenerateJsonSchema):
    """Leave out pydantic's per-field titles ("Entityid"): they only repeat the key."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _components() -> tuple[Refs, dict[str, Any]]:
    """A ``$ref`` for each model (by class name), and every schema they need."""
    inputs: list[tuple[str, json_schema.JsonSchemaMode, pydantic.TypeAdapter[Any]]] = [
        (m.__name__, "validation", pydantic.TypeAdapter(m)) for m in _REQUESTS
    ]
    inputs += [(m.__name__, "serialization", pydantic.TypeAdapter(m)) for m in _RESPONSES]
    refs, defs = pydantic.TypeAdapter.json_schemas(
        inputs, ref_template=_REF, schema_generator=_NoFieldTitles
    )
    by_model = {name: ref for (name, _), ref in refs.items()}
    components = defs.get("$defs", {})
    components["TriggerTask"] |= _TRIGGERABLE
    # The envelope reads best whole: ``{"error": {"code", "message", "details"}}`` in one place.
    components["Error"]["properties"]["error"] = components.pop("ErrorBody")
    return lambda model: by_model[model.__name__], components


# What the handler checks across fields (web._task): Lance triggers person phones/emails only;
# anything else must be tracked. ``mode`` defaults to trigger, so a task without it must fit.
_TRIGGERABLE = {
    "anyOf": [
        {"required": ["mode"], "properties": {"mode": {"const": "track"}}},
        {
            "properties": {
                "entityType": {"const": "person"},
                "field": {"enum": ["phones", "emails"]},
            }
        },
    ]
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(
    error: dict[str, Any], *statuses: int, texts: dict[int, str] | None = None
) -> dict[str, Any]:
    """Error answers for ``statuses`` (and always 500), described by ``texts`` or the default."""
    described = _ERROR_TEXT | (texts or {})
    return {str(status): _json(error, described[status]) for status in (*statuses, 500)}


def _body(ref: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _page_params(states: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        _query("state", {"type": "string", "enum": list(states)}, "only rows in this state"),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
            "rows per page",
        ),
        _query(
            "cursor",
            {"type": "string", "pattern": schemas.CURSOR_PATTERN},
            "the `nextCursor` of the previous page",
        ),
    ]


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "description": "the ledger id",
}


def _v1_paths(ref: Refs, error: dict[str, Any]) -> dict[str, Any]:
    enrichment_states = typing.get_args(schemas.EnrichmentState)
    delivery_states = typing.get_args(schemas.DeliveryState)
    return {
        "/v1/triggers": {
            "post": {
                "operationId": "postTriggers",
                "summary": "Accept enrichment tasks (idempotent per entityType, entityId, field)",
                "security": _BEARER,
                "requestBody": _body(ref(schemas.TriggerRequest)),
                "responses": {
                    "202": _json(ref(schemas.TriggerAnswer), "the ledger rows, one per task"),
                    **_errors(
                        error, 400, 401, 413, 422, 503, texts={400: _BODY_400, 422: _TRIGGER_422}
                    ),
                },
            }
        },
        "/v1/enrichments/query": {
            "post": {
                "operationId": "queryEnrichments",
                "summary": "Lance's batch-query shape, answered from the ledger",
                "security": _BEARER,
                "requestBody": _body(ref(schemas.QueryRequest)),
                "responses": {
                    "200": _json(
                        {"type": "array", "items": ref(schemas.QueryRecord)},
                        "the newest record of each task that has one, in task order",
                    ),
                    **_errors(error, 400, 401, 413, 422, 503, texts={400: _BODY_400}),
                },
            }
        },
        "/v1/enrichments": {
            "get": {
                "operationId": "listEnrichments",
                "summary": "A page of enrichments in id order",
                "security": _BEARER,
                "parameters": _page_params(enrichment_states),
                "responses": {
                    "200": _json(ref(schemas.EnrichmentPage), "a page"),
                    **_errors(error, 400, 401, 503),
                },
            }
        },
        "/v1/enrichments/{id}": {
            "get": {
                "operationId": "getEnrichment",
                "summary": "One enrichment with its targets and deliveries",
                "security": _BEARER,
                "parameters": [_ID],
                "responses": {
                    "200": _json(ref(schemas.EnrichmentWithDeliveries), "the enrichment"),
                    **_errors(error, 401, 404, 503),
                },
            }
        },
        "/v1/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "A page of deliveries in id order",
                "security": _BEARER,
                "parameters": [
                    *_page_params(delivery_states),
                    _query("connector", {"type": "string"}, "only this connector's deliveries"),
                ],
                "responses": {
                    "200": _json(ref(schemas.DeliveryPage), "a page"),
                    **_errors(error, 400, 401, 503),
                },
            }
        },
        "/v1/inbound": {
            "get": {
                "operationId": "listInbound",
                "summary": "A page of inbound CRM events and what became of them (matching too)",
                "security": _BEARER,
                "parameters": [
                    _query(
                        "state",
                        {"type": "string", "enum": list(typing.get_args(schemas.InboundState))},
                        "only events in this state",
                    ),
                    _page_params(())[1],
                    _query("cursor", {"type": "string"}, "the `nextCursor` of the previous page"),
                    _query("source", {"type": "string"}, "only this connector's events (or api)"),
                ],
                "responses": {
                    "200": _json(ref(schemas.InboundPage), "a page"),
                    **_errors(error, 400, 401, 503),
                },
            }
        },
        "/v1/deliveries/{id}/retry": {
            "post": {
                "operationId": "retryDelivery",
                "summary": "Replay a dead delivery (never re-triggers Lance)",
                "security": _BEARER,
                "parameters": [_ID],
                "responses": {
                    "200": _json(ref(schemas.Delivery), "the delivery, pending again"),
                    **_errors(error, 401, 404, 409, 503),
                },
            }
        },
    }


_HOOK_KIND = {
    "name": "kind",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["hubspot", "salesforce"]},
    "description": "the CRM: served when a connector of that type is configured",
}
_HOOK_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the connector's name, when several of one type are configured",
}
_HOOK_SUMMARY = {
    "type": "object",
    "required": ["received", "duplicates", "skipped", "lookups", "enrichments"],
    "properties": {
        "received": {"type": "integer", "description": "events in the request"},
        "duplicates": {"type": "integer", "description": "events already received (ignored)"},
        "skipped": {"type": "integer", "description": "events that trigger nothing"},
        "lookups": {"type": "integer", "description": "records to read before triggering"},
        "enrichments": {"type": "integer", "description": "ledger rows the events landed on"},
    },
}
_SOAP = {
    "text/xml": {"schema": {"type": "string"}},
    "application/soap+xml": {"schema": {"type": "string"}},
}


def _hook_paths(error: dict[str, Any]) -> dict[str, Any]:
    def hook(operation_id: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        refused = {"application/json": {"schema": error}, **_SOAP}
        return {
            "post": {
                "operationId": operation_id,
                "summary": "Events a CRM sends (HubSpot webhooks, Salesforce Outbound Messages)",
                "description": "Authenticated by the CRM's own means (HubSpot signatures,"
                " Salesforce organization id), not a bearer token. Answered once the events"
                " are durable; a retried or duplicated event changes nothing. Salesforce is"
                " answered with the SOAP Ack, or a SOAP fault.",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {}}, **_SOAP},
                },
                "responses": {
                    "200": {
                        "description": "stored",
                        "content": {"application/json": {"schema": _HOOK_SUMMARY}, **_SOAP},
                    },
                    **{
                        str(status): {"description": text, "content": refused}
                        for status, text in (
                            (400, "not what the CRM sends (malformed JSON or XML, bad shape)"),
                            (401, "bad or stale signature, or another organization"),
                            (404, "no connector takes events at this path"),
                            (413, "the body exceeds server.max_body_bytes"),
                            (415, "a content type the CRM does not send"),
                            (503, "the ledger cannot store the events now; nothing was stored"),
                            (500, "the bridge failed to handle the request; see its log"),
                        )
                    },
                },
            }
        }

    return {
        "/hooks/{kind}": hook("postHook", [_HOOK_KIND]),
        "/hooks/{kind}/{name}": hook("postNamedHook", [_HOOK_KIND, _HOOK_NAME]),
    }


def _service_paths(ref: Refs, error: dict[str, Any]) -> dict[str, Any]:
    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "responses": responses | _errors(error),
            }
        }

    metrics = {
        "description": "the Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return {
        "/healthz": get("healthz", "Liveness", {"200": _json(ref(schemas.Health), "alive")}),
        "/readyz": get(
            "readyz",
            "Readiness: the ledger is open and the jobs run",
            {
                "200": _json(ref(schemas.Ready), "ready"),
                "503": _json(ref(schemas.NotReady), "starting, or the ledger is unavailable"),
            },
        ),
        "/metrics": get(
            "metrics",
            "Prometheus metrics",
            {"200": metrics, "503": _json(error, _METRICS_503)},
        ),
        "/openapi.json": get(
            "openapi",
            "This document",
            {
                "200": _json(
                    {"type": "object", "required": ["openapi", "info", "paths"]}, "OpenAPI 3.1"
                )
            },
        ),
    }


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI document (built once)."""
    ref, components = _components()
    error = ref(schemas.Error)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lance-bridge",
            "version": bridge.__version__,
            "description": 'Errors are JSON `{"error": {"code", "message", "details"}}`.'
            " A method a path does not have is answered 405 `method_not_allowed` with `Allow`.",
        },
        "paths": _v1_paths(ref, error) | _hook_paths(error) | _service_paths(ref, error),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }

"""The OpenAPI document's paths: the ``/v1`` API, the CRM hooks and the service routes."""

from __future__ import annotations

import typing
from typing import Any

from bridge import schemas
from bridge.openapi.parts import (
    BEARER,
    ID_PARAM,
    Refs,
    answer,
    body,
    errors,
    page_params,
    query_param,
)

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


def v1_paths(ref: Refs, error: dict[str, Any]) -> dict[str, Any]:
    """The ``/v1`` API: triggers, the batch query, enrichments, deliveries, inbound events."""
    enrichment_states = typing.get_args(schemas.EnrichmentState)
    delivery_states = typing.get_args(schemas.DeliveryState)
    return {
        "/v1/triggers": {
            "post": {
                "operationId": "postTriggers",
                "summary": "Accept enrichment tasks (idempotent per entityType, entityId, field)",
                "security": BEARER,
                "requestBody": body(ref(schemas.TriggerRequest)),
                "responses": {
                    "202": answer(ref(schemas.TriggerAnswer), "the ledger rows, one per task"),
                    **errors(
                        error, 400, 401, 413, 422, 503, texts={400: _BODY_400, 422: _TRIGGER_422}
                    ),
                },
            }
        },
        "/v1/enrichments/query": {
            "post": {
                "operationId": "queryEnrichments",
                "summary": "Lance's batch-query shape, answered from the ledger",
                "security": BEARER,
                "requestBody": body(ref(schemas.QueryRequest)),
                "responses": {
                    "200": answer(
                        {"type": "array", "items": ref(schemas.QueryRecord)},
                        "the newest record of each task that has one, in task order",
                    ),
                    **errors(error, 400, 401, 413, 422, 503, texts={400: _BODY_400}),
                },
            }
        },
        "/v1/enrichments": {
            "get": {
                "operationId": "listEnrichments",
                "summary": "A page of enrichments in id order",
                "security": BEARER,
                "parameters": page_params(enrichment_states),
                "responses": {
                    "200": answer(ref(schemas.EnrichmentPage), "a page"),
                    **errors(error, 400, 401, 503),
                },
            }
        },
        "/v1/enrichments/{id}": {
            "get": {
                "operationId": "getEnrichment",
                "summary": "One enrichment with its targets and deliveries",
                "security": BEARER,
                "parameters": [ID_PARAM],
                "responses": {
                    "200": answer(ref(schemas.EnrichmentWithDeliveries), "the enrichment"),
                    **errors(error, 401, 404, 503),
                },
            }
        },
        "/v1/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "A page of deliveries in id order",
                "security": BEARER,
                "parameters": [
                    *page_params(delivery_states),
                    query_param(
                        "connector", {"type": "string"}, "only this connector's deliveries"
                    ),
                ],
                "responses": {
                    "200": answer(ref(schemas.DeliveryPage), "a page"),
                    **errors(error, 400, 401, 503),
                },
            }
        },
        "/v1/inbound": {
            "get": {
                "operationId": "listInbound",
                "summary": "A page of inbound CRM events and what became of them (matching too)",
                "security": BEARER,
                "parameters": [
                    query_param(
                        "state",
                        {"type": "string", "enum": list(typing.get_args(schemas.InboundState))},
                        "only events in this state",
                    ),
                    page_params(())[1],
                    query_param(
                        "cursor", {"type": "string"}, "the `nextCursor` of the previous page"
                    ),
                    query_param(
                        "source", {"type": "string"}, "only this connector's events (or api)"
                    ),
                ],
                "responses": {
                    "200": answer(ref(schemas.InboundPage), "a page"),
                    **errors(error, 400, 401, 503),
                },
            }
        },
        "/v1/deliveries/{id}/retry": {
            "post": {
                "operationId": "retryDelivery",
                "summary": "Replay a dead delivery (never re-triggers Lance)",
                "security": BEARER,
                "parameters": [ID_PARAM],
                "responses": {
                    "200": answer(ref(schemas.Delivery), "the delivery, pending again"),
                    **errors(error, 401, 404, 409, 503),
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


def hook_paths(error: dict[str, Any]) -> dict[str, Any]:
    """The CRM hooks, authenticated by the CRM's own means."""

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


def service_paths(ref: Refs, error: dict[str, Any]) -> dict[str, Any]:
    """Health, readiness, metrics and this document."""

    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "responses": responses | errors(error),
            }
        }

    metrics = {
        "description": "the Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return {
        "/healthz": get("healthz", "Liveness", {"200": answer(ref(schemas.Health), "alive")}),
        "/readyz": get(
            "readyz",
            "Readiness: the ledger is open and the jobs run",
            {
                "200": answer(ref(schemas.Ready), "ready"),
                "503": answer(ref(schemas.NotReady), "starting, or the ledger is unavailable"),
            },
        ),
        "/metrics": get(
            "metrics",
            "Prometheus metrics",
            {"200": metrics, "503": answer(error, _METRICS_503)},
        ),
        "/openapi.json": get(
            "openapi",
            "This document",
            {
                "200": answer(
                    {"type": "object", "required": ["openapi", "info", "paths"]}, "OpenAPI 3.1"
                )
            },
        ),
    }

"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the request models."""

from __future__ import annotations

import functools
from typing import Any

import bridge
from bridge import schemas

_ERROR = {"$ref": "#/components/schemas/Error"}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(_ERROR, "error") for status in statuses}


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    components = {
        name: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, model in (
            ("TriggerRequest", schemas.TriggerRequest),
            ("QueryRequest", schemas.QueryRequest),
        )
    }
    defs: dict[str, Any] = {}
    for schema in components.values():
        defs.update(schema.pop("$defs", {}))
    components |= defs
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {},
                },
            }
        },
    }
    obj = {"type": "object"}
    id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    page_params = [
        {"name": "state", "in": "query", "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
    paths = {
        "/v1/triggers": {
            "post": {
                "summary": "Accept enrichment tasks",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/TriggerRequest"}
                        }
                    },
                },
                "responses": {"202": _json(obj, "accepted"), **_errors(400, 401, 413, 422)},
            }
        },
        "/v1/enrichments/query": {
            "post": {
                "summary": "Lance batch-query shape answered from the ledger",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/QueryRequest"}
                        }
                    },
                },
                "responses": {
                    "200": _json({"type": "array", "items": obj}, "records"),
                    **_errors(400, 401, 413, 422),
                },
            }
        },
        "/v1/enrichments": {
            "get": {
                "summary": "List enrichments",
                "security": _BEARER,
                "parameters": page_params,
                "responses": {"200": _json(obj, "a page"), **_errors(400, 401)},
            }
        },
        "/v1/enrichments/{id}": {
            "get": {
                "summary": "One enrichment",
                "security": _BEARER,
                "parameters": [id_param],
                "responses": {"200": _json(obj, "the enrichment"), **_errors(401, 404)},
            }
        },
        "/v1/deliveries": {
            "get": {
                "summary": "List deliveries",
                "security": _BEARER,
                "parameters": [
                    *page_params,
                    {"name": "connector", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(obj, "a page"), **_errors(400, 401)},
            }
        },
        "/v1/deliveries/{id}/retry": {
            "post": {
                "summary": "Replay a dead delivery",
                "security": _BEARER,
                "parameters": [id_param],
                "responses": {"200": _json(obj, "the delivery"), **_errors(401, 404, 409)},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json(obj, "OpenAPI 3.1")}}
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(obj, "alive")}}},
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {"200": _json(obj, "ready"), "503": _json(obj, "not ready")},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "lance-bridge", "version": bridge.__version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }

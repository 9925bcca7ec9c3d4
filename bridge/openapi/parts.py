"""The OpenAPI document's parts: component schemas from the pydantic models, and the pieces
every route's description is written with (answers, error answers, bodies, parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic
from pydantic import json_schema

from bridge import schemas

_REF = "#/components/schemas/{model}"
# The schema of a model: a ``$ref`` into ``components.schemas``.
Refs = Callable[[type[Any]], dict[str, Any]]
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
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


class _NoFieldTitles(json_schema.GenerateJsonSchema):
    """Leave out pydantic's per-field titles ("Entityid"): they only repeat the key."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def components() -> tuple[Refs, dict[str, Any]]:
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


def answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A JSON answer of ``schema``, described."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(
    error: dict[str, Any], *statuses: int, texts: dict[int, str] | None = None
) -> dict[str, Any]:
    """Error answers for ``statuses`` (and always 500), described by ``texts`` or the default."""
    described = _ERROR_TEXT | (texts or {})
    return {str(status): answer(error, described[status]) for status in (*statuses, 500)}


def body(ref: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body of the model ``ref`` names."""
    return {"required": True, "content": {"application/json": {"schema": ref}}}


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def page_params(states: tuple[str, ...]) -> list[dict[str, Any]]:
    """The list routes' ``state``, ``limit`` and ``cursor`` parameters."""
    return [
        query_param("state", {"type": "string", "enum": list(states)}, "only rows in this state"),
        query_param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
            "rows per page",
        ),
        query_param(
            "cursor",
            {"type": "string", "pattern": schemas.CURSOR_PATTERN},
            "the `nextCursor` of the previous page",
        ),
    ]


ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "description": "the ledger id",
}

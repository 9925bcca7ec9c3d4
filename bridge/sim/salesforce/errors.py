"""Salesforce's error answers: REST error arrays, OAuth errors and SaveResult errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from bridge.sim import _http

RETIRED = (
    "The requested resource is no longer available. This API version has been retired; "
    "use a supported API version."
)
NO_RESOURCE = "The requested resource does not exist"
FAULT_DEFAULTS = {
    401: ("INVALID_SESSION_ID", "Session expired or invalid"),
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    404: ("NOT_FOUND", NO_RESOURCE),
    503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable, please retry"),
}
UNKNOWN_EXCEPTION = (
    "UNKNOWN_EXCEPTION",
    "An unexpected error occurred. Please include this ErrorId if you contact support: "
    "1386145113-38862 (-1527283742)",
)


@dataclasses.dataclass(eq=False)
class RestError(_http.SimError):
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
class OAuthError(_http.SimError):
    """A token endpoint error: HTTP 400 ``{"error", "error_description"}``."""

    error: str
    description: str

    def __post_init__(self) -> None:
        super().__init__(self.description)

    def response(self) -> web.Response:
        """The OAuth error answer."""
        body = {"error": self.error, "error_description": self.description}
        return _http.json_response(body, 400)


def _json_error(exc: ValueError) -> RestError:
    where = (
        f" at [line:{exc.lineno}, column:{exc.colno}]"
        if isinstance(exc, json.JSONDecodeError)
        else ""
    )
    return RestError(400, "JSON_PARSER_ERROR", f"Unexpected character{where}")


def decode_json(raw: bytes) -> object:
    """A request body as JSON; 400 ``JSON_PARSER_ERROR`` if it is not."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _json_error(exc) from exc


def invalid_type(name: str) -> RestError:
    """The 400 ``INVALID_TYPE`` of an unknown sObject type."""
    return RestError(
        400,
        "INVALID_TYPE",
        f"sObject type '{name}' is not supported. If you are attempting to use a custom object, "
        "be sure to append the '__c' after the entity name. Please reference your WSDL or the "
        "describe call for the appropriate names.",
    )


def invalid_field(name: str, sobject: str) -> RestError:
    """The 400 ``INVALID_FIELD`` of an unknown field."""
    return RestError(
        400,
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom "
        "field, be sure to append the '__c' after the custom field name. Please reference your "
        "WSDL or the describe call for the appropriate names.",
    )


def save_error(code: str, message: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    """A failed SaveResult."""
    error = {"statusCode": code, "message": message, "fields": list(fields)}
    return {"success": False, "errors": [error]}


def unwritable(names: Sequence[str]) -> dict[str, Any]:
    """The SaveResult of an update naming unknown or read-only fields."""
    return save_error(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {', '.join(names)}. Please check the security "
        "settings of this field and verify that it is read/write for your profile or "
        "permission set.",
        names,
    )


def scalar_fields(record: Mapping[str, Any]) -> None:
    """Refuse (400) a record whose fields hold objects or arrays."""
    for name, value in record.items():
        if name != "attributes" and isinstance(value, dict | list):
            raise RestError(
                400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {name} from a structure"
            )

r"""HubSpot's error answers: the error body, batch ``StandardError``\s and the 429 body."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from bridge.sim import _http

NO_CREDENTIALS = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you"
    " can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
FAULT_TEXT = {
    423: ("LOCKED", "The resource is locked by a high-volume sync. Wait 2 seconds and retry."),
    477: ("MIGRATION_IN_PROGRESS", "Migration in progress. Retry after the Retry-After delay."),
    500: ("INTERNAL_ERROR", "internal error"),
    502: ("BAD_GATEWAY", "Bad Gateway"),
    503: ("SERVICE_UNAVAILABLE", "Service Unavailable"),
}


def _uuid() -> str:
    return str(uuid.uuid4())


def error_body(
    category: str,
    message: str,
    *,
    context: Mapping[str, list[str]] | None = None,
    errors: list[dict[str, object]] | None = None,
) -> dict[str, object]:
    """HubSpot's error body: ``status``, ``message``, ``correlationId``, ``category``, …"""
    body: dict[str, object] = {
        "status": "error",
        "message": message,
        "correlationId": _uuid(),
        "category": category,
    }
    if context is not None:
        body["context"] = dict(context)
    if errors is not None:
        body["errors"] = errors
    return body


def standard_error(category: str, message: str, context: Mapping[str, list[str]]) -> dict[str, Any]:
    """One ``StandardError`` of a 207 batch answer."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": dict(context),
        "errors": [],
        "links": {},
    }


def rate_limit_body() -> dict[str, object]:
    """The 429 body of the ten-secondly burst limit."""
    return {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": _uuid(),
        "policyName": "TEN_SECONDLY_ROLLING",
        "requestId": _uuid(),
    }


@dataclasses.dataclass(eq=False)
class ApiError(_http.SimError):
    """An error answer; ``raw`` replaces the standard body when HubSpot uses another shape."""

    status: int
    category: str
    message: str
    context: dict[str, list[str]] | None = None
    errors: list[dict[str, object]] | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    raw: dict[str, object] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def response(self) -> web.Response:
        """The aiohttp answer."""
        body = self.raw
        if body is None:
            body = error_body(self.category, self.message, context=self.context, errors=self.errors)
        return _http.json_response(body, self.status, self.headers)


def invalid(message: str) -> ApiError:
    """A 400 ``VALIDATION_ERROR``."""
    return ApiError(400, "VALIDATION_ERROR", message)


def missing_attributes(model: str, names: Iterable[str]) -> ApiError:
    """The 400 HubSpot answers when required attributes of ``model`` are not set."""
    listed = ", ".join(names)
    return invalid(
        f"Invalid input JSON: Cannot build {model}, some of required attributes are not set"
        f" [{listed}]"
    )


def oauth_error(status: str, message: str) -> ApiError:
    """A 400 of the OAuth endpoint, in its own body shape."""
    raw: dict[str, object] = {"status": status, "message": message, "correlationId": _uuid()}
    return ApiError(400, status, message, raw=raw)

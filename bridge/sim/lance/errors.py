"""The Lance API's error answers, as the simulator sends them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from aiohttp import web

from bridge.sim import _http


@dataclasses.dataclass(eq=False)
class ApiError(_http.SimError):
    """An error answer: HTTP status, documented code, message, details and extra headers."""

    status: int
    code: str
    message: str
    details: dict[str, object] = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def response(self) -> web.Response:
        """The aiohttp answer."""
        body = error_body(self.code, self.message, self.details)
        return _http.json_response(body, self.status, self.headers)


def error_body(code: str, message: str, details: Mapping[str, object]) -> dict[str, object]:
    """The error envelope. The docs do not show one: this is the only place that knows it."""
    return {"error": code, "message": message, "details": dict(details)}


def invalid(path: str, message: str) -> ApiError:
    """A 400 ``VALIDATION_ERROR`` naming the offending field."""
    return ApiError(400, "VALIDATION_ERROR", message, {"field": path})

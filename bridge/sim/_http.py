"""HTTP plumbing shared by the fakes in :mod:`bridge.sim`: JSON answers, error answers, auth
headers, injected faults and serving an app."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

# Fakes are stopped by tests; waiting the default minute for idle keep-alive clients is pointless.
SHUTDOWN_TIMEOUT_S = 1.0


_F = TypeVar("_F")


class SimError(Exception):
    """An error a fake answers in its remote's own shape: each subclass builds that answer."""

    def response(self) -> web.Response:
        """The aiohttp answer."""
        raise NotImplementedError


async def guarded(
    request: web.Request,
    handler: Handler,
    http_error: Callable[[web.HTTPException, web.Request], web.StreamResponse],
) -> web.StreamResponse:
    """Run ``handler``, answering a :class:`SimError` with its response and an aiohttp
    ``HTTPException`` (no such route or method, body too large) with ``http_error``."""
    try:
        return await handler(request)
    except SimError as err:
        return err.response()
    except web.HTTPException as exc:
        return http_error(exc, request)


def split_authorization(header: str | None) -> tuple[str, str]:
    """``(scheme in lower case, credentials)`` of an ``Authorization`` header (``""`` if absent)."""
    scheme, _, credentials = (header or "").partition(" ")
    return scheme.lower(), credentials


@dataclasses.dataclass
class _Queued(Generic[_F]):
    remaining: int
    fault: _F
    route: str | None


class FaultQueue(Generic[_F]):
    """Injected failures, oldest first: each answers the next ``count`` requests it matches."""

    def __init__(self) -> None:
        self._queued: list[_Queued[_F]] = []

    def add(self, count: int, fault: _F, route: str | None) -> None:
        """Queue ``fault`` for ``count`` requests (none if below 1); ``None`` matches any route."""
        if count > 0:
            self._queued.append(_Queued(count, fault, route))

    def take(self, matches: Callable[[str], bool]) -> _F | None:
        """The oldest fault whose route is ``None`` or ``matches``, counted as used once."""
        for queued in self._queued:
            if queued.route is None or matches(queued.route):
                queued.remaining -= 1
                if queued.remaining <= 0:
                    self._queued.remove(queued)
                return queued.fault
        return None


@dataclasses.dataclass(frozen=True)
class Fault:
    """What an injected failure answers: a status, a JSON body (``None``: the remote's default
    for the status) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def json_response(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A compact JSON answer."""
    return json_text_response(json.dumps(data, separators=(",", ":")), status, headers)


def json_text_response(
    text: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An answer whose body is already JSON text."""
    return web.Response(text=text, status=status, headers=headers, content_type="application/json")


def json_array(items: list[str]) -> str:
    """Join JSON texts into the text of a JSON array."""
    return f"[{','.join(items)}]"


def route_key(request: web.Request) -> str:
    """``"METHOD /route/{template}"`` of a request, for counters (``<unmatched>`` if none)."""
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource else '<unmatched>'}"


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection without answering; return the result from the handler.

    The returned response is never written: aiohttp swallows the write error on the closed
    transport, and the client sees the server disconnect.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


async def serve_app(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve ``app`` on ``host:port``; port 0 picks a free one (see :func:`bound_port`).

    Returns:
        The started runner. The caller owns it and must ``await runner.cleanup()``.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port ``runner`` listens on (useful after serving on port 0)."""
    if not runner.addresses:
        raise RuntimeError("the runner is not serving: call serve() first")
    return int(runner.addresses[0][1])


def base_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of ``runner``, for building client URLs."""
    if not runner.addresses:
        raise RuntimeError("the runner is not serving: call serve() first")
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

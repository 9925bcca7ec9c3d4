"""The Salesforce sandbox's HTTP side: counting, the usage header, routes, the admin
surface and serving."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.sim import _http
from bridge.sim.salesforce.errors import NO_RESOURCE, OAuthError, RestError, decode_json
from bridge.sim.salesforce.state import Recorded, SalesforceSandbox

TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a path, not a secret
VERSIONS_PATH = "/services/data/"
REST_PREFIX = "/services/data/v"
ADMIN_PREFIX = "/_sim/"
_V = "/services/data/v{version:[0-9]+\\.[0-9]+}"
DESCRIBE = _V + "/sobjects/{sobject}/describe"
QUERY = _V + "/query"
RECORD = _V + "/sobjects/{sobject}/{id}"
COLLECTION = _V + "/composite/sobjects"
RETRIEVE = _V + "/composite/sobjects/{sobject}"
LIMIT_HEADER = "Sforce-Limit-Info"
_SECRET_FORM_FIELDS = frozenset({"client_secret", "assertion", "refresh_token", "password"})


def _form(request: web.Request, raw: bytes) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        return {}
    return dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _recorded_body(path: str, raw: bytes) -> Any:
    if not raw:
        return None
    if path == TOKEN_PATH:
        pairs = parse_qsl(raw.decode(errors="replace"), keep_blank_values=True)
        return {k: "***" if k in _SECRET_FORM_FIELDS else v for k, v in pairs}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    if request.path == TOKEN_PATH:
        return OAuthError("invalid_request", exc.reason).response()
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}"
        return RestError(405, "METHOD_NOT_ALLOWED", message).response()
    if exc.status == 404:
        return RestError(404, "NOT_FOUND", NO_RESOURCE).response()
    return RestError(exc.status, exc.reason.upper().replace(" ", "_"), exc.reason).response()


async def _answer(
    sandbox: SalesforceSandbox, request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        if request.path.startswith(REST_PREFIX):
            sandbox.admit(request.path, request.headers.get("Authorization", ""))
    except RestError as err:
        return err.response()
    return await _http.guarded(request, handler, _http_error)


@web.middleware
async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    sandbox = request.app[SANDBOX]
    if request.path.startswith(ADMIN_PREFIX):
        return await _http.guarded(request, handler, _admin_http_error)
    key = _http.route_key(request)
    sandbox.counts[key] += 1
    raw = await request.read()
    response: web.StreamResponse | None = sandbox.take_fault(key, request.path == TOKEN_PATH)
    if response is None:
        response = await _answer(sandbox, request, handler)
    if request.path.startswith(REST_PREFIX):
        response.headers[LIMIT_HEADER] = sandbox.limit_info
    route = key.partition(" ")[2]
    body = _recorded_body(request.path, raw)
    sandbox.requests.append(Recorded(request.method, request.path, route, body, response.status))
    return response


async def _token(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    form = _form(request, await request.read())
    sandbox.token_requests[form.get("grant_type", "")] += 1
    body = sandbox.grant(form, request.headers.get("Authorization"), _origin(request))
    return _http.json_response(body)


async def _versions(request: web.Request) -> web.Response:
    return _http.json_response(request.app[SANDBOX].versions())


async def _describe(request: web.Request) -> web.Response:
    info = request.match_info
    return _http.json_response(request.app[SANDBOX].describe(info["sobject"], info["version"]))


async def _query(request: web.Request) -> web.Response:
    soql = request.query.get("q")
    if not soql:
        raise RestError(400, "MALFORMED_QUERY", "A query string has to be specified")
    version = request.match_info["version"]
    return _http.json_response(request.app[SANDBOX].query(soql, version))


async def _retrieve(request: web.Request) -> web.Response:
    body = decode_json(await request.read())
    info = request.match_info
    records = request.app[SANDBOX].retrieve(info["sobject"], body, info["version"])
    return _http.json_response(records)


async def _update_collection(request: web.Request) -> web.Response:
    body = decode_json(await request.read())
    return _http.json_response(request.app[SANDBOX].update_collection(body))


async def _update_one(request: web.Request) -> web.Response:
    body = decode_json(await request.read())
    info = request.match_info
    request.app[SANDBOX].update_one(info["sobject"], info["id"], body)
    return web.Response(status=204)


class _AdminError(_http.SimError):
    """An admin request that cannot be served; answered 400 or 404 ``{"error"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> web.Response:
        """The ``{"error"}`` answer."""
        return _http.json_response({"error": str(self)}, self.status)


def _admin_http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    return _http.json_response({"error": exc.reason}, exc.status)


async def _admin_json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise _AdminError(400, "the body must be JSON") from exc
    if not isinstance(body, dict):
        raise _AdminError(400, "the body must be a JSON object")
    return body


async def _admin_get_record(request: web.Request) -> web.Response:
    info = request.match_info
    try:
        return _http.json_response(request.app[SANDBOX].record(info["sobject"], info["id"]))
    except (KeyError, ValueError) as exc:
        raise _AdminError(404, f"no record {info['sobject']} {info['id']}") from exc


async def _admin_add_record(request: web.Request) -> web.Response:
    fields = await _admin_json(request)
    try:
        record_id = request.app[SANDBOX].add_record(request.match_info["sobject"], fields)
    except ValueError as exc:
        raise _AdminError(400, str(exc)) from exc
    return _http.json_response({"id": record_id}, 201)


async def _admin_counts(request: web.Request) -> web.Response:
    return _http.json_response(request.app[SANDBOX].stats())


async def _admin_faults(request: web.Request) -> web.Response:
    body = await _admin_json(request)
    count, status, route = body.get("count", 1), body.get("status"), body.get("route")
    fault_body = body.get("body")
    if not (isinstance(count, int) and isinstance(status, int) and 100 <= status <= 599):
        raise _AdminError(400, 'use {"count": int, "status": 100..599, "body"?, "route"?}')
    if not (route is None or isinstance(route, str)) or not isinstance(
        fault_body, list | dict | None
    ):
        raise _AdminError(400, "route must be a string and body a JSON array or object")
    request.app[SANDBOX].fail_next(count, status, body=fault_body, route=route)
    return _http.json_response({"queued": count})


async def _admin_reset(request: web.Request) -> web.Response:
    request.app[SANDBOX].reset_counts()
    return web.Response(status=204)


async def _admin_expire(request: web.Request) -> web.Response:
    request.app[SANDBOX].expire_sessions()
    return web.Response(status=204)


SANDBOX = web.AppKey("salesforce_sandbox", SalesforceSandbox)


def create_app(sandbox: SalesforceSandbox) -> web.Application:
    """Build the aiohttp application serving ``sandbox`` (API and ``/_sim/`` admin surface)."""
    app = web.Application(middlewares=[_dispatch])
    app[SANDBOX] = sandbox
    router = app.router
    router.add_post(TOKEN_PATH, _token)
    router.add_get(VERSIONS_PATH, _versions)
    router.add_get(DESCRIBE, _describe)
    router.add_get(QUERY, _query)
    router.add_patch(COLLECTION, _update_collection)
    router.add_patch(COLLECTION + "/", _update_collection)  # the docs show a trailing slash
    router.add_post(RETRIEVE, _retrieve)
    router.add_patch(RECORD, _update_one)
    router.add_get("/_sim/records/{sobject}/{id}", _admin_get_record)
    router.add_post("/_sim/records/{sobject}", _admin_add_record)
    router.add_get("/_sim/counts", _admin_counts)
    router.add_post("/_sim/faults", _admin_faults)
    router.add_post("/_sim/reset", _admin_reset)
    router.add_post("/_sim/expire-sessions", _admin_expire)
    return app


async def serve(
    sandbox: SalesforceSandbox, host: str = "127.0.0.1", port: int = 0
) -> web.AppRunner:
    """Serve ``sandbox`` on ``host:port`` (0 picks a free port; see :func:`bound_port`).

    Returns:
        The started runner; the caller owns it and must ``await runner.cleanup()``.
    """
    return await _http.serve_app(create_app(sandbox), host, port)

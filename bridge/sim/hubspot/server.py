"""The HubSpot sandbox's HTTP side: request counting, auth and limits, the OAuth
endpoint, the admin surface and serving."""

from __future__ import annotations

import json
import urllib.parse

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.sim import _http
from bridge.sim.hubspot import objects
from bridge.sim.hubspot.errors import ApiError, invalid
from bridge.sim.hubspot.schema import resolve
from bridge.sim.hubspot.state import SANDBOX, HubSpotSandbox, Recorded
from bridge.sim.hubspot.validation import json_object, read_json, string_map

OAUTH = "/oauth/v1/token"
PROPERTIES = "/crm/v3/properties/{objectType}"
OBJECT = "/crm/v3/objects/{objectType}/{objectId}"
BATCH_READ = "/crm/v3/objects/{objectType}/batch/read"
BATCH_UPDATE = "/crm/v3/objects/{objectType}/batch/update"
CRM_PREFIX = "/crm/"
ADMIN_PREFIX = "/_sim/"


def _bearer(request: web.Request) -> str | None:
    scheme, token = _http.split_authorization(request.headers.get("Authorization"))
    return token.strip() or None if scheme == "bearer" else None


async def _peek_json(request: web.Request) -> object:
    if not request.body_exists:
        return None
    try:
        return json.loads(await request.read())
    except ValueError:
        return None


def _http_error(exc: web.HTTPException, request: web.Request) -> web.Response:
    if exc.status == 404:
        return ApiError(404, "OBJECT_NOT_FOUND", "resource not found").response()
    return ApiError(exc.status, "VALIDATION_ERROR", exc.reason).response()


async def _dispatch(
    sandbox: HubSpotSandbox, request: web.Request, handler: Handler
) -> web.StreamResponse:
    if request.path.startswith(ADMIN_PREFIX):
        return await _http.guarded(request, handler, _http_error)
    key = _http.route_key(request)
    sandbox.counts[key] += 1
    if key == f"POST {OAUTH}":
        sandbox.token_requests += 1
    token = _bearer(request)
    body = await _peek_json(request)
    # Not `or`: an aiohttp response is a mapping, and an empty one is falsy.
    fault = sandbox._take_fault(key)
    response = await _api(sandbox, request, handler, token) if fault is None else fault
    route = key.partition(" ")[2]
    query = dict(request.query)
    sandbox.requests.append(
        Recorded(request.method, request.path, route, query, body, response.status, token)
    )
    return response


async def _api(
    sandbox: HubSpotSandbox, request: web.Request, handler: Handler, token: str | None
) -> web.StreamResponse:
    rate_headers: dict[str, str] = {}
    if request.path.startswith(CRM_PREFIX):
        await sandbox._travel()
        try:
            sandbox._authenticate(token)
            assert token is not None
            rate_headers = sandbox._admit(token)
        except ApiError as err:
            return err.response()
    response = await _http.guarded(request, handler, _http_error)
    response.headers.update(rate_headers)
    return response


async def _token(request: web.Request) -> web.Response:
    text = (await request.read()).decode("utf-8", "replace")
    form = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
    return _http.json_response(request.app[SANDBOX]._refresh(form))


# ---- admin surface ----------------------------------------------------------------------


async def _admin_get(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    t, record_id = resolve(request.match_info["objectType"]), request.match_info["objectId"]
    if record_id not in sandbox.objects[t]:
        raise ApiError(404, "OBJECT_NOT_FOUND", f"no {t} record {record_id}")
    return _http.json_response({"id": record_id, "properties": sandbox.record(t, record_id)})


async def _admin_create(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    body = json_object(await read_json(request), "body")
    properties = string_map(body.get("properties", {}), "properties")
    record_id = body.get("id")
    try:
        created = sandbox.add_record(
            request.match_info["objectType"],
            properties,
            None if record_id is None else str(record_id),
        )
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    return _http.json_response({"id": created}, 201)


def _stats(sandbox: HubSpotSandbox) -> dict[str, object]:
    return {
        "counts": dict(sandbox.counts),
        "total": sandbox.counts.total(),
        "tokenRequests": sandbox.token_requests,
    }


async def _admin_requests(request: web.Request) -> web.Response:
    return _http.json_response(_stats(request.app[SANDBOX]))


async def _admin_faults(request: web.Request) -> web.Response:
    body = json_object(await read_json(request), "body")
    count, status = body.get("count"), body.get("status")
    if not isinstance(count, int) or not isinstance(status, int):
        raise invalid("count and status must be integers")
    fault_body, headers, route = body.get("body"), body.get("headers"), body.get("route")
    if fault_body is not None and not isinstance(fault_body, dict):
        raise invalid("body must be a JSON object")
    if route is not None and not isinstance(route, str):
        raise invalid("route must be a string")
    request.app[SANDBOX].fail_next(
        count, status, body=fault_body, headers=string_map(headers or {}, "headers"), route=route
    )
    return _http.json_response({"queued": max(count, 0)})


async def _admin_reset(request: web.Request) -> web.Response:
    request.app[SANDBOX].reset_counts()
    return web.Response(status=204)


async def _admin_expire(request: web.Request) -> web.Response:
    return _http.json_response({"expired": request.app[SANDBOX].expire_tokens()})


def create_app(sandbox: HubSpotSandbox) -> web.Application:
    """Build the aiohttp application serving the API and the ``/_sim/`` admin surface."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _dispatch(sandbox, request, handler)

    app = web.Application(middlewares=[middleware])
    app[SANDBOX] = sandbox
    add_get, add_post = app.router.add_get, app.router.add_post
    add_post(OAUTH, _token)
    add_get(PROPERTIES, objects.list_properties)
    add_post(BATCH_READ, objects.batch_read)
    add_post(BATCH_UPDATE, objects.batch_update)
    add_get(OBJECT, objects.get_object)
    app.router.add_patch(OBJECT, objects.patch_object)
    add_get("/_sim/objects/{objectType}/{objectId}", _admin_get)
    add_post("/_sim/objects/{objectType}", _admin_create)
    add_get("/_sim/requests", _admin_requests)
    add_post("/_sim/faults", _admin_faults)
    add_post("/_sim/reset-counts", _admin_reset)
    add_post("/_sim/expire-tokens", _admin_expire)
    return app


async def serve(sandbox: HubSpotSandbox, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve ``sandbox`` on ``host:port`` (0 picks a free port; see :func:`bound_port`).

    Returns:
        The started runner; the caller owns it and must ``await runner.cleanup()``.
    """
    return await _http.serve_app(create_app(sandbox), host, port)

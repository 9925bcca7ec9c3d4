"""HTTP routes: the ``/v1`` API, health checks, and JSON errors for every failure.

A rejected request stores nothing: bodies are fully validated before the ledger is touched.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import orjson
import pydantic
from aiohttp import web

from bridge import (
    connector,
    errors,
    hooks,
    jsonbody,
    linkedin,
    metrics,
    model,
    openapi,
    outbox,
    runtime,
    schemas,
)

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ENRICHMENT_STATES = frozenset(model.EnrichmentState)
DELIVERY_STATES = frozenset(model.DeliveryState)
INBOUND_STATES = frozenset(model.InboundState)
# The inbound source of ``match`` tasks sent to ``POST /v1/triggers``.
API_SOURCE = "api"
MAX_PAGE = 1000


class ApiError(web.HTTPException):
    """An HTTP error with the ``{"error": {"code", "message", "details"}}`` body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status
        body = {"error": {"code": code, "message": message, "details": details}}
        super().__init__(text=json.dumps(body), content_type="application/json", headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON answer encoded with orjson (several times faster than json on the hot routes)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def fail(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> NoReturn:
    """Raise an :class:`ApiError`."""
    raise ApiError(status, code, message, details, headers)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer auth on ``/v1/*``, and every HTTP error (aiohttp's 404, 405, 413 too) as JSON.

    One middleware, not two: each layer costs aiohttp a wrapper call on every request.
    """
    try:
        _authorize(request)
        return await handler(request)
    except ApiError:
        raise
    except errors.LedgerUnavailableError:
        # The ledger logged the failure once, when it began; a line per request would flood.
        fail(503, "ledger_unavailable", LEDGER_UNAVAILABLE, headers={"Retry-After": "5"})
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[runtime.SETTINGS].server.max_body_bytes
        fail(413, "body_too_large", f"request body exceeds {limit} bytes")
    except ConnectionResetError:
        if not _client_gone(request):
            _internal_error(request)
        # Nobody is left to answer, and it is the client's doing: one line, not a traceback.
        logger.info(
            "client disconnected before its request was read",
            extra={"event": "http.client_gone", "path": request.path},
        )
        fail(400, "client_gone", "the client closed the connection before sending its body")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        kept = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
        fail(exc.status, code, exc.reason, headers=kept)
    except Exception:
        _internal_error(request)


def _internal_error(request: web.Request) -> NoReturn:
    """Log the exception being handled, with its traceback, and answer 500."""
    logger.exception("request failed", extra={"event": "http.error", "path": request.path})
    fail(500, "internal_error", "the bridge failed to handle this request; see its log")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


LEDGER_UNAVAILABLE = "the bridge cannot store work right now; nothing was stored, retry later"
# aiohttp's own errors carry headers clients rely on (405 must say what is allowed).
_KEPT_HEADERS = frozenset(("allow", "retry-after"))


def _authorize(request: web.Request) -> None:
    """``/v1/*`` needs ``Authorization: Bearer <one of server.api_tokens>``."""
    if request.path.startswith("/v1/"):
        tokens = request.app[runtime.SETTINGS].server.api_tokens
        if not tokens:
            fail(401, "unauthorized", "no API tokens configured: set server.api_tokens")
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not _token_ok(presented.strip(), tokens):
            fail(401, "unauthorized", "missing or invalid bearer token")


def _token_ok(presented: str, tokens: tuple[pydantic.SecretStr, ...]) -> bool:
    # Compare against every token, in constant time each, so timing reveals nothing.
    matches = [connector.same_secret(presented, t.get_secret_value()) for t in tokens]
    return any(matches)


async def _body(request: web.Request, model: type[pydantic.BaseModel]) -> Any:
    try:
        raw = await request.read()
    except web.RequestPayloadError:
        # A body that is not what its Content-Encoding says (bad gzip/deflate) is the client's.
        fail(400, "invalid_body", "request body could not be decoded as its Content-Encoding says")
    depth = request.app[runtime.SETTINGS].server.max_json_depth
    try:
        return jsonbody.validate(raw, model, max_depth=depth)
    except jsonbody.JsonBodyError as exc:
        fail(400, "invalid_json", exc.message)
    except pydantic.ValidationError as exc:
        problems = exc.errors(include_url=False, include_context=False, include_input=False)
        details = [{"loc": [str(x) for x in p["loc"]], "msg": p["msg"]} for p in problems]
        first = details[0]
        fail(
            422, "validation_error", f"{'.'.join(first['loc']) or 'body'}: {first['msg']}", details
        )


async def post_triggers(request: web.Request) -> web.Response:
    """Accept tasks; an (entityType, entityId, field) already in flight gets the targets."""
    body: schemas.TriggerRequest = await _body(request, schemas.TriggerRequest)
    bridge = request.app[runtime.BRIDGE]
    checked = [
        (index, _task(bridge.ledger.router, bridge.connectors, index, task))
        for index, task in enumerate(body.tasks)
    ]
    tasks = [task for _, task in checked if isinstance(task, model.Task)]
    matches = [(i, task) for i, task in checked if isinstance(task, model.Inbound)]
    now = bridge.clock()
    # The whole request in one transaction: its tasks, the ambiguous matches of the CRM records
    # they name settled, and its match tasks; all of it stored, or none.
    events = [event for _, event in matches]
    accepted = await bridge.ledger.accept_trigger(tasks, API_SOURCE, events, now)
    shaped = [
        {
            "id": row.id,
            "entityType": task.entity_type,
            "entityId": task.entity_id,
            "field": task.field,
            "mode": row.mode,
            "state": row.state,
            "created": row.created,
        }
        for task, row in zip(tasks, accepted, strict=True)
    ]
    answer: dict[str, Any] = {"enrichments": shaped}
    if matches:
        answer["matching"] = [
            {"task": i, "source": API_SOURCE, "key": event.key, "state": event.state}
            for i, event in matches
        ]
    return _json(answer, status=202)


def _task(
    router: outbox.Router,
    connectors: Mapping[str, connector.Connector],
    index: int,
    task: schemas.TriggerTask,
) -> model.Task | model.Inbound:
    where = f"tasks.{index}"
    if task.match is not None and (
        task.mode != "trigger" or task.entityType != "person" or task.field == "summary"
    ):
        fail(
            422,
            "validation_error",
            f"{where}.match: a match finds a person to trigger: person phones or emails only",
        )
    if task.mode == "trigger" and (task.entityType != "person" or task.field == "summary"):
        fail(
            422,
            "validation_error",
            f'{where}: Lance can only trigger person phones/emails; use mode "track" to follow'
            " a company summary started elsewhere",
        )
    for target in task.targets:
        route = router.route(target.connector)
        if route is None:
            fail(
                422,
                "unknown_connector",
                f"{where}.targets: no connector named {target.connector!r} is configured",
            )
        if route.needs_record and not (target.objectType and target.objectId):
            fail(
                422,
                "validation_error",
                f"{where}.targets: connector {target.connector!r} needs objectType and objectId",
            )
        item = connectors.get(target.connector)
        problem = item.target_problem(target.objectType, target.objectId) if item else None
        if problem:
            fail(422, "validation_error", f"{where}.targets: {problem}")
    targets = tuple(model.Target(t.connector, t.objectType, t.objectId) for t in task.targets)
    if task.match is None:
        assert task.entityId is not None  # the schema allows exactly one of the two
        return model.Task(task.entityType, task.entityId, task.field, task.mode, targets)
    return _match_event(router, task.match, task.field, targets)


def _match_event(
    router: outbox.Router, match: schemas.MatchIn, field: str, targets: tuple[model.Target, ...]
) -> model.Inbound:
    """A ``match`` task as the inbound event the match job settles (DESIGN §12)."""
    if match.linkedinUrl is not None:
        key = linkedin.match_key(match.linkedinUrl)
    else:
        found = linkedin.name_key(match.fullName, match.company)
        assert found is not None  # the schema checked both are given
        key = found
    record = targets[0] if targets and targets[0].object_id else None
    route = router.route(record.connector) if record else None
    # The id found is written back when the first target is a CRM record.
    write_back = bool(route and route.needs_record)
    found_match = model.Match(key, (field,), targets, write_back)
    where = (record.object_type, record.object_id) if record else ("", "")
    return model.Inbound(f"api:{uuid.uuid4()}", match=found_match, record=where)


async def post_query(request: web.Request) -> web.Response:
    """Lance's batch-query shape answered from the ledger; tasks with no row are omitted."""
    body: schemas.QueryRequest = await _body(request, schemas.QueryRequest)
    keys = [(t.entityType, t.entityId, t.field) for t in body.tasks]
    found = await request.app[runtime.BRIDGE].ledger.latest_for_keys(keys)
    seen: set[tuple[str, str, str]] = set()
    answer = []
    for key in keys:
        if key in found and key not in seen:
            seen.add(key)
            answer.append(_lance_shape(found[key]))
    return _json(answer)


def _lance_shape(row: dict[str, Any]) -> dict[str, Any]:
    record = row["record"] or {
        "entityId": row["entityId"],
        "entityType": row["entityType"],
        "field": row["field"],
        "status": model.EnrichmentState.PENDING,
        "error": None,
        "dataFound": None,
    }
    bridge_view = {k: row[k] for k in ("id", "state", "values", "error", "awaitingValues")}
    return record | {"bridge": bridge_view}


async def get_enrichment(request: web.Request) -> web.Response:
    """One enrichment with its targets and deliveries."""
    row_id = _int_path(request, "id")
    store = request.app[runtime.BRIDGE].ledger
    found = await store.enrichments([row_id])
    if row_id not in found:
        fail(404, "not_found", f"no enrichment {row_id}")
    deliveries = await store.list_deliveries(enrichment_id=row_id, limit=MAX_PAGE)
    return _json(found[row_id] | {"deliveries": deliveries})


async def list_enrichments(request: web.Request) -> web.Response:
    """A page of enrichments, filtered by state; follow ``nextCursor`` for more."""
    state = _choice(request, "state", ENRICHMENT_STATES)
    limit, after = _page(request)
    rows = await request.app[runtime.BRIDGE].ledger.list_enrichments(
        state=state, after=after, limit=limit
    )
    cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return _json({"enrichments": rows, "nextCursor": cursor})


async def list_deliveries(request: web.Request) -> web.Response:
    """A page of deliveries, filtered by state and connector."""
    state = _choice(request, "state", DELIVERY_STATES)
    limit, after = _page(request)
    rows = await request.app[runtime.BRIDGE].ledger.list_deliveries(
        state=state,
        connector=request.query.get("connector") or None,
        after=after,
        limit=limit,
    )
    cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return _json({"deliveries": rows, "nextCursor": cursor})


async def list_inbound(request: web.Request) -> web.Response:
    """A page of inbound CRM events and what became of them, filtered by state and source."""
    state = _choice(request, "state", INBOUND_STATES)
    limit, _ = _page(request, cursor=False)
    after = _inbound_cursor(request.query.get("cursor", ""))
    rows = await request.app[runtime.BRIDGE].ledger.list_inbound(
        state=state, source=request.query.get("source") or None, after=after, limit=limit
    )
    cursor = _encode_cursor(rows[-1].pop("cursor")) if len(rows) == limit else None
    for row in rows:
        row.pop("cursor", None)
    return _json({"inbound": rows, "nextCursor": cursor})


def _encode_cursor(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def _inbound_cursor(raw: str) -> tuple[float, str, str] | None:
    """The (receivedAt, source, key) an inbound ``nextCursor`` names."""
    if not raw:
        return None
    try:
        received, source, key = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        position = (float(received), str(source), str(key))
    except (ValueError, TypeError, binascii.Error):
        position = None
    # ``nan`` and ``inf`` parse as floats, yet no nextCursor ever holds them.
    if position is None or not math.isfinite(position[0]):
        fail(400, "invalid_parameter", "cursor must be a value from nextCursor")
    return position


async def retry_delivery(request: web.Request) -> web.Response:
    """Replay a dead delivery (never re-triggers Lance)."""
    delivery_id = _int_path(request, "id")
    bridge = request.app[runtime.BRIDGE]
    current = await bridge.ledger.delivery(delivery_id)
    if current is None:
        fail(404, "not_found", f"no delivery {delivery_id}")
    if current["state"] != model.DeliveryState.DEAD:
        fail(
            409, "not_dead", f"delivery {delivery_id} is {current['state']}; only dead ones replay"
        )
    await bridge.ledger.replay([delivery_id], bridge.clock())
    logger.info(
        "delivery %s replayed",
        delivery_id,
        extra={"event": "delivery.replayed", "delivery_id": delivery_id},
    )
    return _json(await bridge.ledger.delivery(delivery_id))


async def post_hook(request: web.Request) -> web.Response:
    """An inbound CRM event batch (``/hooks/hubspot``, ``/hooks/salesforce``)."""
    bridge = request.app[runtime.BRIDGE]
    path = f"/hooks/{request.match_info['kind']}"
    name = request.match_info.get("name")
    candidates = [
        c
        for c in bridge.connectors.values()
        if c.hook_path == path and (name is None or c.name == name)
    ]
    if not candidates:
        which = f"named {name!r} " if name else ""
        fail(404, "not_found", f"no connector {which}takes events at {path}")
    return await hooks.handle_hook(
        request,
        candidates,
        bridge.ledger,
        public_url=bridge.settings.server.public_url,
        max_json_depth=bridge.settings.server.max_json_depth,
        now=bridge.clock(),
    )


async def healthz(_: web.Request) -> web.Response:
    """The process is alive."""
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The ledger is open and usable, and the jobs are running; names this replica."""
    bridge = request.app.get(runtime.BRIDGE)
    # Which replica answered: behind a load balancer, the one to look for in `status`.
    who = {} if bridge is None else {"replica": bridge.ledger.replica}
    problem = None if bridge is None else bridge.ledger.check()
    if problem is not None:
        return _json({"status": "ledger_unavailable", "detail": problem, **who}, status=503)
    ready = bridge is not None and bridge.ready()
    body = {"status": "ready" if ready else "starting", **who}
    return _json(body, status=200 if ready else 503)


async def metrics_text(request: web.Request) -> web.Response:
    """Prometheus metrics (no auth, like the health checks)."""
    bridge = request.app.get(runtime.BRIDGE)
    if bridge is None:
        fail(503, "starting", "the ledger is not open yet")
    body = await request.app[runtime.METRICS].render(
        bridge.ledger, bridge.live_metrics(), bridge.clock()
    )
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def openapi_document(_: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return _json(openapi.document())


def _int_path(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not _is_number(raw):
        fail(404, "not_found", f"no such id {raw!r}")
    return int(raw)


def _is_number(raw: str) -> bool:
    # ASCII only: str.isdigit() also accepts "²" and other scripts' digits.
    return raw.isascii() and raw.isdigit() and len(raw) <= 18


def _choice(request: web.Request, name: str, allowed: frozenset[str]) -> str | None:
    value = request.query.get(name) or None
    if value is not None and value not in allowed:
        fail(400, "invalid_parameter", f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


def _page(request: web.Request, *, cursor: bool = True) -> tuple[int, int]:
    limit_raw = request.query.get("limit", "100")
    cursor_raw = request.query.get("cursor", "0") if cursor else "0"
    if not _is_number(limit_raw) or not 1 <= int(limit_raw) <= MAX_PAGE:
        fail(400, "invalid_parameter", f"limit must be an integer from 1 to {MAX_PAGE}")
    if not _is_number(cursor_raw):
        fail(400, "invalid_parameter", "cursor must be a value from nextCursor")
    return int(limit_raw), int(cursor_raw)


def setup_routes(app: web.Application) -> None:
    """Register every route on ``app``."""
    app.router.add_post("/v1/triggers", post_triggers)
    app.router.add_post("/v1/enrichments/query", post_query)
    app.router.add_get("/v1/enrichments", list_enrichments)
    app.router.add_get("/v1/enrichments/{id}", get_enrichment)
    app.router.add_get("/v1/deliveries", list_deliveries)
    app.router.add_post("/v1/deliveries/{id}/retry", retry_delivery)
    app.router.add_get("/v1/inbound", list_inbound)
    app.router.add_post("/hooks/{kind}", post_hook)
    app.router.add_post("/hooks/{kind}/{name}", post_hook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/openapi.json", openapi_document)

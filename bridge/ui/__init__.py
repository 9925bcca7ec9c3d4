"""The web dashboard at ``/ui/``: server-rendered pages over the ledger's read verbs.

Login takes one of ``server.api_tokens`` and gives a signed session cookie (itsdangerous: a
well-kept signer with expiry, rather than hand-rolled HMAC and timestamp parsing). Every POST
carries the session's CSRF token. Pages work without JavaScript; htmx only refreshes the
overview's counts.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import itsdangerous
import jinja2
from aiohttp import web

from bridge import model, runtime, schemas
from bridge import web as api

logger = logging.getLogger(__name__)

COOKIE = "lance_bridge_session"
PAGE = 50
MAX_TEXT = 200  # longest filter value accepted from a query string
FIELDS = frozenset(typing.get_args(schemas.EnrichField))
SIGNER = web.AppKey("ui_signer", itsdangerous.URLSafeTimedSerializer)
_HERE = Path(__file__).parent


def setup(app: web.Application, clock: Callable[[], float] = time.time) -> None:
    """Mount the dashboard on ``app`` (``serve`` calls it when ``ui.enabled``).

    ``clock`` dates the session cookies, so they expire on the bridge's own clock.
    """

    class Signer(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    # A key per process: a restart logs everyone out, and no key has to be configured or stored.
    app[SIGNER] = itsdangerous.URLSafeTimedSerializer(
        secrets.token_bytes(32), salt="ui-session", signer=Signer
    )
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        app_key=aiohttp_jinja2.APP_KEY,
    )
    env = aiohttp_jinja2.get_env(app)
    env.filters["iso"] = _iso
    r = app.router
    r.add_get("/ui", _to_overview)
    r.add_get("/ui/", overview)
    r.add_get("/ui/fragments/counts", counts_fragment)
    r.add_get("/ui/login", login_page)
    r.add_post("/ui/login", login)
    r.add_post("/ui/logout", logout)
    r.add_get("/ui/enrichments", enrichments)
    r.add_get("/ui/enrichments/{id}", enrichment)
    r.add_get("/ui/deliveries", deliveries)
    r.add_get("/ui/deliveries/{id}", delivery)
    r.add_post("/ui/deliveries/{id}/retry", retry)
    r.add_static("/ui/static/", _HERE / "static")


def _iso(value: Any) -> str:
    """A timestamp (Unix seconds or ISO text) as ISO 8601 UTC, for ``<time datetime>``."""
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return "" if value is None else str(value)


async def _to_overview(_: web.Request) -> web.Response:
    return _redirect("/ui/")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


# -- session -------------------------------------------------------------------------------


def _session(request: web.Request) -> dict[str, str] | None:
    """The session in the cookie, or ``None`` when missing, forged or expired."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    max_age = request.app[runtime.SETTINGS].ui.session_seconds
    try:
        data = request.app[SIGNER].loads(raw, max_age=max_age)
    except itsdangerous.BadData:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("csrf"), str) else None


def _render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    session: dict[str, str] | None,
    status: int = 200,
) -> web.Response:
    context = context | {"csrf": session["csrf"] if session else "", "signed_in": bool(session)}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _problem(
    request: web.Request, status: int, message: str, session: dict[str, str] | None
) -> web.Response:
    return _render(request, "error.html", {"status": status, "message": message}, session, status)


def _csrf_ok(session: dict[str, str] | None, form: Any) -> bool:
    presented = form.get("csrf", "")
    return (
        bool(session)
        and isinstance(presented, str)
        and secrets.compare_digest(presented.encode(), session["csrf"].encode() if session else b"")
    )


async def login_page(request: web.Request) -> web.Response:
    """The login form."""
    return _render(request, "login.html", {"error": None}, None)


async def login(request: web.Request) -> web.Response:
    """Check the token and set the session cookie; a wrong token shows the form again."""
    form = await request.post()
    token = form.get("token", "")
    tokens = request.app[runtime.SETTINGS].server.api_tokens
    if not isinstance(token, str) or not tokens or not api._token_ok(token.strip(), tokens):
        logger.warning("dashboard login refused", extra={"event": "ui.login_refused"})
        return _render(request, "login.html", {"error": "That token is not accepted."}, None, 401)
    cookie = request.app[SIGNER].dumps({"csrf": secrets.token_urlsafe(24)})
    response = _redirect("/ui/")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=request.app[runtime.SETTINGS].ui.session_seconds,
        path="/ui/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """Forget the session (CSRF-checked, so another site cannot log the viewer out)."""
    session = _session(request)
    if not _csrf_ok(session, await request.post()):
        return _problem(request, 403, "This form is missing its CSRF token.", session)
    response = _redirect("/ui/login")
    response.del_cookie(COOKIE, path="/ui/")
    return response


def _signed_in(request: web.Request) -> dict[str, str] | web.Response:
    session = _session(request)
    return session if session is not None else _redirect("/ui/login")


# -- pages ---------------------------------------------------------------------------------


async def _overview_context(request: web.Request) -> dict[str, Any]:
    bridge = request.app[runtime.BRIDGE]
    counts = await bridge.ledger.counts()
    snapshot = await bridge.ledger.snapshot()
    oldest = counts.get("oldestInFlightCreatedAt")
    charged = await bridge.ledger.charged(0, snapshot.last_id)
    return {
        "enrichment_states": [
            (s.value, counts["enrichments"].get(s.value, 0)) for s in model.EnrichmentState
        ],
        "deliveries": counts["deliveries"],
        "delivery_states": [s.value for s in model.DeliveryState],
        "oldest_age": None if oldest is None else max(0.0, bridge.clock() - float(oldest)),
        "charged": charged,
        "charged_total": sum(charged.values()),
        "held": counts.get("triggersHeld"),
    }


async def overview(request: web.Request) -> web.Response:
    """Counts by state, the oldest in-flight age, deliveries, credits and trigger holds."""
    session = _signed_in(request)
    if isinstance(session, web.Response):
        return session
    return _render(request, "overview.html", await _overview_context(request), session)


async def counts_fragment(request: web.Request) -> web.Response:
    """The overview's figures alone, which htmx polls to keep the page live."""
    session = _signed_in(request)
    if isinstance(session, web.Response):
        return session
    return _render(request, "_counts.html", await _overview_context(request), session)


class _BadQuery(Exception):
    """A query string the pages do not accept (answered 400)."""


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip() or None
    if value is not None and (len(value) > MAX_TEXT or not value.isprintable()):
        raise _BadQuery(f"{name} must be printable text of at most {MAX_TEXT} characters")
    return value


def _choice(request: web.Request, name: str, allowed: frozenset[str]) -> str | None:
    value = request.query.get(name) or None
    if value is not None and value not in allowed:
        raise _BadQuery(f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


def _cursor(request: web.Request) -> int:
    raw = request.query.get("cursor", "0")
    if not api._is_number(raw):
        raise _BadQuery("cursor must be a value from a Next link")
    return int(raw)


def _id(request: web.Request) -> int | None:
    raw = request.match_info["id"]
    return int(raw) if api._is_number(raw) else None


async def enrichments(request: web.Request) -> web.Response:
    """Enrichments filtered by state, field and entity id, a keyset page at a time."""
    session = _signed_in(request)
    if isinstance(session, web.Response):
        return session
    try:
        state = _choice(request, "state", api.ENRICHMENT_STATES)
        field = _choice(request, "field", FIELDS)
        entity_id = _text(request, "entity_id")
        after = _cursor(request)
    except _BadQuery as exc:
        return _problem(request, 400, str(exc), session)
    store = request.app[runtime.BRIDGE].ledger
    rows: list[dict[str, Any]] = []
    exhausted = False
    # The ledger filters by state and entity id; a field filter reads on through its pages.
    for _ in range(20):
        page = await store.list_enrichments(
            state=state, after=after, limit=PAGE, entity_id=entity_id
        )
        exhausted = len(page) < PAGE
        for row in page:
            after = int(row["id"])
            if field is None or row["field"] == field:
                rows.append(row)
                if len(rows) == PAGE:
                    break
        if exhausted or len(rows) == PAGE:
            break
    filters = {"state": state or "", "field": field or "", "entity_id": entity_id or ""}
    next_cursor = None if exhausted and len(rows) < PAGE else after
    context = {
        "rows": rows,
        "filters": filters,
        "states": sorted(api.ENRICHMENT_STATES),
        "fields": sorted(FIELDS),
        "next_query": _query(filters, next_cursor),
    }
    return _render(request, "enrichments.html", context, session)


def _query(filters: dict[str, str], cursor: int | None) -> str | None:
    if cursor is None:
        return None
    return urlencode({k: v for k, v in filters.items() if v} | {"cursor": str(cursor)})


async def enrichment(request: web.Request) -> web.Response:
    """One enrichment: its Lance record, values, targets and deliveries."""
    session = _signed_in(request)
    if isinstance(session, web.Response):
        return session
    row_id = _id(request)
    store = request.app[runtime.BRIDGE].ledger
    found = await store.enrichments([row_id]) if row_id is not None else {}
    if row_id is None or row_id not in found:
        missing = f"There is no enrichment {request.match_info['id']}."
        return _problem(request, 404, missing, session)
    rows = await store.list_deliveries(enrichment_id=row_id, limit=api.MAX_PAGE)
    context = {"row": found[row_id], "deliveries": rows, "pretty": _pretty}
    return _render(request, "enrichment.html", context, session)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


async def deliveries(request: web.Request) -> web.Response:
    """Deliveries filtered by state and connector, a keyset page at a time."""
    session = _signed_in(request)
    if isinstance(session, web.Response):
        return session
    bridge = request.app[runtime.BRIDGE]
    try:
        state = _choice(request, "state", api.DELIVERY_STATES)
        connector = _choice(request, "connector", frozenset(bridge.connectors))
        after = _cursor(request)
    except _BadQuery as exc:
        return _problem(request, 400, str(exc), session)
    rows = await bridge.ledger.list_deliveries(
        state=state, connector=connector, after=after, limit=PAGE
    )
    filters = {"state": state or "", "connector": connector or ""}
    context = {
        "rows": rows,
        "filters": filters,
        "states": sorted(api.DELIVERY_STATES),
        "connectors": sorted(bridge.connectors),
        "next_query": _query(filters, int(rows[-1]["id"]) if len(rows) == PAGE else None),
    }
    return _render(request, "deliveries.html", context, session)


async def delivery(request: web.Request) -> web.Response:
    """One delivery, with a retry button when it is dead."""
    session = _signed_in(request)
    if isinstance(session, web.Response):
        return session
    return await _delivery_page(request, session, None)


async def _delivery_page(
    request: web.Request, session: dict[str, str], notice: str | None, status: int = 200
) -> web.Response:
    delivery_id = _id(request)
    row = await request.app[runtime.BRIDGE].ledger.delivery(delivery_id) if delivery_id else None
    if row is None:
        return _problem(request, 404, f"There is no delivery {request.match_info['id']}.", session)
    context = {"row": row, "notice": notice, "dead": row["state"] == model.DeliveryState.DEAD}
    return _render(request, "delivery.html", context, session, status)


async def retry(request: web.Request) -> web.Response:
    """Replay a dead delivery through the ledger; anything else is refused with a message."""
    session = _session(request)
    if not _csrf_ok(session, await request.post()):
        return _problem(request, 403, "This form is missing its CSRF token.", session)
    assert session is not None
    bridge = request.app[runtime.BRIDGE]
    delivery_id = _id(request)
    row = await bridge.ledger.delivery(delivery_id) if delivery_id else None
    if row is None or delivery_id is None:
        return _problem(request, 404, f"There is no delivery {request.match_info['id']}.", session)
    if row["state"] != model.DeliveryState.DEAD:
        notice = f"Delivery {delivery_id} is {row['state']}; only dead deliveries can be retried."
        return await _delivery_page(request, session, notice, 409)
    await bridge.ledger.replay([delivery_id], bridge.clock())
    logger.info(
        "delivery %s replayed from the dashboard",
        delivery_id,
        extra={"event": "delivery.replayed", "delivery_id": delivery_id},
    )
    return _redirect(f"/ui/deliveries/{delivery_id}")

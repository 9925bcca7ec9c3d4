"""The dashboard's session, CSRF and page rendering: what every page handler shares.

Login takes one of ``server.api_tokens`` and gives a signed session cookie (itsdangerous: a
well-kept signer with expiry, rather than hand-rolled HMAC and timestamp parsing). Every POST
carries the session's CSRF token. Every page goes out with a Content-Security-Policy that allows
scripts, styles and requests from the bridge itself only: no inline script runs, whatever a page
shows.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import aiohttp_jinja2
import itsdangerous
from aiohttp import web

from bridge import runtime
from bridge import web as api

logger = logging.getLogger(__name__)

COOKIE = "lance_bridge_session"
SIGNER = web.AppKey("ui_signer", itsdangerous.URLSafeTimedSerializer)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
Session = dict[str, str]


def session(request: web.Request) -> Session | None:
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


def signed_in(request: web.Request) -> Session | web.Response:
    """The session, or the redirect to the login page that answers instead."""
    found = session(request)
    return found if found is not None else redirect("/ui/login")


def redirect(location: str) -> web.Response:
    """A 303 to ``location`` (a GET after a POST)."""
    return web.Response(status=303, headers={"Location": location})


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    current: Session | None,
    status: int = 200,
) -> web.Response:
    """``template`` with ``context``, the CSRF token and the security headers."""
    context = context | {"csrf": current["csrf"] if current else "", "signed_in": bool(current)}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def problem(
    request: web.Request, status: int, message: str, current: Session | None
) -> web.Response:
    """The error page: ``status`` and one sentence saying what is wrong."""
    return render(request, "error.html", {"status": status, "message": message}, current, status)


def csrf_ok(current: Session | None, form: Any) -> bool:
    """Whether ``form`` carries the session's CSRF token."""
    presented = form.get("csrf", "")
    return (
        bool(current)
        and isinstance(presented, str)
        and secrets.compare_digest(presented.encode(), current["csrf"].encode() if current else b"")
    )


def csrf_refused(request: web.Request, current: Session | None) -> web.Response:
    """The answer to a POST without the session's CSRF token (it changes nothing)."""
    return problem(request, 403, "This form is missing its CSRF token.", current)


async def signed_in_post(request: web.Request) -> Session | web.Response:
    """The session of a POST that carries its CSRF token, or the answer that changes nothing
    instead: the login page for an expired session, a 403 without the token."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    if not csrf_ok(current, await request.post()):
        return csrf_refused(request, current)
    return current


async def login_page(request: web.Request) -> web.Response:
    """The login form."""
    return render(request, "login.html", {"error": None}, None)


async def login(request: web.Request) -> web.Response:
    """Check the token and set the session cookie; a wrong token shows the form again."""
    form = await request.post()
    token = form.get("token", "")
    tokens = request.app[runtime.SETTINGS].server.api_tokens
    if not isinstance(token, str) or not tokens or not api._token_ok(token.strip(), tokens):
        logger.warning("dashboard login refused", extra={"event": "ui.login_refused"})
        return render(request, "login.html", {"error": "That token is not accepted."}, None, 401)
    cookie = request.app[SIGNER].dumps({"csrf": secrets.token_urlsafe(24)})
    response = redirect("/ui/")
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
    current = session(request)
    if not csrf_ok(current, await request.post()):
        return csrf_refused(request, current)
    response = redirect("/ui/login")
    response.del_cookie(COOKIE, path="/ui/")
    return response

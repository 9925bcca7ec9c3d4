"""The web dashboard at ``/ui/``: server-rendered pages over the ledger's read verbs.

Pages work without JavaScript; htmx only refreshes the overview's figures, and a small static
script shows timestamps in the viewer's zone. :mod:`bridge.ui.session` holds the login, the CSRF
check and the security headers; :mod:`bridge.ui.pages` names the pages, which live by group
(:mod:`~bridge.ui.overview`, :mod:`~bridge.ui.enrichments`, :mod:`~bridge.ui.deliveries`,
:mod:`~bridge.ui.inbound`) over the query checks of :mod:`bridge.ui.params`;
:mod:`bridge.ui.charts` the overview's figures and charts.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp_jinja2
import itsdangerous
import jinja2
from aiohttp import web

from bridge.ui import charts, pages, session

_HERE = Path(__file__).parent


def setup(app: web.Application, clock: Callable[[], float] = time.time) -> None:
    """Mount the dashboard on ``app`` (``serve`` calls it when ``ui.enabled``).

    ``clock`` dates the session cookies, so they expire on the bridge's own clock.
    """

    class Signer(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    # A key per process: a restart logs everyone out, and no key has to be configured or stored.
    app[session.SIGNER] = itsdangerous.URLSafeTimedSerializer(
        secrets.token_bytes(32), salt="ui-session", signer=Signer
    )
    app[pages.FIGURES] = charts.Figures()
    app.cleanup_ctx.append(_figures_ctx)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        app_key=aiohttp_jinja2.APP_KEY,
    )
    env = aiohttp_jinja2.get_env(app)
    env.filters["iso"] = pages.iso
    r = app.router
    r.add_get("/ui", _to_overview)
    r.add_get("/ui/", pages.overview)
    r.add_get("/ui/fragments/counts", pages.counts_fragment)
    r.add_get("/ui/login", session.login_page)
    r.add_post("/ui/login", session.login)
    r.add_post("/ui/logout", session.logout)
    r.add_get("/ui/jump", pages.jump)
    r.add_get("/ui/enrichments", pages.enrichments)
    r.add_get("/ui/enrichments/{id}", pages.enrichment)
    r.add_get("/ui/deliveries", pages.deliveries)
    r.add_get("/ui/deliveries/retry-dead", pages.retry_dead_confirm)
    r.add_post("/ui/deliveries/retry-dead", pages.retry_dead)
    r.add_get("/ui/deliveries/{id}", pages.delivery)
    r.add_post("/ui/deliveries/{id}/retry", pages.retry)
    r.add_get("/ui/inbound", pages.inbound)
    r.add_get("/ui/connectors", pages.connectors)
    r.add_static("/ui/static/", _HERE / "static")


async def _figures_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[pages.FIGURES].close()


async def _to_overview(_: web.Request) -> web.Response:
    return session.redirect("/ui/")

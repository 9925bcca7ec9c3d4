"""The overview page: counts by state, charts, credits, holds and replicas, and the id jump.

Its figures come from :class:`bridge.ui.charts.Figures`, one read shared by every viewer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge import model, runtime
from bridge import web as api
from bridge.ui import charts
from bridge.ui.session import problem, redirect, render, signed_in

FIGURES = web.AppKey("ui_figures", charts.Figures)


async def _overview_context(request: web.Request) -> dict[str, Any]:
    bridge = request.app[runtime.BRIDGE]
    now = bridge.clock()
    # The page's own reads first: a refresh of the figures that this request starts then
    # runs after them, not before.
    minutes = await bridge.ledger.per_minute(now - charts.MINUTES * 60)
    held_meta = await bridge.ledger.get_meta("trigger_held")
    figures = await request.app[FIGURES].get(bridge.ledger, now)
    deliveries: dict[str, dict[str, int]] = {}
    for (name, state), n in figures.deliveries.items():
        deliveries.setdefault(name, {})[state] = n
    # Nothing queued, nothing held: a hold left by a process that stopped means nothing.
    held = (held_meta or None) if figures.enrichments.get(model.EnrichmentState.QUEUED) else None
    lance = bridge.client.per_minute if bridge.client else {}
    in_flight = sum(figures.enrichments.get(s, 0) for s in model.IN_FLIGHT)
    return {
        "enrichment_states": [
            (s.value, figures.enrichments.get(s.value, 0)) for s in model.EnrichmentState
        ],
        "deliveries": deliveries,
        "delivery_states": [s.value for s in model.DeliveryState],
        "oldest_age": figures.oldest_in_flight_s if in_flight else None,
        "charged": figures.charged,
        "charged_total": sum(figures.charged.values()),
        "held": held,
        "replicas": figures.replicas if len(figures.replicas) > 1 else (),
        "now": now,
        "charts": charts.charts(minutes, lance, now),
        "read_at": figures.read_at,
    }


async def overview(request: web.Request) -> web.Response:
    """Counts by state, the oldest in-flight age, charts, deliveries, credits, holds, replicas."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    return render(request, "overview.html", await _overview_context(request), current)


async def counts_fragment(request: web.Request) -> web.Response:
    """The overview's figures alone, which htmx polls to keep the page live."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    return render(request, "_counts.html", await _overview_context(request), current)


async def jump(request: web.Request) -> web.Response:
    """The header's "go to id" form: to the enrichment or delivery page of that id."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    kind = request.query.get("kind", "enrichment")
    raw = request.query.get("id", "").strip().lstrip("#")
    if kind not in ("enrichment", "delivery"):
        return problem(request, 400, "kind must be enrichment or delivery", current)
    if not api._is_number(raw) or int(raw) < 1:
        return problem(request, 400, "id must be a whole number, like 42", current)
    return redirect(f"/ui/{'enrichments' if kind == 'enrichment' else 'deliveries'}/{int(raw)}")

"""The inbound events page and the connectors page (deliveries, attempts, rate budgets)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bridge import model, ratelimit, runtime
from bridge.ui import params
from bridge.ui.overview import FIGURES
from bridge.ui.session import problem, render, signed_in

# Inbound states the dashboard offers as filters; any other the ledger holds is shown too.
INBOUND_STATES = frozenset({*model.InboundState, "matched", "unmatched", "ambiguous"})


def _inbound_cursor(request: web.Request) -> tuple[float, str, str] | None:
    raw = request.query.get("before")
    if not raw:
        return None
    try:
        at, source, key = json.loads(raw)
    except (ValueError, TypeError):
        raise params.BadQuery("before must be a value from a Next link") from None
    if not isinstance(at, int | float) or not isinstance(source, str) or not isinstance(key, str):
        raise params.BadQuery("before must be a value from a Next link")
    return float(at), source, key


async def inbound(request: web.Request) -> web.Response:
    """Events CRMs sent, newest first: accepted, skipped and match outcomes, with reasons."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    bridge = request.app[runtime.BRIDGE]
    counts = await bridge.ledger.inbound_counts()
    states = INBOUND_STATES | {state for _, state in counts}
    sources = frozenset(bridge.connectors) | {source for source, _ in counts}
    try:
        state = params.choice(request, "state", frozenset(states))
        source = params.choice(request, "source", sources)
        before = _inbound_cursor(request)
    except params.BadQuery as exc:
        return problem(request, 400, str(exc), current)
    rows = await bridge.ledger.recent_inbound(
        state=state, source=source, before=before, limit=params.PAGE
    )
    filters = {"state": state or "", "source": source or ""}
    next_query = None
    if len(rows) == params.PAGE:
        last = rows[-1]
        cursor = json.dumps(last["cursor"])
        next_query = params.encode(filters, before=cursor)
    by_state: dict[str, int] = {}
    for (_, name), n in counts.items():
        by_state[name] = by_state.get(name, 0) + n
    context = {
        "rows": rows,
        "filters": filters,
        "states": sorted(states),
        "sources": sorted(sources),
        "by_state": sorted(by_state.items()),
        "next_query": next_query,
    }
    return render(request, "inbound.html", context, current)


async def connectors(request: web.Request) -> web.Response:
    """Per connector: deliveries and success rate, attempts, last error, rate-limit state."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    bridge = request.app[runtime.BRIDGE]
    now = bridge.clock()
    figures = await request.app[FIGURES].get(bridge.ledger, now)
    names = sorted(bridge.connectors)
    errors = await bridge.ledger.last_errors(names)
    attempts = bridge.jobs.dispatcher.attempts if bridge.jobs else {}
    rows = []
    for name in names:
        item = bridge.connectors[name]
        by_state = {
            s.value: figures.deliveries.get((name, s.value), 0) for s in model.DeliveryState
        }
        settled = by_state["delivered"] + by_state["dead"]
        tried: dict[str, int] = {}
        for (who, outcome, _), n in attempts.items():
            if who == name:
                tried[outcome] = tried.get(outcome, 0) + n
        requests: dict[str, int] = {}
        for (_, status), n in item.remote_requests.items():
            requests[status] = requests.get(status, 0) + n
        rows.append(
            {
                "name": name,
                "type": item.config.type,
                "deliveries": by_state,
                "rate": None if not settled else by_state["delivered"] / settled,
                "attempts": sorted(tried.items()),
                "requests": sorted(requests.items()),
                "error": errors.get(name),
                "budget": _budget(getattr(item, "budget", None)),
            }
        )
    context = {"rows": rows, "lance": _lance_state(bridge, now)}
    return render(request, "connectors.html", context, current)


def _budget(budget: object) -> str | None:
    """A connector's rate budget in words, when it has one."""
    if not isinstance(budget, ratelimit.RollingWindow):
        return None
    used, paused = budget.usage()
    if budget.limit <= 0:
        text = "no budget configured"
    else:
        text = f"{used:,} of {budget.limit:,} requests used in the last {budget.window_s:g} s"
    return text + (
        f"; paused for {paused:.0f} s more (the CRM said its limit is spent)" if paused else ""
    )


def _lance_state(bridge: runtime.Bridge, now: float) -> dict[str, Any]:
    """Lance's row: requests by status and the jobs' pauses after failures or holds."""
    statuses: dict[str, int] = {}
    for (_, status), n in (bridge.client.statuses if bridge.client else {}).items():
        statuses[status] = statuses.get(status, 0) + n
    pauses = []
    if bridge.jobs is not None:
        for job, gate in (
            ("trigger", bridge.jobs.triggerer.gate),
            ("poll", bridge.jobs.poller.gate),
            ("fetch", bridge.jobs.fetcher.gate),
        ):
            if not gate.is_open(now):
                pauses.append((job, gate.open_at - now))
    return {"requests": sorted(statuses.items()), "pauses": pauses}

"""The dashboard's pages: each reads through the ledger interface, so both backends serve them.

Query strings are checked before anything is read: a value the page does not know is a 400
page naming the parameter, an unknown id a 404 page. Lists are keyset-paginated (a ``Next``
link carries the cursor), so a page costs the same on the millionth row as on the first.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
import typing
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bridge import model, ratelimit, runtime, schemas
from bridge import web as api
from bridge.ui import charts
from bridge.ui.session import Session, problem, redirect, render, signed_in, signed_in_post

logger = logging.getLogger(__name__)

PAGE = 50
MAX_TEXT = 200  # longest filter value accepted from a query string
REPLAY_CHUNK = 1000  # dead deliveries replayed per ledger call by "retry all"
FIELDS = frozenset(typing.get_args(schemas.EnrichField))
# Inbound states the dashboard offers as filters; any other the ledger holds is shown too.
INBOUND_STATES = frozenset({*model.InboundState, "matched", "unmatched", "ambiguous"})
_STATE_WORD = re.compile(r"[a-z][a-z_-]{0,31}")
FIGURES = web.AppKey("ui_figures", charts.Figures)


def iso(value: Any) -> str:
    """A timestamp (Unix seconds or ISO text) as ISO 8601 UTC, for ``<time datetime>``."""
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return "" if value is None else str(value)


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


def _time(request: web.Request, name: str) -> float | None:
    """A ``from``/``to`` bound: ISO 8601, UTC unless it names its zone."""
    raw = _text(request, name)
    if raw is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _BadQuery(f"{name} must be a date and time like 2026-12-01T09:30 (UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _id(request: web.Request) -> int | None:
    raw = request.match_info["id"]
    return int(raw) if api._is_number(raw) else None


def _query(filters: dict[str, str], **extra: str) -> str:
    return urlencode({k: v for k, v in (filters | extra).items() if v})


# -- overview --------------------------------------------------------------------------------


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


# -- enrichments -----------------------------------------------------------------------------


async def enrichments(request: web.Request) -> web.Response:
    """Enrichments filtered by state, field, entity id, CRM record and creation time."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    try:
        state = _choice(request, "state", api.ENRICHMENT_STATES)
        field = _choice(request, "field", FIELDS)
        entity_id = _text(request, "entity_id")
        record_id = _text(request, "record_id")
        since, until = _time(request, "from"), _time(request, "to")
        after = _cursor(request)
    except _BadQuery as exc:
        return problem(request, 400, str(exc), current)
    rows = await request.app[runtime.BRIDGE].ledger.list_enrichments(
        state=state,
        after=after,
        limit=PAGE,
        entity_id=entity_id,
        field=field,
        record_id=record_id,
        created_after=since,
        created_before=until,
    )
    filters = {
        "state": state or "",
        "field": field or "",
        "entity_id": entity_id or "",
        "record_id": record_id or "",
        "from": request.query.get("from", "").strip(),
        "to": request.query.get("to", "").strip(),
    }
    context = {
        "rows": rows,
        "filters": filters,
        "states": sorted(api.ENRICHMENT_STATES),
        "fields": sorted(FIELDS),
        "next_query": _query(filters, cursor=str(rows[-1]["id"])) if len(rows) == PAGE else None,
    }
    return render(request, "enrichments.html", context, current)


async def enrichment(request: web.Request) -> web.Response:
    """One enrichment: its timeline, Lance record, values, targets and deliveries."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    row_id = _id(request)
    store = request.app[runtime.BRIDGE].ledger
    found = await store.enrichments([row_id]) if row_id is not None else {}
    if row_id is None or row_id not in found:
        missing = f"There is no enrichment {request.match_info['id']}."
        return problem(request, 404, missing, current)
    rows = await store.list_deliveries(enrichment_id=row_id, limit=api.MAX_PAGE)
    context = {"row": found[row_id], "deliveries": rows, "pretty": _pretty}
    return render(request, "enrichment.html", context, current)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


# -- deliveries ------------------------------------------------------------------------------


def _delivery_filters(request: web.Request) -> dict[str, Any]:
    """The deliveries page's filters, checked (raises :class:`_BadQuery`)."""
    bridge = request.app[runtime.BRIDGE]
    return {
        "state": _choice(request, "state", api.DELIVERY_STATES),
        "connector": _choice(request, "connector", frozenset(bridge.connectors)),
        "updated_after": _time(request, "from"),
        "updated_before": _time(request, "to"),
    }


def _shown(request: web.Request, keys: tuple[str, ...]) -> dict[str, str]:
    return {key: request.query.get(key, "").strip() for key in keys}


async def deliveries(request: web.Request) -> web.Response:
    """Deliveries filtered by state, connector and last change, a keyset page at a time."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    bridge = request.app[runtime.BRIDGE]
    try:
        wanted = _delivery_filters(request)
        after = _cursor(request)
    except _BadQuery as exc:
        return problem(request, 400, str(exc), current)
    rows = await bridge.ledger.list_deliveries(**wanted, after=after, limit=PAGE)
    filters = _shown(request, ("state", "connector", "from", "to"))
    retried = request.query.get("retried", "")
    context = {
        "rows": rows,
        "filters": filters,
        "states": sorted(api.DELIVERY_STATES),
        "connectors": sorted(bridge.connectors),
        "next_query": _query(filters, cursor=str(rows[-1]["id"])) if len(rows) == PAGE else None,
        "retry_query": _query(filters | {"state": ""}),
        "notice": f"{int(retried):,} dead deliveries are pending again."
        if api._is_number(retried)
        else None,
    }
    return render(request, "deliveries.html", context, current)


async def delivery(request: web.Request) -> web.Response:
    """One delivery, with a retry button when it is dead."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    return await _delivery_page(request, current, None)


async def _delivery_page(
    request: web.Request, current: Session, notice: str | None, status: int = 200
) -> web.Response:
    delivery_id = _id(request)
    row = await request.app[runtime.BRIDGE].ledger.delivery(delivery_id) if delivery_id else None
    if row is None:
        return problem(request, 404, f"There is no delivery {request.match_info['id']}.", current)
    context = {"row": row, "notice": notice, "dead": row["state"] == model.DeliveryState.DEAD}
    return render(request, "delivery.html", context, current, status)


async def retry(request: web.Request) -> web.Response:
    """Replay a dead delivery through the ledger; anything else is refused with a message."""
    current = await signed_in_post(request)
    if isinstance(current, web.Response):
        return current  # the login page or the 403: nothing changes
    bridge = request.app[runtime.BRIDGE]
    delivery_id = _id(request)
    row = await bridge.ledger.delivery(delivery_id) if delivery_id else None
    if row is None or delivery_id is None:
        return problem(request, 404, f"There is no delivery {request.match_info['id']}.", current)
    if row["state"] != model.DeliveryState.DEAD:
        notice = f"Delivery {delivery_id} is {row['state']}; only dead deliveries can be retried."
        return await _delivery_page(request, current, notice, 409)
    await bridge.ledger.replay([delivery_id], bridge.clock())
    logger.info(
        "delivery %s replayed from the dashboard",
        delivery_id,
        extra={"event": "delivery.replayed", "delivery_id": delivery_id},
    )
    return redirect(f"/ui/deliveries/{delivery_id}")


async def _dead_ids(request: web.Request, wanted: dict[str, Any]) -> list[int]:
    """The ids of every dead delivery the filters select, a keyset page at a time."""
    store = request.app[runtime.BRIDGE].ledger
    ids: list[int] = []
    while True:
        page = await store.delivery_ids(
            **(wanted | {"state": model.DeliveryState.DEAD.value}),
            after=ids[-1] if ids else 0,
            limit=api.MAX_PAGE,
        )
        ids += page
        if len(page) < api.MAX_PAGE:
            return ids


async def retry_dead_confirm(request: web.Request) -> web.Response:
    """The confirmation before "retry every dead delivery": how many the filter selects."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    try:
        wanted = _delivery_filters(request)
    except _BadQuery as exc:
        return problem(request, 400, str(exc), current)
    count = await request.app[runtime.BRIDGE].ledger.count_matching_deliveries(
        **(wanted | {"state": model.DeliveryState.DEAD.value})
    )
    filters = _shown(request, ("connector", "from", "to"))
    context = {"count": count, "filters": filters, "back": _query(filters, state="dead")}
    return render(request, "retry_dead.html", context, current)


async def retry_dead(request: web.Request) -> web.Response:
    """Replay every dead delivery of the filter (CSRF-checked); replays cost no credits."""
    current = await signed_in_post(request)
    if isinstance(current, web.Response):
        return current  # the login page or the 403: nothing changes
    # The form repeats the filters in the query string, where they are checked as on a GET.
    try:
        wanted = _delivery_filters(request)
    except _BadQuery as exc:
        return problem(request, 400, str(exc), current)
    bridge = request.app[runtime.BRIDGE]
    ids = await _dead_ids(request, wanted)
    replayed = 0
    for start in range(0, len(ids), REPLAY_CHUNK):
        chunk = ids[start : start + REPLAY_CHUNK]
        replayed += len(await bridge.ledger.replay(chunk, bridge.clock()))
    logger.info(
        "%s dead deliveries replayed from the dashboard",
        replayed,
        extra={"event": "delivery.replayed_all", "count": replayed},
    )
    filters = _shown(request, ("connector", "from", "to"))
    return redirect(f"/ui/deliveries?{_query(filters, state='pending', retried=str(replayed))}")


# -- inbound events and connectors -------------------------------------------------------------


def _inbound_cursor(request: web.Request) -> tuple[float, str, str] | None:
    raw = request.query.get("before")
    if not raw:
        return None
    try:
        at, source, key = json.loads(raw)
    except (ValueError, TypeError):
        raise _BadQuery("before must be a value from a Next link") from None
    if not isinstance(at, int | float) or not isinstance(source, str) or not isinstance(key, str):
        raise _BadQuery("before must be a value from a Next link")
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
        state = _choice(request, "state", frozenset(states))
        source = _choice(request, "source", sources)
        before = _inbound_cursor(request)
    except _BadQuery as exc:
        return problem(request, 400, str(exc), current)
    rows = await bridge.ledger.recent_inbound(state=state, source=source, before=before, limit=PAGE)
    filters = {"state": state or "", "source": source or ""}
    next_query = None
    if len(rows) == PAGE:
        last = rows[-1]
        cursor = json.dumps(last["cursor"])
        next_query = _query(filters, before=cursor)
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

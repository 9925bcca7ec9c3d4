"""The deliveries pages: the filtered list, one delivery, and the replays of dead ones.

Replays go through the ledger and are CSRF-checked; an expired session gets the login page
and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from bridge import model, runtime
from bridge import web as api
from bridge.ui import params
from bridge.ui.session import Session, problem, redirect, render, signed_in, signed_in_post

# The replays log under the pages' name, as they always have.
logger = logging.getLogger("bridge.ui.pages")

REPLAY_CHUNK = 1000  # dead deliveries replayed per ledger call by "retry all"


def _delivery_filters(request: web.Request) -> dict[str, Any]:
    """The deliveries page's filters, checked (raises :class:`params.BadQuery`)."""
    bridge = request.app[runtime.BRIDGE]
    return {
        "state": params.choice(request, "state", api.DELIVERY_STATES),
        "connector": params.choice(request, "connector", frozenset(bridge.connectors)),
        "updated_after": params.moment(request, "from"),
        "updated_before": params.moment(request, "to"),
    }


async def deliveries(request: web.Request) -> web.Response:
    """Deliveries filtered by state, connector and last change, a keyset page at a time."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    bridge = request.app[runtime.BRIDGE]
    try:
        wanted = _delivery_filters(request)
        after = params.cursor(request)
    except params.BadQuery as exc:
        return problem(request, 400, str(exc), current)
    rows = await bridge.ledger.list_deliveries(**wanted, after=after, limit=params.PAGE)
    filters = params.shown(request, ("state", "connector", "from", "to"))
    retried = request.query.get("retried", "")
    context = {
        "rows": rows,
        "filters": filters,
        "states": sorted(api.DELIVERY_STATES),
        "connectors": sorted(bridge.connectors),
        "next_query": params.encode(filters, cursor=str(rows[-1]["id"]))
        if len(rows) == params.PAGE
        else None,
        "retry_query": params.encode(filters | {"state": ""}),
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
    delivery_id = params.path_id(request)
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
    delivery_id = params.path_id(request)
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
    except params.BadQuery as exc:
        return problem(request, 400, str(exc), current)
    count = await request.app[runtime.BRIDGE].ledger.count_matching_deliveries(
        **(wanted | {"state": model.DeliveryState.DEAD.value})
    )
    filters = params.shown(request, ("connector", "from", "to"))
    context = {"count": count, "filters": filters, "back": params.encode(filters, state="dead")}
    return render(request, "retry_dead.html", context, current)


async def retry_dead(request: web.Request) -> web.Response:
    """Replay every dead delivery of the filter (CSRF-checked); replays cost no credits."""
    current = await signed_in_post(request)
    if isinstance(current, web.Response):
        return current  # the login page or the 403: nothing changes
    # The form repeats the filters in the query string, where they are checked as on a GET.
    try:
        wanted = _delivery_filters(request)
    except params.BadQuery as exc:
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
    filters = params.shown(request, ("connector", "from", "to"))
    return redirect(
        f"/ui/deliveries?{params.encode(filters, state='pending', retried=str(replayed))}"
    )

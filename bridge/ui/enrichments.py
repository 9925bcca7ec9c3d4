"""The enrichments pages: the filtered list and one enrichment with its deliveries."""

from __future__ import annotations

import json
import typing
from typing import Any

from aiohttp import web

from bridge import runtime, schemas
from bridge import web as api
from bridge.ui import params
from bridge.ui.session import problem, render, signed_in

FIELDS = frozenset(typing.get_args(schemas.EnrichField))


async def enrichments(request: web.Request) -> web.Response:
    """Enrichments filtered by state, field, entity id, CRM record and creation time."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    try:
        state = params.choice(request, "state", api.ENRICHMENT_STATES)
        field = params.choice(request, "field", FIELDS)
        entity_id = params.text(request, "entity_id")
        record_id = params.text(request, "record_id")
        since, until = params.moment(request, "from"), params.moment(request, "to")
        after = params.cursor(request)
    except params.BadQuery as exc:
        return problem(request, 400, str(exc), current)
    rows = await request.app[runtime.BRIDGE].ledger.list_enrichments(
        state=state,
        after=after,
        limit=params.PAGE,
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
        "next_query": params.encode(filters, cursor=str(rows[-1]["id"]))
        if len(rows) == params.PAGE
        else None,
    }
    return render(request, "enrichments.html", context, current)


async def enrichment(request: web.Request) -> web.Response:
    """One enrichment: its timeline, Lance record, values, targets and deliveries."""
    current = signed_in(request)
    if isinstance(current, web.Response):
        return current
    row_id = params.path_id(request)
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

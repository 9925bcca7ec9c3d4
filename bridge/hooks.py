"""Inbound CRM events: the ``/hooks/*`` handler.

A CRM's request is verified by the connector it belongs to, parsed into
:class:`~bridge.model.Inbound` events, stored with their tasks in one transaction, and only
then answered: the CRM's retry is the safety net until the events are durable, and a retried
or duplicated event is recognised by its key and changes nothing. Events that name a record
without its properties wait in the ledger for the ``resolve`` job (:mod:`bridge.resolver`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from bridge import connector, ledger

# The logger name these lines have always carried, which operators' log filters match.
logger = logging.getLogger("bridge.inbound")


def request_url(request: web.Request, public_url: str) -> str:
    """The URL the CRM called, as its signature covers it.

    Behind a TLS-terminating proxy the bridge sees ``http://internal:8080/...``; the CRM signed
    ``https://public.example.com/...``. ``server.public_url`` names the latter; without it the
    Host header and the connection's scheme are used. The raw path and query are kept as sent.
    """
    if public_url:
        return public_url.rstrip("/") + request.raw_path
    return f"{request.scheme}://{request.host}{request.raw_path}"


async def handle_hook(
    request: web.Request,
    candidates: Sequence[connector.Connector],
    store: ledger.Ledger,
    *,
    public_url: str,
    max_json_depth: int,
    now: float,
) -> web.Response:
    """Verify, parse and store one inbound request; answer as the CRM expects.

    Args:
        candidates: The connectors this path may belong to; the first whose verification
            passes takes the request (several HubSpot apps can share ``/hooks/hubspot``).
        max_json_depth: How deeply a JSON body may nest (``server.max_json_depth``).
    """
    try:
        body = await request.read()
    except web.RequestPayloadError:
        body = None
    hook = connector.HookRequest(
        method=request.method,
        url=request_url(request, public_url),
        headers=request.headers,
        body=body or b"",
        now=now,
        max_json_depth=max_json_depth,
    )
    if body is None:
        error = connector.HookError(400, "invalid_body", "request body could not be decoded")
        return candidates[0].hook_error(hook, error)
    chosen, refusal = _verified_by(candidates, hook)
    if chosen is None:
        assert refusal is not None
        logger.warning(
            "inbound request refused: %s",
            refusal.message,
            extra={"event": "hook.refused", "path": request.path, "status": refusal.status},
        )
        return candidates[0].hook_error(hook, refusal)
    try:
        events = chosen.parse_hook(hook)
    except connector.HookError as exc:
        logger.warning(
            "inbound request refused: %s",
            exc.message,
            extra={"event": "hook.refused", "connector": chosen.name, "status": exc.status},
        )
        return chosen.hook_error(hook, exc)
    received = await store.receive(chosen.name, events, now)
    logger.info(
        "%s sent %d events: %d new enrichments, %d duplicates, %d skipped, %d to look up,"
        " %d to match",
        chosen.name,
        received.events,
        sum(row.created for row in received.accepted),
        received.duplicates,
        received.skipped,
        received.lookups,
        received.matching,
        extra={
            "event": "hook.received",
            "connector": chosen.name,
            "events": received.events,
            "duplicates": received.duplicates,
            "skipped": received.skipped,
            "lookups": received.lookups,
            "matching": received.matching,
        },
    )
    return chosen.hook_reply(hook, received)


def _verified_by(
    candidates: Sequence[connector.Connector], hook: connector.HookRequest
) -> tuple[connector.Connector | None, connector.HookError | None]:
    first: connector.HookError | None = None
    for candidate in candidates:
        try:
            candidate.verify_hook(hook)
        except connector.HookError as exc:
            first = first or exc
            continue
        return candidate, None
    return None, first

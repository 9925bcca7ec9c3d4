"""HubSpot calling the bridge: signed app webhooks and workflow "Send a webhook" calls."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import aiohttp

from bridge.sim.hubspot.schema import DEFAULT_PORTAL_ID, SINGULAR, checked_type

DEFAULT_APP_ID = 54321
DEFAULT_SUBSCRIPTION_ID = 12345
MAX_WEBHOOK_EVENTS = 100
WEBHOOK_TIMEOUT_S = 5.0  # HubSpot gives up on (and retries) slower answers
USER_AGENT = (
    "HubSpot Connect 2.0 (http://dev.hubspot.com/) (namespace: webhooks-nio-http-client)"
    " - WebhooksExecutorDaemon-executor"
)


_EVENT_IDS = itertools.count(1)


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign_v1(secret: str, body: bytes | str) -> str:
    """``X-HubSpot-Signature`` v1: SHA-256 hex of ``secret + body`` (app webhooks)."""
    return hashlib.sha256(secret.encode() + _bytes(body)).hexdigest()


def sign_v2(secret: str, method: str, uri: str, body: bytes | str) -> str:
    """``X-HubSpot-Signature`` v2: SHA-256 hex of ``secret + method + uri + body`` (workflows)."""
    return hashlib.sha256(f"{secret}{method}{uri}".encode() + _bytes(body)).hexdigest()


def sign_v3(secret: str, method: str, uri: str, body: bytes | str, timestamp_ms: str | int) -> str:
    """``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of ``method + uri + body + timestamp``.

    ``uri`` is the full URL HubSpot called, exactly as sent; ``timestamp_ms`` is the
    ``X-HubSpot-Request-Timestamp`` header text (milliseconds).
    """
    message = f"{method}{uri}".encode() + _bytes(body) + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_headers(
    secret: str,
    body: bytes | str,
    *,
    method: str = "POST",
    uri: str,
    now_ms: int,
    version: Literal["v1", "v2"] = "v1",
) -> dict[str, str]:
    """The headers HubSpot sends with a signed request.

    Args:
        secret: The app's client secret.
        body: The exact bytes sent (empty for a GET).
        method: The HTTP method.
        uri: The full URL called (scheme, host, path, query).
        now_ms: The request timestamp in Unix milliseconds.
        version: ``v1`` for app webhooks, ``v2`` for workflow webhooks; v3 is always added.
    """
    legacy = sign_v1(secret, body) if version == "v1" else sign_v2(secret, method, uri, body)
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature": legacy,
        "X-HubSpot-Signature-Version": version,
        "X-HubSpot-Signature-v3": sign_v3(secret, method, uri, body, now_ms),
        "X-HubSpot-Request-Timestamp": str(now_ms),
        "X-HubSpot-Timeout-Millis": "10000",
        "User-Agent": USER_AGENT,
    }


def _event(
    object_id: int,
    subscription_type: str,
    *,
    portal_id: int,
    app_id: int,
    subscription_id: int,
    event_id: int | None,
    occurred_at_ms: int | None,
    attempt: int,
    clock: Callable[[], float],
) -> dict[str, Any]:
    return {
        "eventId": next(_EVENT_IDS) if event_id is None else event_id,
        "subscriptionId": subscription_id,
        "portalId": portal_id,
        "appId": app_id,
        "occurredAt": int(clock() * 1000) if occurred_at_ms is None else occurred_at_ms,
        "subscriptionType": subscription_type,
        "attemptNumber": attempt,
        "objectId": object_id,
    }


def property_change(
    object_id: int,
    property_name: str,
    value: str,
    *,
    object_type: str = "contact",
    portal_id: int = DEFAULT_PORTAL_ID,
    app_id: int = DEFAULT_APP_ID,
    subscription_id: int = DEFAULT_SUBSCRIPTION_ID,
    event_id: int | None = None,
    occurred_at_ms: int | None = None,
    attempt: int = 0,
    change_source: str = "CRM_UI",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A ``{object_type}.propertyChange`` app-webhook event (``propertyValue`` is the new value).

    ``event_id`` defaults to a process-wide counter and ``occurred_at_ms`` to ``clock()``.
    """
    event = _event(
        object_id,
        f"{object_type}.propertyChange",
        portal_id=portal_id,
        app_id=app_id,
        subscription_id=subscription_id,
        event_id=event_id,
        occurred_at_ms=occurred_at_ms,
        attempt=attempt,
        clock=clock,
    )
    return event | {
        "propertyName": property_name,
        "propertyValue": value,
        "changeSource": change_source,
    }


def creation(
    object_id: int,
    *,
    object_type: str = "contact",
    portal_id: int = DEFAULT_PORTAL_ID,
    app_id: int = DEFAULT_APP_ID,
    subscription_id: int = DEFAULT_SUBSCRIPTION_ID,
    event_id: int | None = None,
    occurred_at_ms: int | None = None,
    attempt: int = 0,
    change_source: str = "CRM_UI",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """A ``{object_type}.creation`` app-webhook event, with ``changeFlag: "CREATED"``."""
    event = _event(
        object_id,
        f"{object_type}.creation",
        portal_id=portal_id,
        app_id=app_id,
        subscription_id=subscription_id,
        event_id=event_id,
        occurred_at_ms=occurred_at_ms,
        attempt=attempt,
        clock=clock,
    )
    return event | {"changeFlag": "CREATED", "changeSource": change_source}


async def send_webhook(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    events: list[dict[str, Any]],
    *,
    now_ms: int | None = None,
    max_attempts: int = 3,
) -> int:
    """POST ``events`` to ``url`` as HubSpot does: one JSON array, signed v1 and v3.

    Each attempt serialises the batch once, signs those bytes and sends them; a non-2xx answer,
    a connection error or a 5-second timeout is retried at once with ``attemptNumber`` raised by
    one in every event. ``events`` is not modified.

    Args:
        session: The client session to send with.
        url: The target URL; it is also the signed URI.
        secret: The app's client secret.
        events: 1 to 100 events (see :func:`property_change`, :func:`creation`).
        now_ms: The request timestamp; ``None`` uses the wall clock at each attempt.
        max_attempts: Attempts in total.

    Returns:
        The status of the last attempt.

    Raises:
        ValueError: No events or more than 100, or ``max_attempts`` below 1.
        aiohttp.ClientError: The last attempt could not connect.
    """
    if not 1 <= len(events) <= MAX_WEBHOOK_EVENTS or max_attempts < 1:
        raise ValueError(f"send 1 to {MAX_WEBHOOK_EVENTS} events in at least one attempt")
    timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
    status = 0
    for attempt in range(max_attempts):
        batch = [e | {"attemptNumber": int(e.get("attemptNumber", 0)) + attempt} for e in events]
        body = json.dumps(batch, separators=(",", ":")).encode()
        stamp = int(time.time() * 1000) if now_ms is None else now_ms
        headers = webhook_headers(secret, body, uri=url, now_ms=stamp)
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            if attempt == max_attempts - 1:
                raise
            continue
        if 200 <= status < 300:
            break
    return status


def workflow_payload(
    object_id: int | str, properties: Mapping[str, str], *, object_type: str = "contacts"
) -> dict[str, object]:
    """The body of a workflow "Send a webhook" call (newer editor, chosen properties).

    HubSpot signs these calls v2 (``X-HubSpot-Signature-Version: v2``) plus v3: build the
    headers with ``webhook_headers(secret, body, uri=url, now_ms=…, version="v2")``. The exact
    body of the newer editor is not documented; this shape is the sandbox's assumption.
    """
    t = checked_type(object_type)
    return {"objectId": int(object_id), "objectType": SINGULAR[t], "properties": dict(properties)}


def legacy_contact_payload(
    vid: int,
    properties: Mapping[str, str],
    *,
    portal_id: int = DEFAULT_PORTAL_ID,
    timestamp_ms: int | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, object]:
    """A contact workflow webhook body in the legacy v1 contact shape (values with history).

    Signed like :func:`workflow_payload` (v2 plus v3).
    """
    stamp = int(clock() * 1000) if timestamp_ms is None else timestamp_ms

    def versioned(value: str) -> dict[str, object]:
        version = {
            "value": value,
            "source-type": "CRM_UI",
            "source-id": None,
            "source-label": None,
            "timestamp": stamp,
            "selected": False,
        }
        return {"value": value, "versions": [version]}

    return {
        "vid": vid,
        "canonical-vid": vid,
        "merged-vids": [],
        "portal-id": portal_id,
        "is-contact": True,
        "properties": {name: versioned(value) for name, value in properties.items()},
    }

"""A faithful fake of HubSpot's CRM API, and tools that send webhooks the way HubSpot does.

The sandbox serves, under one base URL, what a HubSpot connector calls: the OAuth refresh
(``POST /oauth/v1/token``), the property listing, single read and update, and batch read and
update of contacts and companies (``/crm/v3/...``). It follows the contract in
``crm-apis.md`` §1.5 to 1.7: every value a string, at most 100 inputs per batch, 207 with one
``StandardError`` per failed input, HubSpot's error bodies, bearer auth with 30-minute OAuth
tokens, and the ``TEN_SECONDLY_ROLLING`` burst limit with the ``X-HubSpot-RateLimit-*`` headers:
requests counted as they arrive, in a true rolling window, per private app (token) and for all
OAuth tokens of the account together (§1.7). Faults (429, 423, 477, 5xx) can be injected per
request, all on an injectable clock; ``latency_s`` delays each API request on its way in, as a
network does, before it is counted.

Example::

    sandbox = HubSpotSandbox(clock=clock, rate_limit=100)
    contact_id = sandbox.add_record("contacts", {"email": "ada@example.com"})
    runner = await serve(sandbox)
    url = base_url(runner)  # bearer token: "pat-sandbox"
    sandbox.fail_next(1, 429, route="batch/update")  # the client must retry once
    ...
    assert sandbox.record("contacts", contact_id)["phone"] == "+44 20 7946 0000"
    assert sandbox.counts["POST /crm/v3/objects/{objectType}/batch/update"] == 2
    await runner.cleanup()

The other direction, HubSpot calling the bridge, needs no server::

    events = [property_change(int(contact_id), "lance_enrich", "yes", portal_id=62515)]
    status = await send_webhook(session, "http://127.0.0.1:8080/hubspot", secret, events)

App webhooks are signed v1 + v3 (:func:`send_webhook`, :func:`webhook_headers`); workflow
"Send a webhook" calls are signed v2 + v3 (``webhook_headers(..., version="v2")`` over a
:func:`workflow_payload` or :func:`legacy_contact_payload` body).

Admin surface (no auth, not counted): ``GET /_sim/objects/{objectType}/{objectId}``,
``POST /_sim/objects/{objectType}`` with ``{"properties"?, "id"?}``, ``GET /_sim/requests``,
``POST /_sim/faults`` with ``{"count", "status", "body"?, "headers"?, "route"?}``,
``POST /_sim/reset-counts`` and ``POST /_sim/expire-tokens``.

Not from HubSpot's text (its docs do not show them; chosen to look like the rest): the bodies of
injected 423/477/5xx answers and of unknown routes, the batch-size and missing-field messages,
``READ_ONLY_VALUE`` for read-only properties, ``BAD_CLIENT_ID`` for a wrong client secret and
``BAD_GRANT_TYPE``. Rejecting non-string property values is stricter than HubSpot, which may
coerce numbers: it catches clients that would depend on that.

The package: :mod:`~bridge.sim.hubspot.state` (the account), :mod:`~bridge.sim.hubspot.access`
(tokens and the rate limit), :mod:`~bridge.sim.hubspot.server` (counting, faults, admin surface),
:mod:`~bridge.sim.hubspot.objects` (the CRM endpoints), :mod:`~bridge.sim.hubspot.validation`,
:mod:`~bridge.sim.hubspot.errors`, :mod:`~bridge.sim.hubspot.schema` and
:mod:`~bridge.sim.hubspot.webhooks` (HubSpot calling the bridge).
"""

from __future__ import annotations

from bridge.sim._http import base_url, bound_port
from bridge.sim.hubspot.errors import ApiError, error_body, rate_limit_body, standard_error
from bridge.sim.hubspot.schema import DEFAULT_PORTAL_ID, DEFAULT_SCHEMAS, Properties, canonical_type
from bridge.sim.hubspot.server import (
    ADMIN_PREFIX,
    BATCH_READ,
    BATCH_UPDATE,
    CRM_PREFIX,
    OAUTH,
    OBJECT,
    PROPERTIES,
    create_app,
    serve,
)
from bridge.sim.hubspot.state import FAULT_RETRY_AFTER_S, SANDBOX, HubSpotSandbox, Recorded
from bridge.sim.hubspot.validation import MAX_BATCH_INPUTS
from bridge.sim.hubspot.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_SUBSCRIPTION_ID,
    MAX_WEBHOOK_EVENTS,
    USER_AGENT,
    WEBHOOK_TIMEOUT_S,
    creation,
    legacy_contact_payload,
    property_change,
    send_webhook,
    sign_v1,
    sign_v2,
    sign_v3,
    webhook_headers,
    workflow_payload,
)

__all__ = [
    "ADMIN_PREFIX",
    "BATCH_READ",
    "BATCH_UPDATE",
    "CRM_PREFIX",
    "DEFAULT_APP_ID",
    "DEFAULT_PORTAL_ID",
    "DEFAULT_SCHEMAS",
    "DEFAULT_SUBSCRIPTION_ID",
    "FAULT_RETRY_AFTER_S",
    "MAX_BATCH_INPUTS",
    "MAX_WEBHOOK_EVENTS",
    "OAUTH",
    "OBJECT",
    "PROPERTIES",
    "SANDBOX",
    "USER_AGENT",
    "WEBHOOK_TIMEOUT_S",
    "ApiError",
    "HubSpotSandbox",
    "Properties",
    "Recorded",
    "base_url",
    "bound_port",
    "canonical_type",
    "create_app",
    "creation",
    "error_body",
    "legacy_contact_payload",
    "property_change",
    "rate_limit_body",
    "send_webhook",
    "serve",
    "sign_v1",
    "sign_v2",
    "sign_v3",
    "standard_error",
    "webhook_headers",
    "workflow_payload",
]

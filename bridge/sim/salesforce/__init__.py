"""A faithful Salesforce sandbox: the REST API the bridge writes to, and Outbound Messages.

It serves, under one base URL, the OAuth token endpoint (client credentials, JWT bearer and
refresh token grants), the versions list, ``describe``, a SOQL ``query`` limited to
``SELECT … FROM T WHERE Id IN (…)``, sObject Collections retrieve and update, and the single
record ``PATCH``, with the documented shapes: error arrays with ``errorCode``, SaveResults with
``statusCode``, 401 ``INVALID_SESSION_ID``, 403 ``REQUEST_LIMIT_EXCEEDED``, 410 for retired
versions and ``Sforce-Limit-Info`` on every REST answer. The other direction, Salesforce calling
the bridge, is covered by :func:`outbound_message` (the SOAP envelope of a workflow Outbound
Message), :func:`send_outbound_message` (POST it until an Ack) and :func:`is_ack`.

Example::

    sandbox = SalesforceSandbox(clock=clock, daily_limit=1_000)
    lead_id = sandbox.add_record("Lead", {"LastName": "Lovelace", "Company": "Analytical"})
    runner = await serve(sandbox)
    url = base_url(runner)  # POST {url}/services/oauth2/token, then /services/data/v66.0/…
    sandbox.fail_next(1, 503, route="PATCH /services/data/v{version}/composite/sobjects")
    ...
    assert sandbox.record("Lead", lead_id)["Lance_Status__c"] == "found"
    await runner.cleanup()

Admin surface (no auth, not counted): ``GET /_sim/records/{sobject}/{id}``,
``POST /_sim/records/{sobject}`` with the fields (answers ``{"id"}``), ``GET /_sim/counts``,
``POST /_sim/faults`` with ``{"count", "status", "body"?, "route"?}``, ``POST /_sim/reset`` and
``POST /_sim/expire-sessions``.

The package: :mod:`~bridge.sim.salesforce.state` (the org), :mod:`~bridge.sim.salesforce.records`
and :mod:`~bridge.sim.salesforce.updates` (reading and writing records),
:mod:`~bridge.sim.salesforce.oauth`, :mod:`~bridge.sim.salesforce.server` (counting, faults,
admin surface), :mod:`~bridge.sim.salesforce.errors`, :mod:`~bridge.sim.salesforce.ids`,
:mod:`~bridge.sim.salesforce.schema` and :mod:`~bridge.sim.salesforce.outbound` (Salesforce
calling the bridge).
"""

from __future__ import annotations

from bridge.sim._http import base_url, bound_port
from bridge.sim.salesforce.errors import OAuthError, RestError
from bridge.sim.salesforce.ids import normalize_id, with_checksum
from bridge.sim.salesforce.oauth import JWT_GRANT, JWT_MAX_AHEAD_S, LOGIN_AUDIENCES, token_signature
from bridge.sim.salesforce.outbound import (
    ACK_RESPONSE,
    EXTERNAL_ENTITY,
    MAX_BACKOFF_S,
    MAX_NOTIFICATIONS,
    OUTBOUND_HEADERS,
    OUTBOUND_NS,
    SOAP_ENV_NS,
    SOBJECT_NS,
    XML_BOMB,
    is_ack,
    outbound_message,
    send_outbound_message,
)
from bridge.sim.salesforce.records import MAX_RETRIEVE_IDS
from bridge.sim.salesforce.schema import (
    DEFAULT_SCHEMAS,
    KEY_PREFIXES,
    LATEST_VERSION,
    release_label,
)
from bridge.sim.salesforce.server import (
    ADMIN_PREFIX,
    COLLECTION,
    DESCRIBE,
    LIMIT_HEADER,
    QUERY,
    RECORD,
    REST_PREFIX,
    RETRIEVE,
    SANDBOX,
    TOKEN_PATH,
    VERSIONS_PATH,
    create_app,
    serve,
)
from bridge.sim.salesforce.state import Recorded, SalesforceSandbox
from bridge.sim.salesforce.updates import MAX_CHUNKS, MAX_RECORDS

__all__ = [
    "ACK_RESPONSE",
    "ADMIN_PREFIX",
    "COLLECTION",
    "DEFAULT_SCHEMAS",
    "DESCRIBE",
    "EXTERNAL_ENTITY",
    "JWT_GRANT",
    "JWT_MAX_AHEAD_S",
    "KEY_PREFIXES",
    "LATEST_VERSION",
    "LIMIT_HEADER",
    "LOGIN_AUDIENCES",
    "MAX_BACKOFF_S",
    "MAX_CHUNKS",
    "MAX_NOTIFICATIONS",
    "MAX_RECORDS",
    "MAX_RETRIEVE_IDS",
    "OUTBOUND_HEADERS",
    "OUTBOUND_NS",
    "QUERY",
    "RECORD",
    "REST_PREFIX",
    "RETRIEVE",
    "SANDBOX",
    "SOAP_ENV_NS",
    "SOBJECT_NS",
    "TOKEN_PATH",
    "VERSIONS_PATH",
    "XML_BOMB",
    "OAuthError",
    "Recorded",
    "RestError",
    "SalesforceSandbox",
    "base_url",
    "bound_port",
    "create_app",
    "is_ack",
    "normalize_id",
    "outbound_message",
    "release_label",
    "send_outbound_message",
    "serve",
    "token_signature",
    "with_checksum",
]

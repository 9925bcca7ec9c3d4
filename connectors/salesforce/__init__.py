"""Salesforce, both directions: Outbound Messages trigger enrichments; results update records.

Inbound (``POST /hooks/salesforce``, or ``/hooks/salesforce/<name>`` to pick one of several orgs):

- Outbound Messages (SOAP, ``text/xml``), sent by a Flow or workflow rule: 1 to 100
  ``Notification`` elements, each a Lead, Contact or Account with its fields. Salesforce signs
  nothing, so a message is accepted only when its ``OrganizationId`` is ``organization_id``
  (15- and 18-character forms match) and, when ``action_ids`` is set, its ``ActionId`` is one of
  them. The XML is parsed with defusedxml and no DTD: entity expansion (XML bombs) and external
  entities are refused. The notification ``Id`` is the dedupe key (``notification:<Id>``), so a
  message Salesforce delivers again triggers nothing new. The reply is the SOAP
  ``notificationsResponse`` ``<Ack>true</Ack>``, sent only once the events are durable; refusals
  are SOAP faults. Lead and Contact trigger the configured fields (emails, phones) of the
  person in their Lance-id field; Account tracks the company summary (Lance starts those).
- Flow HTTP Callouts (JSON, ``application/json``), authenticated with ``Authorization: Bearer
  <flow_token>``: one record ``{"recordId", "objectType", "lanceId", "fields"?}`` or a list of up
  to 200. The dedupe key is the SHA-256 of the body (``flow:<hex>:<index>``): the very same body
  sent again triggers nothing. Answered with the JSON summary, refusals with the JSON error.

Outbound: ``PATCH /services/data/v{api_version}/composite/sobjects`` (sObject Collections, at
most 200 records per request, ``allOrNone: false``), all events of one record merged into one
record; per-record SaveResults become per-delivery outcomes (validation errors and the like
are ``dead`` with Salesforce's words, lock contention is retried). Each mapped field has a
write policy, as for HubSpot: ``fill_if_empty`` (default; the current values are read first
through sObject Collections retrieve), ``overwrite`` or ``never``; an empty Lance value never
clears a field. Auth: OAuth 2.0 client credentials or JWT bearer, the token cached with its
``instance_url`` and fetched again once on ``INVALID_SESSION_ID``. ``REQUEST_LIMIT_EXCEEDED``
(a 403) is throttling, never a reason to log in again; ``Sforce-Limit-Info`` is tracked and,
past ``slow_down_at`` of the daily cap, deliveries wait instead of spending the rest.
"""

from __future__ import annotations

from connectors.salesforce import inbound, outbound
from connectors.salesforce.auth import JWT_GRANT, TOKEN_PATH, parse_limit_info
from connectors.salesforce.config import (
    AccountSettings,
    ObjectSettings,
    ObjectType,
    PersonSettings,
    SalesforceConfig,
    id18,
    object_type_of,
    same_org_id,
)
from connectors.salesforce.inbound import soap_fault

__all__ = [
    "JWT_GRANT",
    "TOKEN_PATH",
    "AccountSettings",
    "ObjectSettings",
    "ObjectType",
    "PersonSettings",
    "SalesforceConfig",
    "SalesforceConnector",
    "id18",
    "object_type_of",
    "parse_limit_info",
    "same_org_id",
    "soap_fault",
]


class SalesforceConnector(inbound.Hooks, outbound.Writes):
    """Writes enrichment results to Salesforce records; takes Outbound Messages and Flow calls.

    Attributes:
        limits: The last ``Sforce-Limit-Info`` values, ``{segment: (used, limit)}``.
        requests: REST requests sent; ``token_requests``: token requests sent.
    """

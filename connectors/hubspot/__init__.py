"""HubSpot, both directions: signed webhooks trigger enrichments; results update the records.

Inbound (``POST /hooks/hubspot``, or ``/hooks/hubspot/<name>`` to pick one of several apps):

- App webhook batches, a JSON array of up to 100 events. ``contact.propertyChange`` and
  ``company.propertyChange`` of the Lance-id property trigger the configured fields with the
  record as the delivery target; ``contact.creation`` / ``company.creation`` carry no
  properties, so the record is read (batch read, 100 ids per request) by the ``resolve`` job.
- Workflow "Send a webhook" calls: one record per call, its properties in the body: "include
  all properties" (``{"objectId", "properties": {name: value}}``, or the legacy contact
  ``{"vid", "properties": {name: {"value"}}}``) or a customised body with the chosen
  properties as top-level keys (``{"hs_object_id", "lance_person_id"}``);
  ``?objectType=companies`` on the URL for company workflows.
- Signatures: v3 (HMAC-SHA256 over method + URI + body + timestamp, at most
  ``signature_max_age_seconds`` old or ahead), else v1/v2 when ``legacy_signatures`` allows;
  compared in constant time. A retried or duplicated event is recognised and triggers nothing.

Outbound: ``POST /crm/v3/objects/{type}/batch/update``, 100 records per request, events of one
record merged into one input. Each mapped property has a write policy: ``fill_if_empty``
(default; the current values are read first, 100 records per request), ``overwrite`` or
``never``; an empty Lance value never clears a property. One request budget per connector
(default 100 per rolling 10 s) covers reads, writes and lookups. Auth: a private-app token, or
OAuth (refresh token + client id/secret), refreshed before expiry and once on a 401.
"""

from __future__ import annotations

from connectors.hubspot import inbound, outbound
from connectors.hubspot.auth import signature_v1, signature_v2, signature_v3, v3_uri
from connectors.hubspot.config import (
    CompanySettings,
    ContactSettings,
    HubSpotConfig,
    ObjectSettings,
    ObjectType,
    object_type_of,
)

__all__ = [
    "CompanySettings",
    "ContactSettings",
    "HubSpotConfig",
    "HubSpotConnector",
    "ObjectSettings",
    "ObjectType",
    "object_type_of",
    "signature_v1",
    "signature_v2",
    "signature_v3",
    "v3_uri",
]


class HubSpotConnector(inbound.Hooks, outbound.Writes):
    """Writes enrichment results to HubSpot records; takes HubSpot's webhooks."""

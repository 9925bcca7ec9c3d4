"""Salesforce: Outbound Messages trigger enrichments; results update Lead, Contact or Account."""

from __future__ import annotations

from collections.abc import Sequence

from bridge import connector


class SalesforceConnector(connector.Connector):
    """Placeholder until the connector lands."""

    needs_record = True

    async def _send(self, chunk: Sequence[connector.Event]) -> list[connector.Outcome]:
        return [connector.Outcome("retry", None, "not implemented")] * len(chunk)

"""Who receives which completion event (:class:`Router`), and the pure helpers events use.

The ledger writes one delivery row per enrichment and target the router names, in the same
transaction as the state change that caused it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """What a configured connector receives.

    A connector that ``needs_record`` (a CRM) gets the events of enrichments whose targets name
    it; any other connector gets every event its ``events`` filter matches.
    """

    name: str
    needs_record: bool
    events: frozenset[str]


class Router:
    """The routes of all configured connectors."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self._by_name = {route.name: route for route in routes}

    def route(self, name: str) -> Route | None:
        """The route of the connector named ``name``, if it is configured."""
        return self._by_name.get(name)

    def targets(
        self, event_type: str, named: Sequence[tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        """The (connector, objectType, objectId) targets an event goes to.

        Targets naming a connector that is no longer configured still get a delivery row, so
        the dispatcher can mark it dead with a reason instead of dropping it silently.
        """
        chosen: list[tuple[str, str, str]] = []
        for route in self.routes:
            if event_type not in route.events:
                continue
            if route.needs_record:
                chosen += [t for t in named if t[0] == route.name]
            else:
                chosen.append((route.name, "", ""))
        chosen += [t for t in named if t[0] not in self._by_name]
        return chosen

    def expected(
        self, terminal: Mapping[str, int], targets: Mapping[tuple[str, str], int]
    ) -> collections.Counter[str]:
        """Delivery rows per connector that :meth:`targets` writes for terminal enrichments.

        The counting form of :meth:`targets`, for the metrics' invariant: same rules, applied
        to counts instead of rows.

        Args:
            terminal: Terminal rows whose events are due (values read, if any), by state.
            targets: Target rows of those enrichments, by (state, connector).
        """
        expected: collections.Counter[str] = collections.Counter()
        for route in self.routes:
            if not route.needs_record:
                expected[route.name] += sum(
                    n for state, n in terminal.items() if f"enrichment.{state}" in route.events
                )
        for (state, name), n in targets.items():
            named = self.route(name)
            # A target naming a connector no longer configured still gets a row (marked dead).
            if named is None or (named.needs_record and f"enrichment.{state}" in named.events):
                expected[name] += n
        return expected


def iso(ts: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds, like Lance's timestamps."""
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def values_of(field: str, entity: dict[str, Any]) -> dict[str, Any]:
    """The enriched values of ``field`` in a Lance person or company object."""
    value = entity.get(field)
    if field == "summary":
        return {"summary": value if isinstance(value, str) and value else None}
    return {field: [v for v in value if isinstance(v, str)] if isinstance(value, list) else []}

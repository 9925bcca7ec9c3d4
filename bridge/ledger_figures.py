"""The ledger's figures as the metrics and the dashboard show them, read when asked.

:func:`read_ledger` reads them all on the ledger's reader connection: enrichments by state,
deliveries by connector and state, the oldest in-flight age, charged enrichments (counted
incrementally by :class:`Charges`), inbound events, replicas and the DESIGN §6 invariant.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping

from bridge import ledger, model, outbox

# Charged records are counted in id ranges this long, so API reads on the same connection
# get their turn between two chunks of a long count.
CHARGE_CHUNK_IDS = 100_000
# Counting charged records parses each in-flight row's record (~2 s for 1M rows in flight), and
# a cost figure need not be fresher: they are recounted at most this often.
CHARGES_CACHE_S = 60.0
DELIVERY_STATES = tuple(model.DeliveryState)


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerFigures:
    """What the ledger says, as of ``read_at``.

    Attributes:
        read_at: The bridge clock when read.
        enrichments: Rows by state (their sum is every accepted enrichment).
        awaiting: Rows that finished with data and whose values are not read yet.
        deliveries: Delivery rows by (connector, state).
        oldest_in_flight_s: Age of the oldest queued or pending row; 0 when none is.
        charged: Rows whose Lance record carries a ``creditTransactionId``, by field.
        events: Delivery rows the terminal rows call for under the current routes, by connector.
        undelivered: Of those, how many have no delivery row (must be 0), by connector; a
            deficit the ledger already had when the process started is not counted.
        unknown_states: Enrichment and delivery rows in a state the bridge does not know.
        inbound: Events CRMs sent that the ledger still keeps, by (connector, state).
        replicas: The ``serve`` replicas registered in the ledger.
    """

    read_at: float
    enrichments: dict[str, int]
    awaiting: int
    deliveries: dict[tuple[str, str], int]
    oldest_in_flight_s: float
    charged: dict[str, int]
    events: dict[str, int]
    undelivered: dict[str, int]
    unknown_states: int
    inbound: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    replicas: tuple[ledger.Replica, ...] = ()

    @property
    def invariant_ok(self) -> bool:
        """DESIGN §6: accepted = queued + pending + terminal, and every event has its row."""
        return self.unknown_states == 0 and not any(self.undelivered.values())


class Charges:
    """Rows whose Lance record carries a ``creditTransactionId``, by field, kept incrementally.

    Counting them parses every record (~2 s for 1M rows). But every row below the oldest
    in-flight one is terminal, a terminal row's record never changes, and rows are never
    deleted: those are counted once and remembered, and each read re-counts only the rows from
    the oldest in-flight one up. (Should the ledger ever prune rows, this must recount.)
    """

    def __init__(self, chunk_ids: int = CHARGE_CHUNK_IDS) -> None:
        self.chunk_ids = chunk_ids  # ids counted per read (shorter: other reads wait less)
        self.settled_upto = 0
        self.settled: collections.Counter[str] = collections.Counter()
        self.last: tuple[float, collections.Counter[str]] | None = None

    async def count(
        self, store: ledger.Ledger, first_in_flight: int | None, last_id: int, now: float
    ) -> collections.Counter[str]:
        if self.last is not None and 0 <= now - self.last[0] < CHARGES_CACHE_S:
            return self.last[1]
        boundary = last_id if first_in_flight is None else first_in_flight - 1
        if boundary > self.settled_upto:
            self.settled += await _charged(store, self.settled_upto, boundary, self.chunk_ids)
            self.settled_upto = boundary
        counted = self.settled + await _charged(store, self.settled_upto, last_id, self.chunk_ids)
        self.last = (now, counted)
        return counted


async def _charged(
    store: ledger.Ledger, after: int, upto: int, chunk_ids: int
) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    for start in range(after, upto, chunk_ids):
        found.update(await store.charged(start, min(start + chunk_ids, upto)))
    return found


def _events(snap: ledger.Snapshot, router: outbox.Router) -> collections.Counter[str]:
    """Delivery rows per connector that the terminal rows call for."""
    due: dict[str, int] = {s: snap.states.get(s, 0) for s in model.TERMINAL}
    # Only `finished` rows wait for values; their events are written with the values.
    due[model.EnrichmentState.FINISHED] -= snap.awaiting
    return router.expected(due, snap.targets)


def delivery_deficits(snap: ledger.Snapshot, router: outbox.Router) -> dict[str, int]:
    """Per connector: events called for minus delivery rows (negative: extra rows)."""
    rows: collections.Counter[str] = collections.Counter()
    for (name, _), n in snap.deliveries.items():
        rows[name] += n
    events = _events(snap, router)
    return {name: events[name] - rows[name] for name in events.keys() | rows.keys()}


def _unknown_states(snap: ledger.Snapshot) -> int:
    """Rows in a state the bridge does not know (which no count of the invariant covers)."""
    known = frozenset(model.EnrichmentState)
    return sum(n for s, n in snap.states.items() if s not in known) + sum(
        n for (_, s), n in snap.deliveries.items() if s not in DELIVERY_STATES
    )


async def read_ledger(
    store: ledger.Ledger,
    now: float,
    charges: Charges,
    baseline: Mapping[str, int],
) -> LedgerFigures:
    """Read every ledger figure on the reader connection.

    Args:
        store: The ledger.
        now: The bridge clock.
        charges: The running count of charged rows.
        baseline: Per connector, the deficit of delivery rows found when the process started;
            only a deficit beyond it counts as undelivered (see
            :meth:`bridge.metrics.Metrics.open`).
    """
    snap = await store.snapshot()
    first = snap.first_in_flight
    charged = await charges.count(store, first[1] if first else None, snap.last_id, now)
    events = _events(snap, store.router)
    deficits = delivery_deficits(snap, store.router)
    inbound = await store.inbound_counts()
    return LedgerFigures(
        read_at=now,
        enrichments=snap.states,
        awaiting=snap.awaiting,
        deliveries=snap.deliveries,
        oldest_in_flight_s=max(0.0, now - first[0]) if first else 0.0,
        charged=dict(charged),
        events=dict(events),
        undelivered={
            name: max(0, deficits.get(name, 0) - baseline.get(name, 0)) for name in events
        },
        unknown_states=_unknown_states(snap),
        inbound=inbound,
        replicas=tuple(await store.replicas()),
    )

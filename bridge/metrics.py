"""Prometheus metrics for ``GET /metrics``.

Two kinds of figures:

- read from the ledger when scraped (enrichments by state, deliveries by connector and state, the
  oldest in-flight age, charged enrichments and the DESIGN §6 invariant), on the ledger's reader
  connection and cached for :data:`CACHE_S`, so a scrape storm costs one set of queries;
- counted live in the process (Lance requests by endpoint and status, delivery attempts by
  connector and outcome, retries, dead letters, job durations and skipped runs). The jobs keep
  plain counters; only this module knows Prometheus.

Each app has its own :class:`~prometheus_client.CollectorRegistry`, never the global default
one, so several apps in one process (tests, ``bench``) do not collide.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge import ledger, model, outbox

logger = logging.getLogger(__name__)
PREFIX = "lance_bridge_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Ledger figures are re-read at most this often: counting a 1M-row ledger takes ~0.6 s.
CACHE_S = 5.0
# Charged records are counted in id ranges this long, so API reads on the same connection
# get their turn between two chunks of a long count.
CHARGE_CHUNK_IDS = 100_000
# Counting charged records parses each in-flight row's record (~2 s for 1M rows in flight), and
# a cost figure need not be fresher: they are recounted at most this often.
CHARGES_CACHE_S = 60.0
JOB_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
DELIVERY_STATES = tuple(model.DeliveryState)


@dataclasses.dataclass(frozen=True, slots=True)
class Live:
    """The in-process counters, read when scraped.

    Attributes:
        lance: Lance requests by (endpoint, status); status ``none`` for no HTTP answer.
        attempts: Delivery attempts by (connector, outcome, status).
        skipped: Scheduler runs skipped because the previous one was still busy, by job.
        crm: Requests connectors made to their CRM, by (connector, endpoint, status).
        searches: Person searches the match job made, by outcome (matched, unmatched,
            ambiguous, error).
    """

    lance: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    attempts: Mapping[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)
    crm: Mapping[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)
    searches: Mapping[str, int] = dataclasses.field(default_factory=dict)


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


class _Charges:
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


def _deficits(snap: ledger.Snapshot, router: outbox.Router) -> dict[str, int]:
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
    charges: _Charges,
    baseline: Mapping[str, int],
) -> LedgerFigures:
    """Read every ledger figure on the reader connection.

    Args:
        store: The ledger.
        now: The bridge clock.
        charges: The running count of charged rows.
        baseline: Per connector, the deficit of delivery rows found when the process started;
            only a deficit beyond it counts as undelivered (see :meth:`Metrics.open`).
    """
    snap = await store.snapshot()
    first = snap.first_in_flight
    charged = await charges.count(store, first[1] if first else None, snap.last_id, now)
    events = _events(snap, store.router)
    deficits = _deficits(snap, store.router)
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


class Metrics:
    """The app's registry: live job durations, plus ledger figures and counters when scraped.

    Args:
        cache_s: How long ledger figures are reused before they are read again.
    """

    def __init__(self, *, cache_s: float = CACHE_S) -> None:
        self.registry = CollectorRegistry()
        self.cache_s = cache_s
        self.job_seconds = Histogram(
            PREFIX + "job_duration_seconds",
            "Duration of one scheduled run of a job (the poll job's run is one poll tick).",
            ["job"],
            buckets=JOB_BUCKETS_S,
            registry=self.registry,
        )
        self._view = _View()
        self.registry.register(self._view)
        self._charges = _Charges()
        self._figures: LedgerFigures | None = None
        self._baseline: dict[str, int] = {}
        self._reading = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Metrics cache_s={self.cache_s}>"

    async def open(self, store: ledger.Ledger) -> None:
        """Note the ledger's delivery-row deficit as the process starts, before any job runs.

        Routes only change with a restart, and every event written under them commits with its
        delivery rows, so the deficit must stay what it was at start. A deficit at start means
        a connector (or an event type) was added after enrichments ended that now route to it;
        it is logged once and not counted by ``events_undelivered``, which would otherwise
        stay non-zero forever.
        """
        deficits = _deficits(await store.snapshot(), store.router)
        self._baseline = {name: n for name, n in deficits.items() if n > 0}
        if self._baseline:
            logger.warning(
                "some ended enrichments have no delivery row for a connector now configured"
                " (was it added since?): %s",
                self._baseline,
                extra={"event": "metrics.undelivered_at_start", "undelivered": self._baseline},
            )

    def job_ran(self, job: str, seconds: float) -> None:
        """Record one run of ``job`` (the scheduler's observer)."""
        self.job_seconds.labels(job).observe(seconds)

    async def render(self, store: ledger.Ledger, live: Live, now: float) -> bytes:
        """The exposition text: ledger figures (read if older than :attr:`cache_s`) and ``live``.

        Args:
            store: The ledger, read on its reader connection.
            live: The in-process counters.
            now: The bridge clock.
        """
        async with self._reading:
            cached = self._figures
            if cached is None or not 0 <= now - cached.read_at < self.cache_s:
                self._figures = await read_ledger(store, now, self._charges, self._baseline)
        # No await from here on: concurrent scrapes cannot interleave between set and render.
        self._view.figures, self._view.live = self._figures, live
        self._view.connectors = tuple(route.name for route in store.router.routes)
        return generate_latest(self.registry)


class _View:
    """A collector rendering the last ledger figures and live counters."""

    def __init__(self) -> None:
        self.figures: LedgerFigures | None = None
        self.live = Live()
        self.connectors: tuple[str, ...] = ()

    def collect(self) -> Iterator[Metric]:
        if self.figures is not None:
            yield from _ledger_families(self.figures, self.connectors)
        yield from _live_families(self.live, self.connectors)


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


def _ledger_families(figures: LedgerFigures, connectors: tuple[str, ...]) -> Iterator[Metric]:
    states = _gauge("enrichments", "Enrichments in the ledger by state.", ("state",))
    known = dict.fromkeys(model.EnrichmentState, 0)
    for state, n in (known | figures.enrichments).items():
        states.add_metric([state], n)
    awaiting = _gauge(
        "enrichments_awaiting_values",
        "Enrichments finished with data whose values are not read yet (their events wait).",
    )
    awaiting.add_metric([], figures.awaiting)
    deliveries = _gauge(
        "deliveries", "Deliveries in the ledger by connector and state.", ("connector", "state")
    )
    zero = {(name, state): 0 for name in connectors for state in DELIVERY_STATES}
    for (name, state), n in sorted((zero | figures.deliveries).items()):
        deliveries.add_metric([name, state], n)
    oldest = _gauge(
        "oldest_in_flight_age_seconds",
        "Age of the oldest queued or pending enrichment since it was accepted; 0 when none is.",
    )
    oldest.add_metric([], figures.oldest_in_flight_s)
    charged = _gauge(
        "charged_enrichments",
        "Enrichments whose Lance record carries a creditTransactionId (one charge each;"
        " records carry no amount), by field.",
        ("field",),
    )
    for field, n in sorted(figures.charged.items()):
        charged.add_metric([field], n)
    inbound = _gauge(
        "inbound_events",
        "Events CRMs sent to /hooks/* and kept to recognise retries (pruned after"
        " inbound.retention_days), by connector and state (accepted, lookup, skipped).",
        ("connector", "state"),
    )
    for (name, state), n in sorted(figures.inbound.items()):
        inbound.add_metric([name, state], n)
    yield from (states, awaiting, deliveries, oldest, charged, inbound)
    yield from _replica_families(figures)
    yield from _invariant_families(figures)


def _replica_families(figures: LedgerFigures) -> Iterator[Metric]:
    count = _gauge(
        "replicas",
        "serve replicas registered in the ledger (SQLite: the one serve of the file);"
        " a registration stays after its replica stops, see replica_heartbeat_age_seconds.",
    )
    count.add_metric([], len(figures.replicas))
    age = _gauge(
        "replica_heartbeat_age_seconds",
        "Seconds since each replica's last heartbeat; far above 15 means it is gone and its"
        " claims come back when their lease ends.",
        ("replica",),
    )
    held = _gauge(
        "replica_claims",
        "Enrichments, deliveries and inbound events each replica holds a claim on now.",
        ("replica",),
    )
    for replica in figures.replicas:
        age.add_metric([replica.id], max(0.0, figures.read_at - replica.last_heartbeat))
        held.add_metric([replica.id], replica.held)
    yield from (count, age, held)


def _invariant_families(figures: LedgerFigures) -> Iterator[Metric]:
    events = _gauge(
        "events",
        "Completion events the terminal enrichments call for under the current connector"
        " config, by connector (= delivered + dead + pending deliveries).",
        ("connector",),
    )
    undelivered = _gauge(
        "events_undelivered",
        "Completion events with no delivery row, by connector; anything but 0 is a bug.",
        ("connector",),
    )
    for name in sorted(figures.events):
        events.add_metric([name], figures.events[name])
        undelivered.add_metric([name], figures.undelivered[name])
    ok = _gauge(
        "invariant_ok",
        "1 while accepted = queued + pending + terminal and every event has its delivery row.",
    )
    ok.add_metric([], int(figures.invariant_ok))
    yield from (events, undelivered, ok)


def _live_families(live: Live, connectors: tuple[str, ...]) -> Iterator[Metric]:
    lance = CounterMetricFamily(
        PREFIX + "lance_requests_total",
        "Requests to the Lance API by endpoint and HTTP status (none: no answer).",
        labels=("endpoint", "status"),
    )
    for (endpoint, status), n in sorted(live.lance.items()):
        lance.add_metric([endpoint, status], n)
    attempts = CounterMetricFamily(
        PREFIX + "delivery_attempts_total",
        "Delivery attempts by connector, outcome (delivered, retry, dead) and HTTP status.",
        labels=("connector", "outcome", "status"),
    )
    by_outcome: dict[str, collections.Counter[str]] = {
        "retry": collections.Counter(dict.fromkeys(connectors, 0)),
        "dead": collections.Counter(dict.fromkeys(connectors, 0)),
    }
    for (name, outcome, status), n in sorted(live.attempts.items()):
        attempts.add_metric([name, outcome, status], n)
        if outcome in by_outcome:
            by_outcome[outcome][name] += n
    retries = CounterMetricFamily(
        PREFIX + "delivery_retries_total",
        "Delivery attempts that failed and were scheduled again, by connector.",
        labels=("connector",),
    )
    dead = CounterMetricFamily(
        PREFIX + "dead_letters_total",
        "Deliveries that ended dead (permanent error or retries exhausted), by connector.",
        labels=("connector",),
    )
    for family, counts in ((retries, by_outcome["retry"]), (dead, by_outcome["dead"])):
        for name in sorted(counts):
            family.add_metric([name], counts[name])
    skipped = CounterMetricFamily(
        PREFIX + "job_skipped_total",
        "Scheduled runs skipped because the job's previous run was still busy.",
        labels=("job",),
    )
    for job, n in sorted(live.skipped.items()):
        skipped.add_metric([job], n)
    crm = CounterMetricFamily(
        PREFIX + "crm_requests_total",
        "Requests connectors made to their CRM, by connector, endpoint and HTTP status"
        " (none: no answer).",
        labels=("connector", "endpoint", "status"),
    )
    for (name, endpoint, status), n in sorted(live.crm.items()):
        crm.add_metric([name, endpoint, status], n)
    searches = CounterMetricFamily(
        PREFIX + "person_searches_total",
        "Lance person searches made to match CRM records without a Lance id, by outcome"
        " (matched, unmatched, ambiguous, error).",
        labels=("outcome",),
    )
    for outcome, n in sorted(live.searches.items()):
        searches.add_metric([outcome], n)
    yield from (lance, attempts, retries, dead, skipped, crm, searches)

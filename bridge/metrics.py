"""Prometheus metrics for ``GET /metrics``.

Two kinds of figures:

- read from the ledger when scraped (enrichments by state, deliveries by connector and state, the
  oldest in-flight age, charged enrichments and the DESIGN §6 invariant), on the ledger's reader
  connection and cached for :data:`CACHE_S`, so a scrape storm costs one set of queries;
- counted live in the process (Lance requests by endpoint and status, delivery attempts by
  connector and outcome, retries, dead letters, job durations and skipped runs). The jobs keep
  plain counters; only this module knows Prometheus.

The ledger figures themselves are read by :mod:`bridge.ledger_figures`, which the dashboard
shares; this module renders them. Each app has its own
:class:`~prometheus_client.CollectorRegistry`, never the global default one, so several apps
in one process (tests, ``bench``) do not collide.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge import ledger, model
from bridge.ledger_figures import (
    CHARGE_CHUNK_IDS,
    CHARGES_CACHE_S,
    DELIVERY_STATES,
    Charges,
    LedgerFigures,
    delivery_deficits,
    read_ledger,
)

__all__ = [
    "CACHE_S",
    "CHARGES_CACHE_S",
    "CHARGE_CHUNK_IDS",
    "CONTENT_TYPE",
    "PREFIX",
    "LedgerFigures",
    "Live",
    "Metrics",
    "read_ledger",
]

logger = logging.getLogger(__name__)
PREFIX = "lance_bridge_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Ledger figures are re-read at most this often: counting a 1M-row ledger takes ~0.6 s.
CACHE_S = 5.0
JOB_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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
        self._charges = Charges()
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
        deficits = delivery_deficits(await store.snapshot(), store.router)
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

"""The Lance simulator's state: enrichment records and the credit ledger.

Pure logic with no HTTP, so it can be driven directly and measured. Records are *lazy*: each one
is created with a predetermined outcome and a due time, and its status is computed whenever it is
read (``now >= due_at`` means terminal). Nothing runs in the background, which keeps a million
records cheap and lets tests move time with an injected clock.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator

from bridge.sim.lance.config import COMPANY, PERSON, SimConfig
from bridge.sim.lance.entities import fake_company, fake_person

FAILED_ERROR = "Enrichment failed: no provider could be reached"

# What a record shows once terminal, per outcome: status, error, dataFound, has a
# globalEnrichmentId. dataFound is null for failed/timeout/cancelled: no answer was obtained, so
# "no data found" (false) would be a claim the simulator cannot make.
_TERMINAL: dict[str, tuple[str, str | None, bool | None, bool]] = {
    "found": ("finished", None, True, True),
    "not_found": ("finished", None, False, True),
    "failed": ("failed", FAILED_ERROR, None, False),
    "timeout": ("timeout", None, None, False),
    "cancelled": ("cancelled", None, None, False),
}
_COMPACT = (",", ":")
# The status/error/dataFound members of the JSON object, per outcome (see EnrichmentStore.render).
_PENDING_JSON = '"status":"pending","error":null,"dataFound":null'
_TERMINAL_JSON = {
    outcome: json.dumps(
        {"status": status, "error": error, "dataFound": found}, separators=_COMPACT
    )[1:-1]
    for outcome, (status, error, found, _) in _TERMINAL.items()
}
# Outcomes whose record is reused by a later trigger once terminal (status "finished").
_REUSABLE_OUTCOMES = frozenset({"found", "not_found"})
_ISO_SECOND_CACHE_MAX = 4096


class Record:
    """One enrichment record; its status is derived from the clock when read."""

    __slots__ = (
        "created_at",
        "due_at",
        "entity_id",
        "entity_type",
        "field",
        "outcome",
        "seq",
        "tx_seq",
    )

    def __init__(
        self,
        seq: int,
        key: tuple[str, str, str],
        created_at: float,
        due_at: float,
        outcome: str,
    ) -> None:
        self.seq = seq
        self.entity_type, self.entity_id, self.field = key
        self.created_at = created_at
        self.due_at = due_at
        self.outcome = outcome
        self.tx_seq: int | None = None

    def status(self, now: float) -> str:
        """The record's status at ``now``."""
        return "pending" if now < self.due_at else _TERMINAL[self.outcome][0]

    def reusable(self, now: float) -> bool:
        """Whether a trigger at ``now`` returns this record instead of creating one."""
        return now < self.due_at or self.outcome in _REUSABLE_OUTCOMES

    def found(self, now: float) -> bool:
        """Whether the record has finished with ``dataFound`` true at ``now``."""
        return now >= self.due_at and self.outcome == "found"


class InsufficientCreditsError(Exception):
    """The balance does not cover the new enrichments of a trigger."""

    def __init__(self, required: int, balance: int) -> None:
        super().__init__(f"{required} credits required, {balance} available")
        self.required = required
        self.balance = balance


class _Ids:
    """Unique UUIDv4-shaped strings: a random prefix plus a 12-hex-digit counter.

    Records keep only the counter, which is far cheaper than a string per record.
    """

    __slots__ = ("prefix",)

    def __init__(self, rng: random.Random) -> None:
        self.prefix = str(uuid.UUID(int=rng.getrandbits(128), version=4))[:24]

    def format(self, n: int) -> str:
        return f"{self.prefix}{n:012x}"


_iso_seconds: dict[int, str] = {}


def iso(ts: float) -> str:
    """Format Unix seconds as ISO 8601 with milliseconds and ``Z`` (cached per second)."""
    sec = math.floor(ts)
    prefix = _iso_seconds.get(sec)
    if prefix is None:
        if len(_iso_seconds) >= _ISO_SECOND_CACHE_MAX:
            _iso_seconds.clear()
        prefix = _iso_seconds[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{prefix}.{int((ts - sec) * 1000):03d}Z"


class EnrichmentStore:
    """Latest enrichment record per (entityType, entityId, field), plus the credit ledger.

    Args:
        config: The simulator configuration (read live, so later changes apply).
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        rng = random.Random(config.seed)  # noqa: S311 - simulation, not security
        self._rng = random.Random(rng.getrandbits(64))  # noqa: S311
        self._record_ids, self._global_ids, self._tx_ids = _Ids(rng), _Ids(rng), _Ids(rng)
        # (entityType, field) -> entityId -> latest record: no key tuple per record.
        self._tables: dict[tuple[str, str], dict[str, Record]] = {}
        self._seq = 0
        self._tx_seq = 0
        self.balance = config.credits
        self.credits_charged = 0
        self.charges: Counter[tuple[str, str, str]] = Counter()
        # Found records not yet charged when charge_on == "success", by due time.
        self._unpaid: list[tuple[float, int, Record]] = []
        self._weights: dict[str, float] = {}
        self._owner: tuple[str, str] = ("", "")
        self._owner_text = ""
        self._names: list[str] = []
        self._cumulative: list[float] = []

    def latest(self, entity_type: str, entity_id: str, field: str) -> Record | None:
        """The latest record for a key, if any."""
        table = self._tables.get((entity_type, field))
        return None if table is None else table.get(entity_id)

    def records(self) -> Iterator[Record]:
        """Every latest record."""
        for table in self._tables.values():
            yield from table.values()

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def trigger(
        self, entity_ids: Iterable[str], field: str, now: float
    ) -> list[tuple[Record, bool]]:
        """Reuse or create a person record per distinct id, charging the new ones up front.

        Returns:
            ``(record, is_new)`` per distinct id, in input order.

        Raises:
            InsufficientCreditsError: The new records cost more than the balance; nothing changed.
        """
        table = self._tables.setdefault((PERSON, field), {})
        picked: dict[str, Record | None] = {}
        for entity_id in entity_ids:
            if entity_id not in picked:
                current = table.get(entity_id)
                reusable = current is not None and current.reusable(now)
                picked[entity_id] = current if reusable else None
        new_count = sum(1 for rec in picked.values() if rec is None)
        required = new_count * self.config.cost_per_field.get(field, 0)
        if required > self.balance:
            raise InsufficientCreditsError(required, self.balance)
        return [
            (rec, False)
            if rec is not None
            else (self.create(PERSON, eid, field, now, paid=True), True)
            for eid, rec in picked.items()
        ]

    def create(
        self,
        entity_type: str,
        entity_id: str,
        field: str,
        now: float,
        *,
        paid: bool,
        outcome: str | None = None,
        completion_s: float | None = None,
    ) -> Record:
        """Create a pending record at ``now``, replacing the key's latest one.

        Args:
            entity_type: ``person`` or ``company``.
            entity_id: The entity's id.
            field: ``phones``, ``emails`` or ``summary``.
            now: Creation time.
            paid: Charge per ``charge_on``; ``False`` for records started outside the API.
            outcome: The terminal outcome; drawn from ``config.outcomes`` if ``None``.
            completion_s: Time to terminal; drawn from ``config.completion_s`` if ``None``.
        """
        if outcome is None:
            outcome = self._draw_outcome()
        if completion_s is None:
            completion_s = self._rng.uniform(*self.config.completion_s)
        self._seq += 1
        key = (entity_type, entity_id, field)
        rec = Record(self._seq, key, now, now + completion_s, outcome)
        self._tables.setdefault((entity_type, field), {})[entity_id] = rec
        if paid and self.config.charge_on == "trigger":
            self._charge(rec)
        elif paid and outcome == "found":
            heapq.heappush(self._unpaid, (rec.due_at, rec.seq, rec))
        return rec

    def _draw_outcome(self) -> str:
        weights = self.config.outcomes
        if weights != self._weights:  # config is live: rebuild the table when it changes
            self._weights = dict(weights)
            self._names = list(weights)
            self._cumulative = list(itertools.accumulate(weights.values()))
        index = bisect.bisect(self._cumulative, self._rng.random() * self._cumulative[-1])
        return self._names[min(index, len(self._names) - 1)]

    def _charge(self, rec: Record) -> None:
        cost = self.config.cost_per_field.get(rec.field, 0)
        self._tx_seq += 1
        rec.tx_seq = self._tx_seq
        self.balance -= cost
        self.credits_charged += cost
        self.charges[(rec.entity_type, rec.entity_id, rec.field)] += 1

    def settle(self, now: float) -> None:
        """Charge found records that finished by ``now`` (``charge_on == "success"`` only).

        A finish the balance cannot cover stays unpaid: the balance never goes negative.
        """
        while self._unpaid and self._unpaid[0][0] <= now:
            rec = heapq.heappop(self._unpaid)[2]
            if self.latest(rec.entity_type, rec.entity_id, rec.field) is not rec:
                continue
            if self.config.cost_per_field.get(rec.field, 0) <= self.balance:
                self._charge(rec)

    def complete_all(self, now: float) -> int:
        """Make every pending record terminal at ``now``; returns how many there were."""
        count = 0
        for rec in self.records():
            if now < rec.due_at:
                rec.due_at = now
                count += 1
        # Every queued record is terminal now, whatever due time it was queued under.
        self.settle(math.inf)
        return count

    def count_by_status(self, now: float) -> Counter[str]:
        """Number of latest records per status at ``now``."""
        return Counter(rec.status(now) for rec in self.records())

    def render(self, rec: Record, now: float, *, fresh: bool = False) -> str:
        """The documented Enrichment object of ``rec`` at ``now``, as JSON text.

        Text rather than a dict because the batch-query serves thousands of these per second:
        a template is about twice as fast as building a dict and encoding it.

        Args:
            rec: The record.
            now: The time the status is computed for.
            fresh: Render as pending whatever the time (records created by this very request:
                the docs say processing starts after the response is returned).
        """
        created = iso(rec.created_at)
        if fresh or now < rec.due_at:
            updated, outcome, global_id = created, _PENDING_JSON, "null"
        else:
            updated, outcome = iso(rec.due_at), _TERMINAL_JSON[rec.outcome]
            has_global = _TERMINAL[rec.outcome][3]
            global_id = f'"{self._global_ids.prefix}{rec.seq:012x}"' if has_global else "null"
        tx = "null" if rec.tx_seq is None else f'"{self._tx_ids.prefix}{rec.tx_seq:012x}"'
        # Ids, enums and timestamps need no escaping; the configured names are pre-encoded.
        return (
            f'{{"id":"{self._record_ids.prefix}{rec.seq:012x}","createdAt":"{created}",'
            f'"updatedAt":"{updated}","entityId":"{rec.entity_id}",'
            f'"entityType":"{rec.entity_type}","field":"{rec.field}",{outcome},'
            f'{self._owner_json()},"globalEnrichmentId":{global_id},"creditTransactionId":{tx}}}'
        )

    def _owner_json(self) -> str:
        owner = (self.config.user_id, self.config.org_id)
        if owner != self._owner:  # config is live: re-encode when it changes
            self._owner = owner
            self._owner_text = f'"createdBy":{json.dumps(owner[0])},"orgId":{json.dumps(owner[1])}'
        return self._owner_text

    def query(self, tasks: Iterable[tuple[str, str, str]], now: float) -> list[str]:
        """Latest record per (entityType, entityId, field) task as JSON text, in input order.

        Tasks without a record are omitted; a record asked for twice is returned once.
        """
        tables = self._tables
        seen: set[int] = set()
        out: list[str] = []
        for entity_type, entity_id, field in tasks:
            table = tables.get((entity_type, field))
            rec = None if table is None else table.get(entity_id)
            if rec is not None and rec.seq not in seen:
                seen.add(rec.seq)
                out.append(self.render(rec, now))
        return out

    def found(self, entity_type: str, entity_id: str, field: str, now: float) -> bool:
        """Whether the key's latest record finished with ``dataFound`` true by ``now``."""
        rec = self.latest(entity_type, entity_id, field)
        return rec is not None and rec.found(now)

    def person(self, person_id: str, now: float) -> dict[str, object]:
        """The prospect person JSON, with values only for fields enriched with data found."""
        person = fake_person(
            person_id,
            emails=self.found(PERSON, person_id, "emails", now),
            phones=self.found(PERSON, person_id, "phones", now),
        )
        company_id = str(person["companyId"])
        person["company"] = self.company(company_id, now)
        return person

    def company(self, company_id: str, now: float) -> dict[str, object]:
        """The prospect company JSON; ``summary`` is null until a summary was found."""
        return fake_company(company_id, summary=self.found(COMPANY, company_id, "summary", now))

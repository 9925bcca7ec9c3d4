"""The ``match`` job: finds the Lance person of CRM records that arrived without a Lance id.

Inbound events of such records wait in the ledger (state ``matching``) with a normalised key
(:mod:`bridge.linkedin`). :meth:`Matcher.run_once` takes a batch of them, searches each
distinct key once (the match table remembers every clean answer, so a record re-sent,
retried or duplicated costs no second search), and settles them in one transaction: exactly
one person → ``matched``, its tasks accepted and its id queued to be written back to the
record; nobody → ``unmatched``; several → ``ambiguous``, candidates kept, nothing triggered.
A search that failed for a reason worth waiting out (429, 5xx, a malformed page, a rejected
token) leaves its events waiting with the reason, asked again after ``match.retry_seconds``.
The same run then writes the found ids back through each record's connector.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from bridge import classify, connector, errors, lance, ledger, linkedin, model
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)
BUDGET_WINDOW_S = 60.0
_MATCHED = model.InboundState.MATCHED.value
_UNMATCHED = model.InboundState.UNMATCHED.value
_AMBIGUOUS = model.InboundState.AMBIGUOUS.value
_RETRY = "retry"
# Searches by outcome for /metrics: the three settled outcomes, then the failures.
SEARCH_OUTCOMES = (_MATCHED, _UNMATCHED, _AMBIGUOUS, "error")


@dataclasses.dataclass(slots=True)
class MatchReport:
    """What one run did."""

    waiting: int = 0
    searches: int = 0
    cached: int = 0
    deferred: int = 0  # keys left for a later run by the search budget
    matched: int = 0
    unmatched: int = 0
    ambiguous: int = 0
    retried: int = 0
    accepted: int = 0
    written_back: int = 0
    write_back_failed: int = 0


class Matcher:
    """The ``match`` job. :meth:`run_once` searches waiting records and writes ids back.

    Attributes:
        searches: Person searches made, by outcome (:data:`SEARCH_OUTCOMES`), for /metrics.
    """

    def __init__(
        self,
        store: ledger.Ledger,
        client: lance.LanceClient,
        connectors: Mapping[str, connector.Connector],
        config: settings_mod.MatchSettings,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.client = client
        self.connectors = connectors
        self.config = config
        self.clock = clock
        self.searches: collections.Counter[str] = collections.Counter(
            dict.fromkeys(SEARCH_OUTCOMES, 0)
        )
        self._stamps: collections.deque[float] = collections.deque()  # searches in window

    async def run_once(self) -> MatchReport:
        """Search the keys of up to ``match.batch_size`` waiting events; write ids back."""
        report = MatchReport()
        waiting = await self.store.waiting_matches(self.clock(), self.config.batch_size)
        if waiting:
            await self._match(waiting, report)
        await self._write_back(report)
        return report

    async def _match(self, waiting: Sequence[ledger.Waiting], report: MatchReport) -> None:
        report.waiting = len(waiting)
        keys = list(dict.fromkeys(event.match.key for event in waiting))
        found = await self.store.known_matches(keys)
        report.cached = len(found)
        fresh = [key for key in keys if key not in found]
        asked = fresh[: self._budget()]
        report.deferred = len(fresh) - len(asked)
        found |= await self._search_all(asked)
        report.searches = len(asked)
        settled = [(event, found[event.match.key]) for event in waiting if event.match.key in found]
        result = await self.store.settle_matches(settled, self.clock())
        outcomes = collections.Counter(f.outcome for _, f in settled)
        report.matched, report.unmatched = outcomes[_MATCHED], outcomes[_UNMATCHED]
        report.ambiguous, report.retried = outcomes[_AMBIGUOUS], outcomes[_RETRY]
        report.accepted = sum(row.created for row in result.accepted)

    def _budget(self) -> int:
        """Searches this run may make within ``match.searches_per_minute``."""
        limit = self.config.searches_per_minute
        if limit == 0:
            return self.config.batch_size
        start = self.clock() - BUDGET_WINDOW_S
        while self._stamps and self._stamps[0] <= start:
            self._stamps.popleft()
        return max(0, limit - len(self._stamps))

    async def _search_all(self, keys: Sequence[str]) -> dict[str, ledger.Found]:
        slots = asyncio.Semaphore(self.config.concurrency)

        async def one(key: str) -> ledger.Found:
            async with slots:
                found = await self._search(key)
            # Stamped when the answer is back: Lance counted the request before it answered.
            self._stamps.append(self.clock())
            failed = found.outcome == _RETRY or not found.cached
            self.searches["error" if failed else found.outcome] += 1
            return found

        results = await asyncio.gather(*(one(key) for key in keys))
        return {found.key: found for found in results}

    async def _search(self, key: str) -> ledger.Found:
        try:
            page = await self._ask(key)
        except errors.LancePermanentError as exc:
            # A search Lance refuses as asked (400) will be refused again: say so on the record.
            reason = f"Lance refused the search: {exc}"
            return ledger.Found(key, _UNMATCHED, reason=reason, cached=False)
        except errors.LanceError as exc:
            wait_s = max(self.config.retry_seconds, exc.retry_after_s or 0.0)
            return self._retry(key, f"person search failed: {exc}", wait_s, exc)
        return outcome_of(key, page)

    def _retry(self, key: str, reason: str, wait_s: float, exc: errors.LanceError) -> ledger.Found:
        # Only the kind of failure is logged: Lance's message may echo the URL searched.
        logger.warning(
            "person search failed (%s, HTTP %s), asked again in %.0f s",
            type(exc).__name__,
            exc.status or "none",
            wait_s,
            extra={"event": "match.search_failed", "status": exc.status},
        )
        retry_at = self.clock() + wait_s
        return ledger.Found(key, _RETRY, reason=reason, cached=False, retry_at=retry_at)

    async def _ask(self, key: str) -> lance.PersonPage:
        size = self.config.candidates
        if key.startswith(linkedin.MATCH_PREFIX):
            url = key.removeprefix(linkedin.MATCH_PREFIX)
            return await self.client.search_people(linkedin_url=url, size=size)
        full_name, _, company = key.removeprefix(linkedin.NAME_PREFIX).partition("\t")
        return await self.client.search_people(
            full_name=full_name, name_mode="STRICT", company=company, size=size
        )

    async def _write_back(self, report: MatchReport) -> None:
        due = await self.store.due_write_backs(self.clock(), self.config.write_back_batch_size)
        by_source: dict[str, list[ledger.WriteBack]] = {}
        for item in due:
            by_source.setdefault(item.source, []).append(item)
        results: list[ledger.WriteBackResult] = []
        for source, items in by_source.items():
            results.extend(await self._write_through(source, items))
        await self.store.record_write_backs(results, self.clock())
        report.written_back = sum(r.state == "done" for r in results)
        report.write_back_failed = len(results) - report.written_back

    async def _write_through(
        self, source: str, items: Sequence[ledger.WriteBack]
    ) -> list[ledger.WriteBackResult]:
        item = self.connectors.get(source)
        if item is None:
            reason = f"no connector named {source!r} is configured"
            return [ledger.WriteBackResult(i, "dead", reason) for i in items]
        writes = [(i.object_type, i.object_id, i.entity_id) for i in items]
        try:
            outcomes = await item.write_ids(writes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcomes = [classify.transport_failure(exc)] * len(items)
        now = self.clock()
        results = []
        for write, outcome in zip(items, outcomes, strict=True):
            if outcome.kind == "delivered":
                results.append(ledger.WriteBackResult(write, "done"))
            elif outcome.kind == "dead" or write.attempts + 1 >= MAX_WRITE_BACK_ATTEMPTS:
                results.append(ledger.WriteBackResult(write, "dead", outcome.error))
            else:
                wait_s = max(outcome.retry_after_s or 0.0, self.config.retry_seconds)
                results.append(ledger.WriteBackResult(write, _RETRY, outcome.error, now + wait_s))
        return results


# A write-back that keeps failing for a transient reason is given up after this many tries
# (the enrichment itself goes on: the record only lacks its Lance id until the next match).
MAX_WRITE_BACK_ATTEMPTS = 8


def outcome_of(key: str, page: lance.PersonPage) -> ledger.Found:
    """What one page of a person search means for ``key`` (DESIGN §12).

    Only a clean answer naming exactly one person with a usable id is a match; a candidate
    without one makes the answer untrustworthy, and it is not kept in the match table.
    """
    ids = [_uuid(person.get("id")) for person in page.people]
    usable = tuple(i for i in ids if i is not None)
    unusable = page.skipped + len(ids) - len(usable)
    if unusable:
        reason = f"Lance answered {unusable} candidate(s) without a usable id"
        outcome = _AMBIGUOUS if usable else _UNMATCHED
        return ledger.Found(key, outcome, None, usable, reason, cached=False)
    total = max(page.total or 0, len(usable))
    if total == 0:
        return ledger.Found(key, _UNMATCHED, reason=f"no Lance person found for {_what(key)}")
    if total > 1:
        reason = f"{total} Lance people match {_what(key)}; trigger one by its entityId"
        return ledger.Found(key, _AMBIGUOUS, None, usable, reason)
    if not usable:  # Lance counted one person, yet the page holds nobody: nothing to trust
        reason = "Lance counted 1 person but sent none"
        return ledger.Found(key, _UNMATCHED, reason=reason, cached=False)
    [person] = page.people
    if key.startswith(linkedin.MATCH_PREFIX) and not _same_profile(key, person):
        reason = "the one person Lance found has another LinkedIn URL"
        return ledger.Found(key, _UNMATCHED, None, usable, reason)
    return ledger.Found(key, _MATCHED, usable[0], usable)


def _what(key: str) -> str:
    return "this LinkedIn URL" if key.startswith(linkedin.MATCH_PREFIX) else "this name and company"


def _uuid(value: object) -> str | None:
    """A candidate's id in the canonical form the ledger keys on, or ``None`` if not a UUID."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _same_profile(key: str, person: Mapping[str, object]) -> bool:
    """Whether the candidate's own LinkedIn URL (when Lance sent one) is the key's profile."""
    url = person.get("linkedinUrl")
    if not isinstance(url, str) or not url.strip():
        return True
    try:
        return linkedin.match_key(url) == key
    except linkedin.NotAProfileUrl:
        return False

"""The ledger reads both backends answer alike: the API row shapes and the verbs whose SQL is
the same in SQLite and PostgreSQL but for the parameter placeholder.

Each backend's ``Reads`` extends :class:`Reads` with its placeholder and the reads that differ
(JSON functions, arrays, snapshots).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

from bridge import ledger, model, outbox


class Fetches(Protocol):
    """What the shared reads need of a backend's database handle."""

    async def fetch(self, sql: str, params: Sequence[Any] = ..., /) -> Sequence[Sequence[Any]]:
        """The rows of one read."""


ENRICHMENT_COLUMNS = (
    "id, entity_type, entity_id, field, mode, state, lance_id, record, data_found, needs_fetch,"
    " enriched, error, polls, created_at, updated_at, finished_at"
)


DELIVERY_LIST_COLUMNS = (
    "id, enrichment_id, connector, object_type, object_id, event_type, message_id, state,"
    " attempts, next_attempt_at, last_error, response_status, created_at, updated_at"
)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else outbox.iso(ts)


def enrichment_json(row: Sequence[Any], targets: Iterable[model.Target] = ()) -> dict[str, Any]:
    """A row of :data:`ENRICHMENT_COLUMNS` in the API shape."""
    (
        row_id,
        etype,
        eid,
        field,
        mode,
        state,
        lance_id,
        record,
        found,
        needs_fetch,
        enriched,
        error,
        polls,
        created,
        updated,
        finished,
    ) = row
    return {
        "id": row_id,
        "entityType": etype,
        "entityId": eid,
        "field": field,
        "mode": mode,
        "state": state,
        "lanceId": lance_id,
        "dataFound": None if found is None else bool(found),
        "awaitingValues": bool(needs_fetch),
        "values": json.loads(enriched) if enriched else None,
        "error": error,
        "polls": polls,
        "record": json.loads(record) if record else None,
        "targets": [t.as_json() for t in targets],
        "createdAt": _iso(created),
        "updatedAt": _iso(updated),
        "finishedAt": _iso(finished),
    }


def delivery_json(row: Sequence[Any]) -> dict[str, Any]:
    """A row of :data:`DELIVERY_LIST_COLUMNS` in the API shape."""
    (
        row_id,
        enrichment_id,
        name,
        otype,
        oid,
        event_type,
        message_id,
        state,
        attempts,
        next_at,
        error,
        status,
        created,
        updated,
    ) = row
    return {
        "id": row_id,
        "enrichmentId": enrichment_id,
        "connector": name,
        "target": model.target_json(name, otype, oid),
        "eventType": event_type,
        "messageId": message_id,
        "state": state,
        "attempts": attempts,
        "nextAttemptAt": _iso(next_at),
        "lastError": error,
        "responseStatus": status,
        "createdAt": _iso(created),
        "updatedAt": _iso(updated),
    }


INBOUND_COLUMNS = (
    "source, key, state, object_type, object_id, detail, match_key, entity_id, candidates,"
    " attempts, received_at, updated_at"
)
# Keys per statement when reading the match table (well under either backend's limits).
MATCH_KEYS_PER_READ = 500


def inbound_json(row: Sequence[Any]) -> dict[str, Any]:
    """The API shape of an inbound event (``GET /v1/inbound``, ``inbound list``)."""
    (source, key, state, object_type, object_id, detail, match_key, entity_id) = row[:8]
    candidates, attempts, received, updated = row[8:12]
    return {
        "source": source,
        "key": key,
        "state": state,
        "objectType": object_type,
        "objectId": object_id,
        "reason": detail,
        "matchKey": match_key,
        "entityId": entity_id,
        "candidates": json.loads(candidates) if candidates else [],
        "attempts": int(attempts or 0),
        "receivedAt": _iso(received),
        "updatedAt": _iso(updated),
        "cursor": [received, source, key],
    }


def found_of(row: Sequence[Any]) -> ledger.Found:
    """A match-table row (key, outcome, entity_id, candidates, reason) as a
    :class:`ledger.Found`."""
    key, outcome, entity_id, candidates, reason = row
    return ledger.Found(
        str(key),
        str(outcome),
        None if entity_id is None else str(entity_id),
        tuple(json.loads(candidates or "[]")),
        None if reason is None else str(reason),
    )


class Reads:
    """The read verbs common to every SQL backend; ``PARAM`` is its parameter placeholder, and
    ``MINUTE`` the expression that turns Unix seconds (``{}``) into a whole minute number."""

    PARAM: ClassVar[str]
    MINUTE: ClassVar[str]
    db: Fetches

    def _filters(
        self, clauses: list[str], params: list[Any], pairs: Sequence[tuple[str, Any]]
    ) -> None:
        """Append each clause (``{p}`` for the placeholder) whose value is given."""
        for clause, value in pairs:
            if value is not None and value != "":
                clauses.append(clause.format(p=self.PARAM))
                params.append(value)

    async def list_enrichments(
        self,
        *,
        state: str | None,
        after: int,
        limit: int,
        entity_id: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        field: str | None = None,
        record_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """A page of enrichments in id order, starting after ``after``.

        ``created_after`` / ``created_before`` bound ``created_at`` (Unix seconds, inclusive);
        ``record_id`` keeps the rows with a target naming that CRM record id.
        """
        clauses: list[str] = [f"id > {self.PARAM}"]
        params: list[Any] = [after]
        hint, created = await self._created_plan(created_after, created_before)
        self._filters(
            clauses,
            params,
            (
                ("state = {p}", state),
                ("field = {p}", field),
                ("entity_id = {p}", entity_id),
                (created + " >= {p}", created_after),
                (created + " <= {p}", created_before),
                ("id IN (SELECT enrichment_id FROM targets WHERE object_id = {p})", record_id),
            ),
        )
        rows = await self.db.fetch(
            f"SELECT id FROM enrichments {hint} WHERE {' AND '.join(clauses)}"  # noqa: S608
            f" ORDER BY id LIMIT {self.PARAM}",
            (*params, limit),
        )
        found = await self.enrichments([int(row[0]) for row in rows])
        return [found[int(row[0])] for row in rows]

    async def enrichments(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Enrichments by id, with their targets (each backend reads them its own way)."""
        raise NotImplementedError

    async def _created_plan(self, after: float | None, before: float | None) -> tuple[str, str]:
        """How :meth:`list_enrichments` reads a creation-time filter: a table hint and the
        column expression. By default the backend's planner chooses (PostgreSQL has the
        statistics to)."""
        return "", "created_at"

    async def recent_inbound(
        self,
        *,
        state: str | None = None,
        source: str | None = None,
        before: tuple[float, str, str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """A page of inbound CRM events, newest first, starting after ``before``.

        ``before`` is the (received_at, source, key) of the last row of the previous page.
        """
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        self._filters(clauses, params, (("state = {p}", state), ("source = {p}", source)))
        if before is not None:
            p = self.PARAM
            clauses.append(f"(received_at, source, key) < ({p}, {p}, {p})")
            params.extend(before)
        rows = await self.db.fetch(
            f"SELECT {INBOUND_COLUMNS} FROM inbound"  # noqa: S608 - fixed clauses
            f" WHERE {' AND '.join(clauses)}"
            f" ORDER BY received_at DESC, source DESC, key DESC LIMIT {self.PARAM}",
            (*params, limit),
        )
        return [inbound_json(row) for row in rows]

    async def last_errors(self, connectors: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each connector's most recent delivery error: ``error``, ``status``, ``at``."""
        found: dict[str, dict[str, Any]] = {}
        for name in connectors:
            rows = await self.db.fetch(
                "SELECT last_error, response_status, updated_at FROM deliveries"  # noqa: S608
                f" WHERE connector = {self.PARAM} AND last_error IS NOT NULL"
                " ORDER BY updated_at DESC LIMIT 1",
                (name,),
            )
            if rows:
                error, status, at = rows[0]
                found[name] = {"error": error, "status": status, "at": float(at)}
        return found

    async def per_minute(self, since: float) -> dict[str, dict[int, int]]:
        """Enrichments that ended and deliveries acknowledged from ``since`` on, by minute
        (Unix seconds // 60): ``{"enrichments": {...}, "deliveries": {...}}``."""
        p = self.PARAM
        ended = await self.db.fetch(
            f"SELECT {self.MINUTE.format('finished_at')}, count(*) FROM enrichments"  # noqa: S608
            f" WHERE finished_at >= {p} GROUP BY 1",
            (since,),
        )
        acked = await self.db.fetch(
            f"SELECT {self.MINUTE.format('updated_at')}, count(*) FROM deliveries"  # noqa: S608
            f" WHERE state = 'delivered' AND updated_at >= {p} GROUP BY 1",
            (since,),
        )
        return {
            "enrichments": {int(m): int(n) for m, n in ended},
            "deliveries": {int(m): int(n) for m, n in acked},
        }

    async def list_deliveries(
        self,
        *,
        state: str | None = None,
        connector: str | None = None,
        enrichment_id: int | None = None,
        after: int = 0,
        limit: int = 100,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> list[dict[str, Any]]:
        """A page of deliveries in id order, starting after ``after``.

        ``updated_after`` / ``updated_before`` bound ``updated_at`` (Unix seconds, inclusive): the
        last attempt or change, so for a dead delivery the time it died.
        """
        clauses, params = self._delivery_clauses(
            state=state,
            connector=connector,
            enrichment_id=enrichment_id,
            after=after,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        rows = await self.db.fetch(
            f"SELECT {DELIVERY_LIST_COLUMNS} FROM deliveries"  # noqa: S608 - fixed clauses
            f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT {self.PARAM}",
            (*params, limit),
        )
        return [delivery_json(row) for row in rows]

    def _delivery_clauses(
        self,
        *,
        state: str | None,
        connector: str | None,
        enrichment_id: int | None,
        after: int,
        updated_after: float | None,
        updated_before: float | None,
    ) -> tuple[list[str], list[Any]]:
        clauses: list[str] = [f"id > {self.PARAM}"]
        params: list[Any] = [after]
        self._filters(
            clauses,
            params,
            (
                ("state = {p}", state),
                ("connector = {p}", connector),
                ("enrichment_id = {p}", enrichment_id),
                ("updated_at >= {p}", updated_after),
                ("updated_at <= {p}", updated_before),
            ),
        )
        return clauses, params

    async def delivery_ids(
        self,
        *,
        state: str,
        connector: str | None = None,
        after: int = 0,
        limit: int = 1000,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> list[int]:
        """The ids of a page of deliveries in ``state``, filtered as :meth:`list_deliveries`."""
        clauses, params = self._delivery_clauses(
            state=state,
            connector=connector,
            enrichment_id=None,
            after=after,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        rows = await self.db.fetch(
            f"SELECT id FROM deliveries WHERE {' AND '.join(clauses)}"  # noqa: S608
            f" ORDER BY id LIMIT {self.PARAM}",
            (*params, limit),
        )
        return [int(row[0]) for row in rows]

    async def count_matching_deliveries(
        self,
        *,
        state: str,
        connector: str | None = None,
        updated_after: float | None = None,
        updated_before: float | None = None,
    ) -> int:
        """How many deliveries in ``state`` the filters of :meth:`list_deliveries` select."""
        clauses, params = self._delivery_clauses(
            state=state,
            connector=connector,
            enrichment_id=None,
            after=0,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        rows = await self.db.fetch(
            f"SELECT count(*) FROM deliveries WHERE {' AND '.join(clauses)}",  # noqa: S608
            params,
        )
        return int(rows[0][0])

    async def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery, or ``None``."""
        rows = await self.db.fetch(
            f"SELECT {DELIVERY_LIST_COLUMNS} FROM deliveries WHERE id = {self.PARAM}",  # noqa: S608
            (delivery_id,),
        )
        return delivery_json(rows[0]) if rows else None

    async def counts(self) -> dict[str, Any]:
        """Counts by state, the oldest in-flight age and the last poll, for ``status``."""
        rows = await self.db.fetch("SELECT state, count(*) FROM enrichments GROUP BY 1")
        by_state = {str(state): int(n) for state, n in rows}
        deliveries: dict[str, dict[str, int]] = {}
        for name, state, n in await self.db.fetch(
            "SELECT connector, state, count(*) FROM deliveries GROUP BY 1, 2"
        ):
            deliveries.setdefault(str(name), {})[str(state)] = int(n)
        oldest = await self.db.fetch(
            "SELECT min(created_at) FROM enrichments WHERE state IN ('queued', 'pending')"
        )
        return {
            "enrichments": by_state,
            "deliveries": deliveries,
            "oldestInFlightCreatedAt": oldest[0][0] if oldest else None,
            "lastPollAt": await self.get_meta("last_poll_at"),
            # Nothing queued, nothing held: a hold left by a process that stopped means nothing.
            "triggersHeld": (await self.get_meta("trigger_held") or None)
            if by_state.get(model.EnrichmentState.QUEUED)
            else None,
        }

    async def get_meta(self, key: str) -> str | None:
        """A value from the ``meta`` table."""
        rows = await self.db.fetch(
            f"SELECT value FROM meta WHERE key = {self.PARAM}",  # noqa: S608 - placeholder
            (key,),
        )
        return str(rows[0][0]) if rows else None

    async def count_enrichments(self, state: model.EnrichmentState) -> int:
        """How many enrichments are in ``state`` (read from ``enrichments_by_state``)."""
        rows = await self.db.fetch(
            f"SELECT count(*) FROM enrichments WHERE state = {self.PARAM}",  # noqa: S608
            (state.value,),
        )
        return int(rows[0][0])

    async def count_deliveries(self, state: model.DeliveryState) -> int:
        """How many deliveries are in ``state`` (read from ``deliveries_by_state``)."""
        rows = await self.db.fetch(
            f"SELECT count(*) FROM deliveries WHERE state = {self.PARAM}",  # noqa: S608
            (state.value,),
        )
        return int(rows[0][0])

    async def inbound_counts(self) -> dict[tuple[str, str], int]:
        """Inbound events kept, by (source, state)."""
        rows = await self.db.fetch("SELECT source, state, count(*) FROM inbound GROUP BY 1, 2")
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    async def known_matches(self, keys: Sequence[str]) -> dict[str, ledger.Found]:
        """The match table's outcomes for those of ``keys`` searched before."""
        wanted = sorted(set(keys))
        found: dict[str, ledger.Found] = {}
        for start in range(0, len(wanted), MATCH_KEYS_PER_READ):
            chunk = wanted[start : start + MATCH_KEYS_PER_READ]
            marks = ", ".join([self.PARAM] * len(chunk))
            rows = await self.db.fetch(
                "SELECT key, outcome, entity_id, candidates, reason FROM matches"  # noqa: S608
                f" WHERE key IN ({marks})",
                chunk,
            )
            found.update({str(row[0]): found_of(row) for row in rows})
        return found

    async def list_inbound(
        self,
        *,
        state: str | None,
        source: str | None = None,
        after: tuple[float, str, str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """A page of inbound events in (receivedAt, source, key) order, after ``after``."""
        mark = self.PARAM
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if state is not None:
            clauses.append(f"state = {mark}")
            params.append(state)
        if source is not None:
            clauses.append(f"source = {mark}")
            params.append(source)
        if after is not None:
            clauses.append(f"(received_at, source, key) > ({mark}, {mark}, {mark})")
            params.extend(after)
        rows = await self.db.fetch(
            f"SELECT {INBOUND_COLUMNS} FROM inbound"  # noqa: S608 - fixed clauses
            f" WHERE {' AND '.join(clauses)} ORDER BY received_at, source, key LIMIT {mark}",
            (*params, limit),
        )
        return [inbound_json(row) for row in rows]

    async def progress(self) -> ledger.Progress:
        """Ended enrichments whose events are written, acknowledged and other deliveries."""
        terminal = await self.db.fetch(
            "SELECT count(*) FROM enrichments WHERE state NOT IN ('queued', 'pending')"
            " AND needs_fetch = 0"
        )
        deliveries = await self.db.fetch(
            "SELECT count(*) FILTER (WHERE state = 'delivered'),"
            " count(*) FILTER (WHERE state != 'delivered') FROM deliveries"
        )
        return ledger.Progress(int(terminal[0][0]), int(deliveries[0][0]), int(deliveries[0][1]))

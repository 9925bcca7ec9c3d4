"""A typed client of the Lance API: batch and single triggers, batch status, entity reads.

Each method makes one request and raises a :class:`~bridge.errors.LanceError` subclass on
failure; the jobs decide when to try again. This is the one seam where aiohttp errors from
Lance are translated. Reading what Lance answers (records, person pages, error bodies) is
:mod:`bridge.lance_wire`'s part; this module names its types too.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from bridge import errors, model
from bridge.lance_wire import (
    NAME_MODES,
    Enrichment,
    Key,
    NameMode,
    PersonPage,
    key_of,
)
from bridge.lance_wire import contact_filters as _contact_filters
from bridge.lance_wire import error_of as _error
from bridge.lance_wire import person_page as _person_page
from bridge.lance_wire import records as _records
from bridge.lance_wire import template as _template

__all__ = [
    "API",
    "MINUTES_KEPT",
    "NAME_MODES",
    "QUERY_BATCH_MAX",
    "SEARCH_SIZE_MAX",
    "TERMINAL_STATUSES",
    "TRIGGER_BATCH_MAX",
    "Enrichment",
    "Key",
    "LanceClient",
    "NameMode",
    "PersonPage",
    "key_of",
]

API = "/api/v1"
TRIGGER_BATCH_MAX = 100
QUERY_BATCH_MAX = 200
# Lance's own terminal statuses: the ledger records each as the state of the same name.
TERMINAL_STATUSES = frozenset(
    {
        model.EnrichmentState.FINISHED,
        model.EnrichmentState.FAILED,
        model.EnrichmentState.TIMEOUT,
        model.EnrichmentState.CANCELLED,
    }
)
SEARCH_SIZE_MAX = 100
MINUTES_KEPT = 61  # the dashboard charts the last hour of requests per minute


class LanceClient:
    """The Lance API over a borrowed :class:`aiohttp.ClientSession`.

    Attributes:
        requests: Requests made, by endpoint (``"POST enrichment/batch/query"`` ...).
        statuses: Requests made, by (endpoint, HTTP status); status ``"none"`` when no answer
            came (connection failure, timeout).
        per_minute: Requests made in each of the last :data:`MINUTES_KEPT` minutes, by minute
            number (Unix seconds // 60 on ``clock``), for the dashboard's chart.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: SecretStr,
        *,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._clock = clock
        self._base = base_url.rstrip("/") + API
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.requests: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[tuple[str, str]] = collections.Counter()
        self.per_minute: collections.Counter[int] = collections.Counter()

    def __repr__(self) -> str:
        return f"<LanceClient {self._base}>"

    def _count_minute(self) -> None:
        minute = int(self._clock() // 60)
        if minute not in self.per_minute and len(self.per_minute) >= MINUTES_KEPT:
            for old in [m for m in self.per_minute if m <= minute - MINUTES_KEPT]:
                del self.per_minute[old]
        self.per_minute[minute] += 1

    async def trigger_batch(self, field: str, person_ids: Sequence[str]) -> list[Enrichment]:
        """Trigger ``field`` for up to 100 persons; returns the new or reused records."""
        if not 1 <= len(person_ids) <= TRIGGER_BATCH_MAX:
            raise ValueError(f"a batch trigger takes 1-{TRIGGER_BATCH_MAX} ids")
        body = {"personIds": list(person_ids), "field": field}
        return _records(await self._call("POST", "/operations/enrichment/batch", json_body=body))

    async def trigger_one(self, person_id: str, field: str) -> Enrichment:
        """Trigger ``field`` for one person."""
        data = await self._call(
            "POST", f"/operations/enrichment/{person_id}", params={"field": field}
        )
        records = _records([data])
        return records[0]

    async def query(self, keys: Iterable[Key]) -> dict[Key, Enrichment]:
        """Status of up to 200 enrichments, keyed by (entityType, entityId, field).

        Lance omits tasks it has no record for, so a key missing from the result means "no
        record". Results are matched by key, never by position.
        """
        tasks = [
            {"entityId": eid, "field": field, "entityType": etype} for etype, eid, field in keys
        ]
        if not 1 <= len(tasks) <= QUERY_BATCH_MAX:
            raise ValueError(f"a batch query takes 1-{QUERY_BATCH_MAX} tasks")
        data = await self._call(
            "POST", "/operations/enrichment/batch/query", json_body={"tasks": tasks}
        )
        return {key_of(record): record for record in _records(data)}

    async def entity(self, entity_type: str, entity_id: str) -> dict[str, Any] | None:
        """The person or company object, or ``None`` when Lance has no such entity."""
        path = f"/entities/prospects/{entity_type}/{entity_id}"
        try:
            data = await self._call("GET", path)
        except errors.LancePermanentError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, dict):
            raise errors.LanceRetryableError(
                f"GET {path}: expected an object, got {type(data).__name__}"
            )
        return data

    async def search_people(
        self,
        *,
        linkedin_url: str | None = None,
        full_name: str | None = None,
        name_mode: NameMode = "STRICT",
        company: str | None = None,
        page: int = 0,
        size: int = 10,
    ) -> PersonPage:
        """Search Lance's people by LinkedIn URL, full name and current company (all ANDed).

        Raises:
            ValueError: No filter, a blank one, an unknown ``name_mode`` or ``page``/``size``
                outside 0-100 (page: at least 0); no request is made.
        """
        contact = _contact_filters(linkedin_url, full_name, name_mode, company)
        if isinstance(page, bool) or not isinstance(page, int) or page < 0:
            raise ValueError("page must be an integer of at least 0")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= SEARCH_SIZE_MAX:
            raise ValueError(f"size must be an integer between 0 and {SEARCH_SIZE_MAX}")
        body = {"page": page, "size": size, "contact": contact}
        return _person_page(await self._call("POST", "/entities/prospects/person", json_body=body))

    async def balance(self) -> int:
        """The organization's credit balance (also a cheap check that the token works)."""
        try:
            data = await self._call("GET", "/operations/credits/balance")
        except errors.LancePermanentError as exc:
            # Documented: this endpoint answers 400 when the caller is not authenticated.
            if exc.status == 400:
                raise errors.LanceAuthError(
                    f"Lance token rejected ({exc.message}): set lance.token"
                    " (LANCE_BRIDGE_LANCE__TOKEN)",
                    status=400,
                    code=exc.code,
                ) from exc
            raise
        if not isinstance(data, dict) or not isinstance(data.get("balance"), int):
            raise errors.LanceRetryableError("credits/balance: unexpected answer")
        return int(data["balance"])

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        endpoint = f"{method} {_template(path)}"
        self.requests[endpoint] += 1
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        status = "none"
        try:
            if json_body is not None:
                headers["Content-Type"] = "application/json"
            async with self._session.request(
                method,
                self._base + path,
                data=None if json_body is None else orjson.dumps(json_body),
                params=params,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                status = str(response.status)
                raw = await response.read()
                if response.status >= 400:
                    raise _error(endpoint, response.status, raw, response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise errors.LanceRetryableError(f"{endpoint}: {reason}") from exc
        finally:
            self.statuses[endpoint, status] += 1
            self._count_minute()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise errors.LanceRetryableError(f"{endpoint}: answer is not JSON") from None

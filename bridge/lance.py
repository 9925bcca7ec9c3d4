"""A typed client of the Lance API: batch and single triggers, batch status, entity reads.

Each method makes one request and raises a :class:`~bridge.errors.LanceError` subclass on
failure; the jobs decide when to try again. This is the one seam where aiohttp errors from
Lance are translated.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Required

import aiohttp
import orjson
import pydantic
from pydantic import SecretStr
from typing_extensions import TypedDict

from bridge import classify, errors, model

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
Key = tuple[str, str, str]  # (entityType, entityId, field)
SEARCH_SIZE_MAX = 100
MINUTES_KEPT = 61  # the dashboard charts the last hour of requests per minute
NameMode = Literal["SMART", "WORD", "STRICT"]
NAME_MODES: frozenset[str] = frozenset({"SMART", "WORD", "STRICT"})


class Enrichment(TypedDict, total=False):
    """Lance's Enrichment object; unknown keys are kept as they came."""

    __pydantic_config__ = pydantic.ConfigDict(extra="allow")  # type: ignore[misc]

    id: str
    entityId: Required[str]
    entityType: str
    field: Required[str]
    # Kept a plain string: an unknown status is treated as still pending, not as an error.
    status: Required[str]
    error: str | None
    dataFound: bool | None
    createdAt: str
    updatedAt: str


# The type each known key of a record must have; ``None`` is allowed where Lance sends null.
_REQUIRED = ("entityId", "field", "status")
_KINDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "entityId": (str,),
    "entityType": (str,),
    "field": (str,),
    "status": (str,),
    "error": (str, type(None)),
    "dataFound": (bool, type(None)),
    "createdAt": (str,),
    "updatedAt": (str,),
}


def key_of(record: Mapping[str, Any]) -> Key:
    """The (entityType, entityId, field) a record answers for; entityType defaults to person."""
    return (record.get("entityType") or "person", record["entityId"], record["field"])


@dataclasses.dataclass(frozen=True, slots=True)
class PersonPage:
    """One page of a person search.

    Attributes:
        people: The candidates as Lance sent them, each with a non-empty string ``id``.
        total: ``totalElements`` when Lance sent it as an integer, else ``None``.
        skipped: Candidates left out because they had no usable ``id``.
    """

    people: list[dict[str, Any]]
    total: int | None
    skipped: int


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


def _records(data: Any) -> list[Enrichment]:
    """The records of an answer, each checked against :class:`Enrichment`.

    Checked by hand rather than by a pydantic adapter: this runs for every record of every
    poll, and the checks needed (a few keys and their types; unknown keys kept) cost a
    fraction of a general validation.
    """
    # The batch trigger's docs show a bare array but name an `enrichments` field: take both.
    if isinstance(data, dict):
        data = data.get("enrichments")
    if not isinstance(data, list):
        raise errors.LanceRetryableError(
            f"unexpected enrichment records: expected a list, got {type(data).__name__}"
        )
    if all(map(_record_ok, data)):
        return data
    for index, record in enumerate(data):
        problem = _record_problem(record)
        if problem:
            raise errors.LanceRetryableError(f"unexpected enrichment records: [{index}] {problem}")
    return data


def _contact_filters(
    linkedin_url: str | None, full_name: str | None, name_mode: str, company: str | None
) -> dict[str, Any]:
    """The documented ``contact.*`` filter objects for the keys given."""
    if name_mode not in NAME_MODES:
        raise ValueError(f"name_mode must be one of: {', '.join(sorted(NAME_MODES))}")
    contact: dict[str, Any] = {}
    for name, value in (
        ("linkedin_url", linkedin_url),
        ("full_name", full_name),
        ("company", company),
    ):
        if value is not None and not value.strip():
            raise ValueError(f"{name} is blank")
    if linkedin_url is not None:
        contact["socialMediaLink"] = {"any": {"include": [linkedin_url.strip()]}}
    if full_name is not None:
        include = {"mode": name_mode, "content": [full_name.strip()]}
        contact["fullName"] = {"any": {"include": include}}
    if company is not None:
        contact["company"] = {"current": {"any": {"include": [company.strip()]}}}
    if not contact:
        raise ValueError("a person search needs linkedin_url, full_name or company")
    return contact


def _person_page(data: Any) -> PersonPage:
    """A Spring page of people; unknown keys ignored, a candidate without an id skipped."""
    if isinstance(data, dict):
        content, total = data.get("content"), data.get("totalElements")
    else:  # a bare array of people: tolerated, as on the batch trigger
        content, total = data, None
    if not isinstance(content, list):
        raise errors.LanceRetryableError(
            f"unexpected person search answer: expected a page, got {type(data).__name__}"
        )
    people = [
        p for p in content if isinstance(p, dict) and isinstance(p.get("id"), str) and p["id"]
    ]
    known_total = total if isinstance(total, int) and not isinstance(total, bool) else None
    return PersonPage(people, known_total, len(content) - len(people))


def _record_ok(record: Any) -> bool:
    """The common case in one pass: the known keys present where required, of their types."""
    if type(record) is not dict:
        return False
    get = record.get
    error, found = get("error"), get("dataFound")
    return (
        type(get("entityId")) is str
        and type(get("field")) is str
        and type(get("status")) is str
        and type(get("entityType", "")) is str
        and type(get("id", "")) is str
        and type(get("createdAt", "")) is str
        and type(get("updatedAt", "")) is str
        and (error is None or type(error) is str)
        and (found is None or found is True or found is False)
    )


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    for name in _REQUIRED:
        if name not in record:
            return f"{name}: missing"
    for name, kinds in _KINDS.items():
        if name in record and not isinstance(record[name], kinds):
            return f"{name}: unexpected {type(record[name]).__name__}"
    return None


def _error(endpoint: str, status: int, raw: bytes, headers: Mapping[str, str]) -> errors.LanceError:
    code, message = _error_fields(raw)
    text = (
        f"{endpoint}: HTTP {status}"
        + (f" {code}" if code else "")
        + (f": {message}" if message else "")
    )
    retry_after = classify.parse_retry_after(headers.get("Retry-After"))
    kwargs: dict[str, Any] = {"status": status, "code": code, "retry_after_s": retry_after}
    if status == 401:
        return errors.LanceAuthError(
            f"Lance token rejected ({text}): set lance.token (LANCE_BRIDGE_LANCE__TOKEN)", **kwargs
        )
    if status == 402:
        return errors.LanceCreditsError(f"Lance credits exhausted ({text})", **kwargs)
    if classify.retryable(status):
        return errors.LanceRetryableError(text, **kwargs)
    return errors.LancePermanentError(text, **kwargs)


def _error_fields(raw: bytes) -> tuple[str | None, str | None]:
    # Lance's error envelope is undocumented: accept {"error": "CODE", "message": ...},
    # {"error": {"code", "message"}}, {"code", "message"} or plain text.
    try:
        data = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()[:200]
        return None, text or None
    if not isinstance(data, dict):
        return None, None
    inner = data.get("error")
    if isinstance(inner, dict):
        data = inner
        inner = inner.get("code")
    code = inner if isinstance(inner, str) else data.get("code")
    message = data.get("message")
    return (str(code) if code else None), (str(message) if message else None)


def _template(path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[:2] == ["entities", "prospects"] and len(parts) == 4:
        parts[3] = "{id}"
    elif parts[:2] == ["operations", "enrichment"] and len(parts) == 3 and parts[2] != "batch":
        parts[2] = "{personId}"
    return "/".join(parts[1:] if parts[0] == "operations" else parts)

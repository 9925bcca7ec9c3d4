"""What crosses the wire from Lance, read: records, person pages, search filters, errors.

Lance's docs disagree with themselves (reference/lance-api.md): the batch trigger shows a bare
array but names an ``enrichments`` field, and no page shows the error body. These functions are
where that tolerance lives; :class:`bridge.lance.LanceClient` makes the requests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal, Required

import pydantic
from typing_extensions import TypedDict

from bridge import classify, errors

Key = tuple[str, str, str]  # (entityType, entityId, field)
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


def records(data: Any) -> list[Enrichment]:
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


def contact_filters(
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


def person_page(data: Any) -> PersonPage:
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


def error_of(
    endpoint: str, status: int, raw: bytes, headers: Mapping[str, str]
) -> errors.LanceError:
    """The :class:`~bridge.errors.LanceError` an error answer makes, by its status."""
    code, message = error_fields(raw)
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


def error_fields(raw: bytes) -> tuple[str | None, str | None]:
    """The code and message of an error answer, in any envelope Lance is seen to use."""
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


def template(path: str) -> str:
    """The endpoint of a request path, its ids as templates (``entities/prospects/person/{id}``)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["entities", "prospects"] and len(parts) == 4:
        parts[3] = "{id}"
    elif parts[:2] == ["operations", "enrichment"] and len(parts) == 3 and parts[2] != "batch":
        parts[2] = "{personId}"
    return "/".join(parts[1:] if parts[0] == "operations" else parts)

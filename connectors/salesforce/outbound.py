"""Salesforce outbound: results become sObject Collections updates, with write policies."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bridge import classify, errors, model
from bridge.classify import Outcome
from connectors import mapping
from connectors.salesforce import auth
from connectors.salesforce.config import (
    BY_LOWER,
    MAX_RECORDS,
    MAX_RETRIEVE_IDS,
    OBJECT_TYPES,
    ObjectSettings,
    id18,
    object_type_of,
)

# Per-record statusCodes that retrying the same write cannot fix.
PERMANENT_CODES = frozenset(
    {
        "CANNOT_UPDATE_CONVERTED_LEAD",
        "DUPLICATES_DETECTED",
        "DUPLICATE_VALUE",
        "ENTITY_IS_DELETED",
        "ENTITY_IS_LOCKED",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "FIELD_FILTER_VALIDATION_EXCEPTION",
        "FIELD_INTEGRITY_EXCEPTION",
        "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_EMAIL_ADDRESS",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_ID_FIELD",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "INVALID_TYPE",
        "MALFORMED_ID",
        "MISSING_ARGUMENT",
        "NOT_FOUND",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "REQUIRED_FIELD_MISSING",
        "STRING_TOO_LONG",
    }
)
_NO_SUCH_COLUMN = re.compile(r"No such column '(\w+)'")
RecordKey = tuple[str, str]  # (sObject type, record id)
_Wanted = dict[str, tuple[str, mapping.PropertyMap]]  # field -> (value, its mapping)


class Writes(auth.Api):
    """Writes enrichment results to Salesforce records."""

    max_batch = MAX_RECORDS

    def target_problem(self, object_type: str, object_id: str) -> str | None:
        """Salesforce records are Leads, Contacts or Accounts with 15- or 18-character ids."""
        unusable = _unusable((object_type, object_id))
        return unusable.error if unusable else None

    def batches(self, events: Sequence[model.Delivery]) -> list[list[int]]:
        """At most 200 records per request, all events of a record together, types in runs."""
        records: dict[RecordKey, list[int]] = {}
        for index, event in enumerate(events):
            records.setdefault(_record_key(event.target), []).append(index)
        order: dict[str, int] = {name: rank for rank, name in enumerate(OBJECT_TYPES)}
        groups = [
            indexes
            for _, indexes in sorted(
                records.items(), key=lambda item: order.get(item[0][0], len(order))
            )
        ]
        return [
            [i for group in groups[start : start + MAX_RECORDS] for i in group]
            for start in range(0, len(groups), MAX_RECORDS)
        ]

    async def _send(self, chunk: Sequence[model.Delivery]) -> list[Outcome]:
        keys = [_record_key(event.target) for event in chunk]
        outcomes: dict[RecordKey, Outcome] = {}
        wanted: dict[RecordKey, _Wanted] = {}
        for event, key in zip(chunk, keys, strict=True):
            refusal = _unusable(key)
            if refusal is not None:
                outcomes[key] = refusal
                continue
            settings = self.settings.objects()[BY_LOWER[key[0].lower()]]
            fields = wanted.setdefault(key, {})
            payload = event.payload()
            for name, rule in settings.writable().items():
                value = rule.value(payload)
                if value is not None:
                    fields[name] = (value, rule)
        if wanted:
            outcomes |= await self._write(wanted)
        return [outcomes[key] for key in keys]

    async def write_ids(self, writes: Sequence[tuple[str, str, str]]) -> list[Outcome]:
        """Write found Lance ids to each record's ``lance_id_field``: 200 per collection."""
        keys: list[RecordKey] = []
        records: list[dict[str, Any]] = []
        outcomes: dict[RecordKey, Outcome] = {}
        for named, record_id, lance_id in writes:
            object_type = object_type_of(named)
            if object_type is None:
                outcomes[(named, record_id)] = Outcome("dead", None, f"{named}: not a record")
                continue
            field = self.settings.objects()[object_type].lance_id_field
            keys.append((object_type, record_id))
            records.append({"attributes": {"type": object_type}, "id": record_id, field: lance_id})
        for start in range(0, len(records), MAX_RECORDS):
            part = slice(start, start + MAX_RECORDS)
            try:
                outcomes |= await self._update(keys[part], records[part])
            except auth.AuthError as exc:
                failure = Outcome("retry", None, exc.message, classify.THROTTLE_MIN_DELAY_S)
                outcomes |= dict.fromkeys(keys[part], failure)
        missing = Outcome("retry", None, "no outcome for this record")
        return [outcomes.get((object_type_of(t) or t, i), missing) for t, i, _ in writes]

    async def _write(self, wanted: Mapping[RecordKey, _Wanted]) -> dict[RecordKey, Outcome]:
        """Apply the write policies and update the records; one outcome per record."""
        if not any(wanted.values()):
            return dict.fromkeys(wanted, Outcome.delivered())
        waiting = self._slow_down()
        if waiting is not None:
            return dict.fromkeys(wanted, waiting)
        try:
            current, outcomes = await self._current(wanted)
            keys: list[RecordKey] = []
            records: list[dict[str, Any]] = []
            for key, fields in wanted.items():
                if key in outcomes:
                    continue
                have = current.get(key, {})
                write = {
                    name: value
                    for name, (value, rule) in fields.items()
                    if rule.policy == "overwrite" or not mapping.filled(have.get(name.lower()))
                }
                if write:
                    keys.append(key)
                    records.append({"attributes": {"type": key[0]}, "id": key[1], **write})
                else:
                    outcomes[key] = Outcome.delivered()
            if records:
                outcomes |= await self._update(keys, records)
        except auth.AuthError as exc:
            failure = Outcome("retry", None, exc.message, classify.THROTTLE_MIN_DELAY_S)
            return dict.fromkeys(wanted, failure)
        return outcomes

    async def _current(
        self, wanted: Mapping[RecordKey, _Wanted]
    ) -> tuple[dict[RecordKey, dict[str, Any]], dict[RecordKey, Outcome]]:
        """Current values of the fields ``fill_if_empty`` may write (field names lower-cased).

        Returns:
            The values found, and the outcome of records whose read failed. A record the
            read did not find is left out: the update then reports why (``ENTITY_IS_DELETED``).
        """
        by_type: dict[str, tuple[list[str], set[str]]] = {}
        for (object_type, record_id), fields in wanted.items():
            names = {name for name, (_, m) in fields.items() if m.policy == "fill_if_empty"}
            if names:
                ids, all_names = by_type.setdefault(object_type, ([], set()))
                ids.append(record_id)
                all_names.update(names)
        current: dict[RecordKey, dict[str, Any]] = {}
        failed: dict[RecordKey, Outcome] = {}
        for object_type, (ids, names) in by_type.items():
            for start in range(0, len(ids), MAX_RETRIEVE_IDS):
                part = ids[start : start + MAX_RETRIEVE_IDS]
                answer = await self.call(
                    "POST",
                    f"/composite/sobjects/{object_type}",
                    {"ids": part, "fields": sorted(names)},
                )
                rows = answer.body
                if answer.status != 200 or not isinstance(rows, list) or len(rows) != len(part):
                    failed.update(
                        dict.fromkeys(((object_type, i) for i in part), self.failure(answer))
                    )
                    continue
                for record_id, row in zip(part, rows, strict=True):
                    if isinstance(row, dict):
                        current[(object_type, record_id)] = {
                            str(k).lower(): v for k, v in row.items()
                        }
        return current, failed

    async def _update(
        self, keys: Sequence[RecordKey], records: Sequence[dict[str, Any]]
    ) -> dict[RecordKey, Outcome]:
        """One collection update; a 400 for the whole request is narrowed to the faulty records."""
        answer = await self.call(
            "PATCH", "/composite/sobjects", {"allOrNone": False, "records": list(records)}
        )
        results = answer.body
        if answer.status == 200 and isinstance(results, list) and len(results) == len(records):
            return {key: _saved(result) for key, result in zip(keys, results, strict=True)}
        if answer.status == 400 and len(records) > 1:
            return await self._narrow(keys, records, answer)
        return dict.fromkeys(keys, self.failure(answer))

    async def _narrow(
        self, keys: Sequence[RecordKey], records: Sequence[dict[str, Any]], answer: auth.Answer
    ) -> dict[RecordKey, Outcome]:
        """After a 400 for the whole request: the records with the fields it names are dead.

        Salesforce refuses a collection as a whole only when the request is malformed (an
        unknown field, type or shape), never for one record's values, which get SaveResults.
        So the records carrying a field the error names fail and the others are sent again;
        an error naming no field fails every record (bisecting would only repeat it).
        """
        failure = self.failure(answer)
        named = _named_fields(answer)
        bad = {i for i, record in enumerate(records) if named & {k.lower() for k in record}}
        if not bad or len(bad) == len(records):
            return dict.fromkeys(keys, failure)
        rest = [i for i in range(len(records)) if i not in bad]
        outcomes = {keys[i]: failure for i in bad}
        return outcomes | await self._update([keys[i] for i in rest], [records[i] for i in rest])

    # -- check-config --online ------------------------------------------------------------

    async def check(self) -> None:
        """A token is granted and every mapped field (and the Lance-id one) is updateable.

        Objects whose ``enrich`` is empty are not checked.
        """
        problems = []
        for object_type, settings in self.settings.objects().items():
            if not settings.enrich:
                continue
            answer = await self.call("GET", f"/sobjects/{object_type}/describe")
            if answer.status == 410:
                raise errors.ConnectorError(self._retired())
            if answer.status != 200 or not isinstance(answer.body, dict):
                raise errors.ConnectorError(
                    f"describing {object_type}: HTTP {answer.status} {answer.message()}".strip()
                )
            problems += _field_problems(object_type, settings, answer.body)
        if problems:
            raise errors.ConnectorError("; ".join(problems))


def _field_problems(
    object_type: str, settings: ObjectSettings, describe: Mapping[str, Any]
) -> list[str]:
    found = {
        str(f.get("name", "")).lower(): f
        for f in describe.get("fields") or []
        if isinstance(f, dict)
    }
    mapped = [settings.lance_id_field, *settings.writable()]
    missing = [name for name in mapped if name.lower() not in found]
    locked = [
        name
        for name in settings.writable()
        if name.lower() in found and not found[name.lower()].get("updateable")
    ]
    problems = []
    if missing:
        problems.append(
            f"{object_type} has no field {', '.join(missing)}: create it (Setup → Object Manager →"
            f" {object_type} → Fields & Relationships) or change the mapping"
        )
    if locked:
        problems.append(
            f"{object_type} field {', '.join(locked)} is not updateable by the integration user:"
            " check its field-level security"
        )
    return problems


def _record_key(target: Mapping[str, Any] | None) -> RecordKey:
    target = target or {}
    named = str(target.get("objectType", ""))
    raw = str(target.get("objectId", ""))
    return (object_type_of(named) or named, id18(raw) or raw)


def _unusable(key: RecordKey) -> Outcome | None:
    object_type, record_id = key
    if object_type_of(object_type) is None:
        return Outcome(
            "dead",
            None,
            f"objectType {object_type[:40]!r}: the Salesforce connector writes"
            " Lead, Contact and Account",
        )
    if id18(record_id) is None:
        return Outcome(
            "dead", None, f"MALFORMED_ID: {record_id[:40]!r} is not a 15- or 18-character id"
        )
    return None


def _saved(result: Any) -> Outcome:
    """The outcome of one SaveResult: delivered, or Salesforce's ``statusCode: message``."""
    if not isinstance(result, dict):
        return Outcome("retry", 200, "Salesforce answered an unexpected SaveResult")
    if result.get("success") is True:
        return Outcome.delivered(200)
    found = [e for e in result.get("errors") or [] if isinstance(e, dict)]
    if not found:
        return Outcome("retry", 200, "Salesforce reported a failure without a reason")
    reason = "; ".join(_error_text(error) for error in found)[: classify.ERROR_EXCERPT_CHARS]
    permanent = str(found[0].get("statusCode") or "") in PERMANENT_CODES
    return Outcome("dead" if permanent else "retry", 200, reason)


def _error_text(error: Mapping[str, Any]) -> str:
    code, message = str(error.get("statusCode") or ""), str(error.get("message") or "")
    fields = [str(f) for f in error.get("fields") or []]
    text = f"{code}: {message}" if code and message else code or message
    return text + (f" ({', '.join(fields)})" if fields else "")


def _named_fields(answer: auth.Answer) -> set[str]:
    """Field names (lower-cased) an error array blames: its ``fields``, or "No such column"."""
    named: set[str] = set()
    for error in answer.body if isinstance(answer.body, list) else []:
        if isinstance(error, dict):
            named.update(str(f).lower() for f in error.get("fields") or [])
            named.update(m.lower() for m in _NO_SUCH_COLUMN.findall(str(error.get("message"))))
    return named

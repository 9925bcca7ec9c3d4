"""HubSpot outbound: results become batch updates, with write policies per property."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from bridge import classify, errors, model
from bridge.classify import Outcome
from connectors import mapping
from connectors.hubspot import auth
from connectors.hubspot.config import MAX_INPUTS, ObjectType, is_id, object_type_of

# Categories of a per-record error that retrying cannot fix.
PERMANENT_CATEGORIES = frozenset(
    {"VALIDATION_ERROR", "OBJECT_NOT_FOUND", "CONFLICT", "MISSING_SCOPES", "BAD_REQUEST"}
)


class Writes(auth.Api):
    """Writes enrichment results to HubSpot records."""

    max_batch = MAX_INPUTS

    def batches(self, events: Sequence[model.Delivery]) -> list[list[int]]:
        """One object type per request, at most 100 records, all events of a record together."""
        records: dict[tuple[str, str], list[int]] = {}
        for index, event in enumerate(events):
            target = event.target or {}
            key = (str(target.get("objectType", "")), str(target.get("objectId", "")))
            records.setdefault(key, []).append(index)
        by_type: dict[str, list[list[int]]] = {}
        for (object_type, _), indexes in records.items():
            by_type.setdefault(object_type, []).append(indexes)
        return [
            [i for group in groups[start : start + MAX_INPUTS] for i in group]
            for groups in by_type.values()
            for start in range(0, len(groups), MAX_INPUTS)
        ]

    def target_problem(self, object_type: str, object_id: str) -> str | None:
        """HubSpot records are contacts or companies with numeric ids."""
        if object_type_of(object_type) is None:
            return f"objectType {object_type[:40]!r}: HubSpot records are contacts or companies"
        if not is_id(object_id):
            return f"objectId {object_id[:40]!r}: HubSpot record ids are numbers"
        return None

    async def write_ids(self, writes: Sequence[tuple[str, str, str]]) -> list[Outcome]:
        """Write found Lance ids to each record's ``lance_id_property``: 100 per batch update."""
        outcomes: dict[tuple[str, str], Outcome] = {}
        by_type: dict[ObjectType, dict[str, str]] = {}
        for named, object_id, lance_id in writes:
            object_type = object_type_of(named)
            if object_type is None:
                outcomes[(named, object_id)] = Outcome("dead", None, f"{named}: not a record")
            else:
                by_type.setdefault(object_type, {})[object_id] = lance_id
        for object_type, ids in by_type.items():
            name = self.settings.objects()[object_type].lance_id_property
            inputs = [
                {"id": i, "properties": {name: lance_id}, "objectWriteTraceId": i}
                for i, lance_id in ids.items()
            ]
            for start in range(0, len(inputs), MAX_INPUTS):
                chunk = inputs[start : start + MAX_INPUTS]
                try:
                    done = await self._update(object_type, chunk)
                except errors.ConnectorError as exc:
                    failed = Outcome("retry", None, exc.message)  # this batch only
                    done = {str(item["id"]): failed for item in chunk}
                outcomes |= {(object_type, i): o for i, o in done.items()}
        missing = Outcome("retry", None, "no outcome for this record")
        return [outcomes.get((object_type_of(t) or t, i), missing) for t, i, _ in writes]

    async def _send(self, chunk: Sequence[model.Delivery]) -> list[Outcome]:
        try:
            return await self._send_chunk(chunk)
        except errors.ConnectorError as exc:
            # The token could not be had (refused, or the endpoint failed): retry later, and say
            # why on every delivery concerned instead of an unexplained internal error.
            return [Outcome("retry", None, exc.message, classify.THROTTLE_MIN_DELAY_S)] * len(chunk)

    async def _send_chunk(self, chunk: Sequence[model.Delivery]) -> list[Outcome]:
        target = chunk[0].target or {}
        named = str(target.get("objectType", ""))
        object_type = object_type_of(named)
        if object_type is None:
            reason = f"objectType {named!r}: the HubSpot connector writes contacts and companies"
            return [Outcome("dead", None, reason)] * len(chunk)
        settings = self.settings.objects()[object_type]
        wanted: dict[str, dict[str, tuple[str, mapping.PropertyMap]]] = {}
        unusable: dict[str, Outcome] = {}
        for event in chunk:
            object_id = str((event.target or {}).get("objectId", ""))
            if not is_id(object_id):
                unusable[object_id] = Outcome(
                    "dead", None, f"objectId {object_id[:40]!r}: HubSpot record ids are numbers"
                )
                continue
            payload = event.payload()
            props = wanted.setdefault(object_id, {})
            for name, rule in settings.writable().items():
                value = rule.value(payload)
                if value is not None:
                    props[name] = (value, rule)
        outcomes = unusable | (await self._write(object_type, wanted) if wanted else {})
        return [outcomes[str((event.target or {}).get("objectId", ""))] for event in chunk]

    async def _write(
        self,
        object_type: ObjectType,
        wanted: Mapping[str, Mapping[str, tuple[str, mapping.PropertyMap]]],
    ) -> dict[str, Outcome]:
        """Apply the write policies and update the records; one outcome per record id."""
        outcomes: dict[str, Outcome] = {}
        to_check = sorted(
            {
                n
                for props in wanted.values()
                for n, (_, m) in props.items()
                if m.policy == "fill_if_empty"
            }
        )
        current: dict[str, dict[str, Any]] = {}
        if to_check:
            read = await self._read(object_type, list(wanted), to_check)
            if isinstance(read, Outcome):
                return dict.fromkeys(wanted, read)
            current = read
        inputs = []
        for object_id, props in wanted.items():
            if to_check and object_id not in current:
                outcomes[object_id] = Outcome(
                    "dead", 404, f"HubSpot has no {object_type} record {object_id}"
                )
                continue
            have = current.get(object_id, {})
            write = {
                name: value
                for name, (value, rule) in props.items()
                if rule.policy == "overwrite" or not mapping.filled(have.get(name))
            }
            if write:
                inputs.append(
                    {"id": object_id, "properties": write, "objectWriteTraceId": object_id}
                )
            else:
                outcomes[object_id] = Outcome.delivered()
        if inputs:
            outcomes |= await self._update(object_type, inputs)
        return outcomes

    async def _update(self, object_type: str, inputs: list[dict[str, Any]]) -> dict[str, Outcome]:
        """One batch update; a 400 for several inputs is split until the bad one is alone."""
        answer = await self.call(
            "POST", f"/crm/v3/objects/{object_type}/batch/update", {"inputs": inputs}
        )
        ids = [str(item["id"]) for item in inputs]
        if answer.status == 400 and len(inputs) > 1:
            half = len(inputs) // 2
            first = await self._update(object_type, inputs[:half])
            return first | await self._update(object_type, inputs[half:])
        if answer.status not in (200, 207) or not isinstance(answer.body, dict):
            return dict.fromkeys(ids, self.failure(answer))
        return _per_record(answer, ids)


def _per_record(answer: auth.Answer, ids: Sequence[str]) -> dict[str, Outcome]:
    """Per-record outcomes of a 200/207 batch answer, errors matched through ``context``."""
    body = answer.body
    done = {str(r.get("id")) for r in body.get("results") or [] if isinstance(r, dict)}
    outcomes = {i: Outcome.delivered(answer.status) for i in ids if i in done}
    unmatched: list[Outcome] = []
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        category = str(error.get("category") or "")
        message = str(error.get("message") or "")[: classify.ERROR_EXCERPT_CHARS]
        reason = f"{category}: {message}" if category else message
        kind: Literal["retry", "dead"] = "dead" if category in PERMANENT_CATEGORIES else "retry"
        outcome = Outcome(kind, answer.status, reason or "HubSpot reported an error")
        context = error.get("context") or {}
        named = [
            str(v) for key in ("objectWriteTraceId", "ids", "id") for v in context.get(key) or []
        ]
        matched = [i for i in named if i in ids and i not in outcomes]
        for object_id in matched:
            outcomes[object_id] = outcome
        if not matched:
            unmatched.append(outcome)
    for object_id in ids:
        if object_id not in outcomes:
            fallback = unmatched[0] if len(unmatched) == 1 else None
            outcomes[object_id] = fallback or Outcome(
                "retry", answer.status, "HubSpot's answer did not mention this record"
            )
    return outcomes

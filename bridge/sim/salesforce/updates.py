"""Updating the org's records: sObject Collections update and the single-record PATCH."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from bridge.sim.salesforce.errors import (
    RestError,
    invalid_type,
    save_error,
    scalar_fields,
    unwritable,
)
from bridge.sim.salesforce.ids import normalize_id
from bridge.sim.salesforce.records import Records

MAX_RECORDS = 200  # sObject Collections update
MAX_CHUNKS = 10  # runs of one type in a collection
_ROLLED_BACK = (
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header"
)
_TOO_MANY_RECORDS = "record limit reached. cannot submit more than 200 records into this call"
_TOO_MANY_CHUNKS = (
    "Cannot have more than 10 chunks in a single operation. "
    "Please rearrange the data to reduce chunking."
)


@dataclasses.dataclass(frozen=True)
class _Update:
    sobject: str
    record_id: str
    changes: dict[str, Any]


class Updates(Records):
    """Writing the records of :class:`~bridge.sim.salesforce.state.SalesforceSandbox`."""

    _validation_rules: dict[tuple[str, str], str]

    def update_collection(self, body: object) -> list[dict[str, Any]]:
        """sObject Collections update: one SaveResult per record, in input order.

        Raises:
            RestError: 400 for a malformed request (the whole request is refused).
        """
        records, all_or_none = self._collection_body(body)
        plans = [self._plan(record) for record in records]
        failed = any(not isinstance(plan, _Update) for plan in plans)
        if all_or_none and failed:
            return [_rolled_back(plan) for plan in plans]
        return [self._apply(plan) if isinstance(plan, _Update) else plan for plan in plans]

    def update_one(self, sobject: str, record_id: str, body: object) -> None:
        """``PATCH /sobjects/{T}/{id}``.

        Raises:
            RestError: 404 for an unknown type or record, 400 for a bad body or a failed rule.
        """
        name = self._type_or_404(sobject)
        canonical = self._existing_id(name, record_id)
        if not isinstance(body, dict):
            raise RestError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        scalar_fields(body)
        fields = {k: v for k, v in body.items() if k != "attributes"}
        names = self._field_names(name)
        unknown = [k for k in fields if k.lower() not in names]
        if unknown:
            message = f"No such column '{unknown[0]}' on sobject of type {name}"
            raise RestError(400, "INVALID_FIELD", message)
        plan = self._checked_update(name, canonical, fields)
        if not isinstance(plan, _Update):
            error = plan["errors"][0]
            raise RestError(400, error["statusCode"], error["message"], error["fields"])
        self._apply(plan)

    def _collection_body(self, body: object) -> tuple[list[dict[str, Any]], bool]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise RestError(
                400, "INVALID_INPUT", 'The request body must be {"allOrNone", "records": [...]}'
            )
        records: list[object] = body["records"]
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise RestError(400, "JSON_PARSER_ERROR", "Cannot deserialize allOrNone: not a boolean")
        if len(records) > MAX_RECORDS:
            raise RestError(400, "EXCEEDED_ID_LIMIT", _TOO_MANY_RECORDS)
        checked = [self._typed_record(record) for record in records]
        chunks = sum(1 for _ in itertools.groupby(r["attributes"]["type"] for r in checked))
        if chunks > MAX_CHUNKS:
            raise RestError(400, "INVALID_INPUT", _TOO_MANY_CHUNKS)
        return checked, all_or_none

    def _typed_record(self, record: object) -> dict[str, Any]:
        """The record with ``attributes.type`` replaced by the canonical type name."""
        if not isinstance(record, dict):
            raise RestError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
        attributes = record.get("attributes")
        if not isinstance(attributes, dict) or not isinstance(attributes.get("type"), str):
            raise RestError(400, "INVALID_INPUT", "Each record must have attributes.type")
        sobject: str = attributes["type"]
        canonical = self._canonical_type(sobject)
        if canonical is None:
            raise invalid_type(sobject)
        scalar_fields(record)
        return {**record, "attributes": {**attributes, "type": canonical}}

    def _plan(self, record: dict[str, Any]) -> _Update | dict[str, Any]:
        sobject: str = record["attributes"]["type"]
        ids = [value for key, value in record.items() if key.lower() == "id"]
        fields = {k: v for k, v in record.items() if k != "attributes" and k.lower() != "id"}
        if not ids or not isinstance(ids[0], str) or not ids[0]:
            return save_error("MISSING_ARGUMENT", "Id not specified in an update call")
        canonical = normalize_id(ids[0])
        if canonical is None or canonical[:3] != self.key_prefixes.get(sobject):
            message = f"{sobject} ID: id value of incorrect type: {ids[0]}"
            return save_error("MALFORMED_ID", message, ["Id"])
        if canonical not in self.records.get(sobject, {}):
            return save_error("ENTITY_IS_DELETED", "entity is deleted")
        return self._checked_update(sobject, canonical, fields)

    def _checked_update(
        self, sobject: str, record_id: str, fields: Mapping[str, Any]
    ) -> _Update | dict[str, Any]:
        changes, bad = self._changes(sobject, fields)
        if bad:
            return unwritable(bad)
        rule = self._validation_rules.get((sobject, record_id))
        if rule is not None:
            return save_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", rule)
        return _Update(sobject, record_id, changes)

    def _apply(self, update: _Update) -> dict[str, Any]:
        self.records[update.sobject][update.record_id].update(update.changes)
        return {"id": update.record_id, "success": True, "errors": []}


def _rolled_back(plan: _Update | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(plan, _Update):
        return plan
    result = save_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", _ROLLED_BACK)
    return {"id": plan.record_id, **result}

"""The org's records: type and field lookups, ``describe``, SOQL queries and retrieve."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.sim.salesforce.errors import NO_RESOURCE, RestError, invalid_field, invalid_type
from bridge.sim.salesforce.ids import normalize_id

MAX_RETRIEVE_IDS = 2000  # sObject Collections retrieve (POST)
_FIELD_TYPES = {
    "Id": "id",
    "Email": "email",
    "Phone": "phone",
    "MobilePhone": "phone",
    "Description": "textarea",
    "Website": "url",
    "Lance_Last_Enriched__c": "datetime",
}
_FIELD_LENGTHS = {"id": 18, "phone": 40, "email": 80, "textarea": 32000, "datetime": 0}
_REQUIRED_FIELDS = frozenset({"Id", "LastName", "Company", "Name"})
_QUERY_FORM = "SELECT f1, f2 FROM T WHERE Id IN ('id1', 'id2', …)"
_SOQL = re.compile(
    r"\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)\s+"
    r"WHERE\s+Id\s+IN\s*\((?P<ids>[^()]*)\)\s*",
    re.IGNORECASE | re.DOTALL,
)
_SOQL_FIELD = re.compile(r"[A-Za-z]\w*")
_SOQL_ID = re.compile(r"\s*'([^'\\]*)'\s*")


class Records:
    """Reading the records of :class:`~bridge.sim.salesforce.state.SalesforceSandbox`, which sets
    these attributes (see its docstring)."""

    schemas: dict[str, set[str]]
    key_prefixes: dict[str, str]
    records: dict[str, dict[str, dict[str, Any]]]

    def describe(self, sobject: str, version: str) -> dict[str, Any]:
        """The ``describe`` of an sObject type.

        Raises:
            RestError: 404 ``NOT_FOUND`` for an unknown type.
        """
        name = self._type_or_404(sobject)
        fields = sorted(self.schemas[name], key=lambda f: (f != "Id", f.endswith("__c"), f))
        base = f"/services/data/v{version}/sobjects/{name}"
        return {
            "name": name,
            "label": name,
            "labelPlural": f"{name}s",
            "keyPrefix": self.key_prefixes.get(name),
            "custom": False,
            "createable": True,
            "updateable": True,
            "queryable": True,
            "fields": [_describe_field(f) for f in fields],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def query(self, soql: str, version: str) -> dict[str, Any]:
        """Run ``SELECT f1, f2 FROM T WHERE Id IN ('id1', …)``.

        Raises:
            RestError: 400 ``MALFORMED_QUERY``, ``INVALID_TYPE``, ``INVALID_FIELD`` or
                ``INVALID_QUERY_FILTER_OPERATOR``.
        """
        match = _SOQL.fullmatch(soql)
        if match is None:
            raise RestError(
                400, "MALFORMED_QUERY", f"unexpected token: this sandbox only runs {_QUERY_FORM}"
            )
        sobject = self._canonical_type(match["sobject"])
        if sobject is None:
            raise invalid_type(match["sobject"])
        fields = [self._query_field(sobject, f.strip()) for f in match["fields"].split(",")]
        ids = dict.fromkeys(_query_id(item) for item in match["ids"].split(","))
        stored = self.records.get(sobject, {})
        rows = [self._row(sobject, i, fields, version) for i in ids if i in stored]
        return {"totalSize": len(rows), "done": True, "records": rows}

    def retrieve(self, sobject: str, body: object, version: str) -> list[dict[str, Any] | None]:
        """sObject Collections retrieve: records in ``ids`` order, ``None`` for unknown ids.

        Raises:
            RestError: 404 for an unknown type, 400 for a bad body or field.
        """
        name = self._type_or_404(sobject)
        ids, fields = _retrieve_body(body)
        canonical = [self._query_field(name, f) for f in fields]
        stored = self.records.get(name, {})
        found = [normalize_id(i) or "" for i in ids]
        return [self._row(name, i, canonical, version) if i in stored else None for i in found]

    def _canonical_type(self, name: str) -> str | None:
        lowered = name.lower()
        return next((known for known in self.schemas if known.lower() == lowered), None)

    def _known_type(self, name: str) -> str:
        canonical = self._canonical_type(name)
        if canonical is None:
            raise ValueError(f"unknown sObject type {name!r}; known: {sorted(self.schemas)}")
        return canonical

    def _type_or_404(self, name: str) -> str:
        canonical = self._canonical_type(name)
        if canonical is None:
            raise RestError(404, "NOT_FOUND", NO_RESOURCE)
        return canonical

    def _existing_id(self, sobject: str, record_id: str) -> str:
        canonical = normalize_id(record_id)
        if canonical is None or canonical[:3] != self.key_prefixes.get(sobject):
            message = f"Provided external ID field does not exist or is not accessible: {record_id}"
            raise RestError(404, "NOT_FOUND", message)
        if canonical not in self.records.get(sobject, {}):
            raise RestError(404, "NOT_FOUND", NO_RESOURCE)
        return canonical

    def _find(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        canonical = normalize_id(record_id)
        return None if canonical is None else self.records.get(sobject, {}).get(canonical)

    def _field_names(self, sobject: str) -> dict[str, str]:
        return {name.lower(): name for name in self.schemas[sobject]}

    def _query_field(self, sobject: str, name: object) -> str:
        if not isinstance(name, str) or not _SOQL_FIELD.fullmatch(name):
            raise RestError(400, "MALFORMED_QUERY", f"unexpected token: {name!r}")
        canonical = self._field_names(sobject).get(name.lower())
        if canonical is None:
            raise invalid_field(name, sobject)
        return canonical

    def _row(self, sobject: str, record_id: str, fields: list[str], version: str) -> dict[str, Any]:
        stored = self.records[sobject][record_id]
        url = f"/services/data/v{version}/sobjects/{sobject}/{record_id}"
        row: dict[str, Any] = {"attributes": {"type": sobject, "url": url}}
        row.update((field, stored.get(field)) for field in fields)
        return row

    def _changes(self, sobject: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Fields keyed by their API names, and the names that are unknown or read-only."""
        names = self._field_names(sobject)
        changes: dict[str, Any] = {}
        bad: list[str] = []
        for name, value in fields.items():
            canonical = names.get(name.lower())
            if canonical is None or canonical == "Id":
                bad.append(name)
            else:
                changes[canonical] = value
        return changes, bad


def _describe_field(name: str) -> dict[str, Any]:
    kind = _FIELD_TYPES.get(name, "string")
    return {
        "name": name,
        "label": name.removesuffix("__c").replace("_", " "),
        "type": kind,
        "length": _FIELD_LENGTHS.get(kind, 255),
        "custom": name.endswith("__c"),
        "nillable": name not in _REQUIRED_FIELDS,
        "createable": name != "Id",
        "updateable": name != "Id",
        "filterable": True,
    }


def _query_id(item: str) -> str:
    match = _SOQL_ID.fullmatch(item)
    if match is None:
        raise RestError(400, "MALFORMED_QUERY", f"unexpected token: {item.strip()!r}")
    canonical = normalize_id(match[1])
    if canonical is None:
        raise RestError(400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {match[1]}")
    return canonical


def _retrieve_body(body: object) -> tuple[list[str], list[object]]:
    ids = body.get("ids") if isinstance(body, dict) else None
    fields = body.get("fields") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise RestError(400, "INVALID_INPUT", "ids: a non-empty list of record ids is required")
    if not isinstance(fields, list) or not fields:
        raise RestError(400, "INVALID_INPUT", "fields: a non-empty list of field names is required")
    if len(ids) > MAX_RETRIEVE_IDS:
        raise RestError(
            400, "EXCEEDED_ID_LIMIT", f"cannot retrieve more than {MAX_RETRIEVE_IDS} records"
        )
    return ids, fields

"""Request bodies of the HTTP API, as pydantic models (also the source of ``/openapi.json``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import pydantic
from pydantic import Field

MAX_TRIGGER_TASKS = 1000
MAX_QUERY_TASKS = 200
# Lance takes UUID v4 ids only; one other id in a batch makes Lance reject the whole batch.
Uuid = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
        r"[0-9a-fA-F]{12}$"
    ),
]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)


class TargetIn(_Strict):
    """Where a result goes: a configured connector and, for CRMs, the record to update."""

    connector: str = Field(min_length=1, max_length=200)
    objectType: str = Field(default="", max_length=200)
    objectId: str = Field(default="", max_length=200)


class TriggerTask(_Strict):
    """One enrichment to start (``trigger``) or follow (``track``)."""

    entityId: Uuid
    field: Literal["phones", "emails", "summary"]
    entityType: Literal["person", "company"] = "person"
    mode: Literal["trigger", "track"] = "trigger"
    targets: list[TargetIn] = Field(default_factory=list, max_length=20)

    @pydantic.field_validator("entityId")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        return str(uuid.UUID(value))


class TriggerRequest(_Strict):
    """``POST /v1/triggers``."""

    tasks: list[TriggerTask] = Field(min_length=1, max_length=MAX_TRIGGER_TASKS)


class QueryTask(_Strict):
    """One task of the Lance batch-query shape."""

    entityId: Uuid
    field: Literal["phones", "emails", "summary"]
    entityType: Literal["person", "company"] = "person"

    @pydantic.field_validator("entityId")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        return str(uuid.UUID(value))


class QueryRequest(_Strict):
    """``POST /v1/enrichments/query``: Lance's batch-query shape, answered from the ledger."""

    tasks: list[QueryTask] = Field(min_length=1, max_length=MAX_QUERY_TASKS)

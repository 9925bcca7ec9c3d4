"""Bodies of the HTTP API, as pydantic models (also the source of ``/openapi.json``).

Requests are validated with these models. Responses are built by the handlers as plain dicts;
the response models here only describe them, and the schemathesis suite
(``tests/integration/test_openapi_fuzz.py``) checks every answer against that description.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, Required

import pydantic
from pydantic import Field
from typing_extensions import TypedDict

from bridge import lance, model

MAX_TRIGGER_TASKS = 1000
MAX_QUERY_TASKS = 200
# Lance takes UUID v4 ids only; one other id in a batch makes Lance reject the whole batch.
# The pattern admits only the hyphenated form, whose canonical spelling is lowercase.
Uuid = Annotated[
    str,
    pydantic.StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
        r"[0-9a-fA-F]{12}$",
        to_lower=True,
    ),
]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)


class TargetIn(_Strict):
    """Where a result goes: a configured connector and, for CRMs, the record to update."""

    connector: str = Field(min_length=1, max_length=200)
    objectType: str = Field(default="", max_length=200)
    objectId: str = Field(default="", max_length=200)


class QueryTask(_Strict):
    """One task of the Lance batch-query shape: which enrichment."""

    entityId: Uuid
    field: Literal["phones", "emails", "summary"]
    entityType: Literal["person", "company"] = "person"


class QueryRequest(_Strict):
    """``POST /v1/enrichments/query``: Lance's batch-query shape, answered from the ledger."""

    tasks: list[QueryTask] = Field(min_length=1, max_length=MAX_QUERY_TASKS)


class TriggerTask(QueryTask):
    """One enrichment to start (``trigger``) or follow (``track``), and where results go."""

    mode: Literal["trigger", "track"] = "trigger"
    targets: list[TargetIn] = Field(default_factory=list, max_length=20)


class TriggerRequest(_Strict):
    """``POST /v1/triggers``."""

    tasks: list[TriggerTask] = Field(min_length=1, max_length=MAX_TRIGGER_TASKS)


# -- responses -------------------------------------------------------------------------------

EntityType = Literal["person", "company"]
EnrichField = Literal["phones", "emails", "summary"]
Mode = Literal["trigger", "track"]
# The states of bridge.model, as Literals of their values: a Literal's JSON schema is an
# inline ``enum`` list (an Enum class would become a ``$ref`` and change /openapi.json). The
# response models only describe what the handlers write, so the type checker sees ``str``.
if typing.TYPE_CHECKING:
    InFlightState = str
    EnrichmentState = str
    DeliveryState = str
else:
    InFlightState = Literal[tuple(state.value for state in model.IN_FLIGHT)]
    EnrichmentState = Literal[tuple(state.value for state in model.EnrichmentState)]
    DeliveryState = Literal[tuple(state.value for state in model.DeliveryState)]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
# A ``nextCursor``: the last id of a page, as the digit string the handlers read back.
CURSOR_PATTERN = r"^[0-9]{1,18}$"
Cursor = Annotated[str, Field(pattern=CURSOR_PATTERN)]


class _Out(pydantic.BaseModel):
    # Every key the handlers write is listed: an undocumented key fails the schema check.
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(_Out):
    """One problem of a request body: where (``loc``) and what (``msg``)."""

    loc: list[str]
    msg: str


class ErrorBody(_Out):
    """What went wrong: a stable ``code``, a message for people, and the details if any."""

    code: str
    message: str
    details: list[ErrorDetail] | None


class Error(_Out):
    """The body of every error answer."""

    error: ErrorBody


class Target(TypedDict, total=False):
    """A connector and, for CRMs, the record it updates (both keys present, or neither)."""

    __pydantic_config__ = pydantic.ConfigDict(  # type: ignore[misc]
        extra="forbid",
        json_schema_extra={
            "dependentRequired": {"objectType": ["objectId"], "objectId": ["objectType"]}
        },
    )

    connector: Required[str]
    objectType: str
    objectId: str


class AcceptedEnrichment(_Out):
    """The in-flight ledger row a trigger task landed on; ``created`` is false if it attached."""

    id: int
    entityType: EntityType
    entityId: Uuid
    field: EnrichField
    mode: Mode
    state: InFlightState
    created: bool


class TriggerAnswer(_Out):
    """``202`` of ``POST /v1/triggers``: one row per task, in the order of the tasks."""

    enrichments: list[AcceptedEnrichment]


class LanceRecord(lance.Enrichment):
    """Lance's Enrichment object as Lance last answered it; unknown keys are kept."""

    __pydantic_config__ = pydantic.ConfigDict(extra="allow")  # type: ignore[misc]


class BridgeView(_Out):
    """The bridge's own view of an enrichment, added to the Lance record it answers with."""

    id: int
    state: EnrichmentState
    values: dict[str, Any] | None
    error: str | None
    awaitingValues: bool


class QueryRecord(LanceRecord):
    """One answer of ``POST /v1/enrichments/query``: the Lance record plus ``bridge``."""

    __pydantic_config__ = pydantic.ConfigDict(extra="allow")  # type: ignore[misc]

    bridge: Required[BridgeView]


class Enrichment(_Out):
    """One ledger row: its state, what Lance said, the values read, and its targets."""

    id: int
    entityType: EntityType
    entityId: Uuid
    field: EnrichField
    mode: Mode
    state: EnrichmentState
    lanceId: str | None
    dataFound: bool | None
    awaitingValues: bool
    values: dict[str, Any] | None
    error: str | None
    polls: int
    record: LanceRecord | None
    targets: list[Target]
    createdAt: Timestamp
    updatedAt: Timestamp
    finishedAt: Timestamp | None


class Delivery(_Out):
    """One event to deliver to one target, and how its attempts went."""

    id: int
    enrichmentId: int
    connector: str
    target: Target
    eventType: str
    messageId: str
    state: DeliveryState
    attempts: int
    nextAttemptAt: Timestamp | None
    lastError: str | None
    responseStatus: int | None
    createdAt: Timestamp
    updatedAt: Timestamp


class EnrichmentWithDeliveries(Enrichment):
    """``GET /v1/enrichments/{id}``: the row and its deliveries."""

    deliveries: list[Delivery]


class EnrichmentPage(_Out):
    """A page of enrichments in id order; ``nextCursor`` is null on the last page."""

    enrichments: list[Enrichment]
    nextCursor: Cursor | None


class DeliveryPage(_Out):
    """A page of deliveries in id order; ``nextCursor`` is null on the last page."""

    deliveries: list[Delivery]
    nextCursor: Cursor | None


class Health(_Out):
    """``GET /healthz``."""

    status: Literal["ok"]


class Ready(_Out):
    """``GET /readyz`` once the ledger is open and the jobs run."""

    status: Literal["ready"]
    replica: str | None = None  # the replica that answered (ledger.replica_id or its own)


class NotReady(_Out):
    """``GET /readyz`` while the bridge is starting, or its ledger is unavailable (503)."""

    status: Literal["starting", "ledger_unavailable"]
    detail: str | None = None  # why the ledger is unavailable (no path, no data)
    replica: str | None = None  # the replica that answered, once its ledger is open

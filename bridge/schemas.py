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

from bridge import lance, linkedin, model

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


class MatchIn(_Strict):
    """How the bridge finds the Lance person first (DESIGN §12): a LinkedIn profile URL, or a
    full name together with the current company."""

    linkedinUrl: str | None = Field(default=None, min_length=1, max_length=2000)
    fullName: str | None = Field(default=None, min_length=1, max_length=300)
    company: str | None = Field(default=None, min_length=1, max_length=300)

    @pydantic.model_validator(mode="after")
    def _one_way(self) -> MatchIn:
        if self.linkedinUrl is not None:
            if self.fullName is not None or self.company is not None:
                raise ValueError("give linkedinUrl, or fullName and company, not both")
            try:
                linkedin.normalise(self.linkedinUrl)
            except linkedin.NotAProfileUrl as exc:
                raise ValueError(f"linkedinUrl: {exc.reason}") from None
        elif linkedin.name_key(self.fullName, self.company) is None:
            raise ValueError("give linkedinUrl, or both fullName and company")
        return self


class TriggerTask(_Strict):
    """One enrichment to start (``trigger``) or follow (``track``), and where results go.

    The person is named by ``entityId``, or by ``match``: then the bridge finds it first
    and triggers only when exactly one Lance person is found.
    """

    entityId: Uuid | None = None
    match: MatchIn | None = None
    field: Literal["phones", "emails", "summary"]
    entityType: Literal["person", "company"] = "person"
    mode: Literal["trigger", "track"] = "trigger"
    targets: list[TargetIn] = Field(default_factory=list, max_length=20)

    @pydantic.model_validator(mode="after")
    def _entity_or_match(self) -> TriggerTask:
        if (self.entityId is None) == (self.match is None):
            raise ValueError("give entityId or match (exactly one)")
        return self


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
    InboundState = str
else:
    InFlightState = Literal[tuple(state.value for state in model.IN_FLIGHT)]
    EnrichmentState = Literal[tuple(state.value for state in model.EnrichmentState)]
    DeliveryState = Literal[tuple(state.value for state in model.DeliveryState)]
    InboundState = Literal[tuple(state.value for state in model.InboundState)]
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


class MatchingTask(_Out):
    """A ``match`` task: stored as an inbound event until the person is found (``GET
    /v1/inbound`` shows what became of it)."""

    task: int
    source: str
    key: str
    state: str


class TriggerAnswer(_Out):
    """``202`` of ``POST /v1/triggers``: one row per ``entityId`` task, in the order of the
    tasks; ``matching`` lists the ``match`` tasks (present when there are any)."""

    enrichments: list[AcceptedEnrichment]
    matching: list[MatchingTask] = Field(default_factory=list)


class InboundEvent(_Out):
    """One event a CRM (or a ``match`` task) sent, and what became of it."""

    source: str
    key: str
    state: InboundState
    objectType: str
    objectId: str
    reason: str | None
    matchKey: str | None
    entityId: str | None
    candidates: list[str]
    attempts: int
    receivedAt: Timestamp
    updatedAt: Timestamp


class InboundPage(_Out):
    """A page of inbound events; ``nextCursor`` is ``null`` on the last page."""

    inbound: list[InboundEvent]
    nextCursor: str | None


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

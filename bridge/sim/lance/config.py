"""What a :class:`~bridge.sim.lance.LanceSimulator` can be told: its settings and the values
of the Lance API it validates against (entity types, fields, outcomes)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

PERSON = "person"
COMPANY = "company"
ENTITY_TYPES = frozenset({PERSON, COMPANY})
TRIGGER_FIELDS = frozenset({"phones", "emails"})
QUERY_FIELDS = frozenset({"phones", "emails", "summary"})
OUTCOMES = ("found", "not_found", "failed", "timeout", "cancelled")
CHARGE_ON = ("trigger", "success")


def _default_costs() -> dict[str, int]:
    return {"emails": 1, "phones": 2, "summary": 1}


def _default_outcomes() -> dict[str, float]:
    return {"found": 0.85, "not_found": 0.1, "failed": 0.03, "timeout": 0.01, "cancelled": 0.01}


@dataclasses.dataclass
class SimConfig:
    """Behaviour of a :class:`~bridge.sim.lance.LanceSimulator`.

    Attributes:
        token: The accepted bearer token.
        org_id: ``orgId`` / ``organizationId`` reported by the simulator.
        user_id: ``createdBy`` of records created through the API.
        credits: Starting balance.
        cost_per_field: Credits charged per new enrichment of a field.
        charge_on: ``"trigger"`` charges when a new record is created; ``"success"`` charges when
            a record finishes with ``dataFound`` true (skipped if the balance cannot cover it).
        completion_s: Range of the uniform random time from creation to the terminal state.
            ``(0, 0)``: new records are pending in the trigger response, terminal on the next read.
        outcomes: Relative weights of the predetermined outcomes (keys from ``OUTCOMES``).
        fail_rate: Share of API requests answered 500 ``INTERNAL_ERROR``.
        throttle_rate: Share of API requests answered 429 ``RATE_LIMITED``.
        retry_after_s: ``Retry-After`` value sent with 429.
        drop_rate: Share of API requests whose connection is closed without an answer.
        slow_rate: Share of API requests delayed by ``slow_s`` before being handled.
        slow_s: Delay of a slow request, in seconds.
        wrap_trigger_response: Answer triggers with ``{"enrichments": [...]}`` instead of a bare
            array (the docs show both).
        seed: Seed for outcomes, durations, ids and faults; ``None`` for a random run.
        clock: Wall clock in Unix seconds; inject one to control time in tests.
        unknown_entities: Entity ids the prospect GET endpoints answer with 404.
        people: How many people the person search can find (a seeded, fixed directory).
    """

    token: str = "sim-token"  # noqa: S105 - a well-known test token, not a secret
    org_id: str = "org_sim"
    user_id: str = "user_sim"
    credits: int = 10_000_000
    cost_per_field: dict[str, int] = dataclasses.field(default_factory=_default_costs)
    charge_on: str = "trigger"
    completion_s: tuple[float, float] = (0.5, 3.0)
    outcomes: dict[str, float] = dataclasses.field(default_factory=_default_outcomes)
    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after_s: int = 1
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 2.0
    wrap_trigger_response: bool = False
    seed: int | None = None
    clock: Callable[[], float] = time.time
    unknown_entities: set[str] = dataclasses.field(default_factory=set)
    people: int = 240

    def __post_init__(self) -> None:
        if self.charge_on not in CHARGE_ON:
            raise ValueError(f"charge_on must be one of {CHARGE_ON}, got {self.charge_on!r}")
        unknown = set(self.outcomes) - set(OUTCOMES)
        if unknown or sum(self.outcomes.values()) <= 0:
            raise ValueError(f"outcomes needs positive weights for keys among {OUTCOMES}")
        if self.people < 0:
            raise ValueError("people must be at least 0")
        low, high = self.completion_s
        if not 0 <= low <= high:
            raise ValueError("completion_s must be (low, high) with 0 <= low <= high")

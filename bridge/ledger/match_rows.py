"""What both backends' matching verbs derive alike from events and tasks (no SQL here)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge import ledger, model

SETTLED_BY_TRIGGER = "settled by a manual trigger naming its Lance id"


def settling(tasks: Sequence[model.Task]) -> dict[tuple[str, str, str], str]:
    """The CRM records ``tasks`` target, with the Lance person each names."""
    return {
        (t.connector, t.object_type, t.object_id): task.entity_id
        for task in tasks
        if task.entity_type == "person"
        for t in task.targets
        if t.object_id
    }


def write_backs_of(
    matched: Sequence[tuple[ledger.Waiting, str | None]],
) -> dict[tuple[str, str, str], str]:
    """The (connector, objectType, objectId) records whose found id is to be written back."""
    found: dict[tuple[str, str, str], str] = {}
    for event, entity_id in matched:
        match = event.match
        if match.write_back and match.targets and match.targets[0].object_id and entity_id:
            record = match.targets[0]
            found[(record.connector, record.object_type, record.object_id)] = entity_id
    return found


def write_back_state(outcome: str) -> str:
    """The stored state of a write-back outcome: a ``retry`` stays ``pending``."""
    return "pending" if outcome == "retry" else outcome

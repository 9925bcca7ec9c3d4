"""What both backends' matching verbs derive alike from events and tasks (no SQL here)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge import ledger, model

SETTLED_BY_TRIGGER = "settled by a manual trigger naming its Lance id"
RETRY = "retry"


def waiting(rows: Sequence[Sequence[Any]]) -> list[ledger.Waiting]:
    """Waiting events from rows of (source, key, match_key, request, attempts, ...)."""
    return [
        ledger.Waiting(str(r[0]), str(r[1]), model.Match.of_json(str(r[2]), str(r[3])), r[4])
        for r in rows
    ]


def cacheable(found: Sequence[ledger.Found]) -> list[tuple[str, str, str | None, str, str | None]]:
    """The match table's rows of ``found``: (key, outcome, entity_id, candidates, reason),
    one per key (the last wins); a retry, or a search not to be cached, is none."""
    rows = {
        f.key: (f.key, f.outcome, f.entity_id, json.dumps(list(f.candidates)), f.reason)
        for f in found
        if f.cached and f.outcome != RETRY and f.key
    }
    return list(rows.values())


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
    return "pending" if outcome == RETRY else outcome

"""What both backends make of an accept, once the rows exist: the targets to insert and the
answer for each group of tasks (which row each task got, and whether this accept created it)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge import model

# (entityType, entityId, field) → (row id, state, mode) of the row in flight for that key.
Ids = dict[tuple[str, str, str], tuple[int, str, str]]
Groups = Sequence[tuple[Sequence[model.Task], float]]


def target_rows(groups: Groups, ids: Ids) -> list[tuple[int, str, str, str]]:
    """(enrichment id, connector, objectType, objectId) of every task's targets."""
    return [
        (ids[task.key][0], t.connector, t.object_type, t.object_id)
        for tasks, _ in groups
        for task in tasks
        for t in task.targets
    ]


def answers(groups: Groups, ids: Ids, created: set[int]) -> list[list[model.Accepted]]:
    """Each group's rows in task order; a row counts as created once, for its first task."""
    seen: set[int] = set()
    results = []
    for tasks, _ in groups:
        result = []
        for task in tasks:
            row_id, state, mode = ids[task.key]
            result.append(
                model.Accepted(row_id, row_id in created and row_id not in seen, state, mode)
            )
            seen.add(row_id)
        results.append(result)
    return results

"""Validation of what clients send the simulator, with the documented limits and messages."""

from __future__ import annotations

import json
import re

from aiohttp import web

from bridge.sim.lance.config import ENTITY_TYPES, PERSON, QUERY_FIELDS, TRIGGER_FIELDS
from bridge.sim.lance.errors import ApiError, invalid

MAX_PERSON_IDS = 100
MAX_TASKS = 200

_UUID4 = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.IGNORECASE
)


async def read_json(request: web.Request) -> object:
    """The request body as JSON; 400 if it is not JSON."""
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise invalid("body", "Request body must be valid JSON") from exc


def json_object(value: object, path: str) -> dict[str, object]:
    """``value`` if it is a JSON object; 400 naming ``path`` if not."""
    if not isinstance(value, dict):
        raise invalid(path, f"{path} must be a JSON object")
    return value


def uuid4(value: object, path: str) -> str:
    """``value`` in lower case if it is a UUID v4; 400 naming ``path`` if not."""
    if isinstance(value, str) and _UUID4.fullmatch(value):
        return value.lower()
    raise invalid(path, f"{path} must be a valid UUID v4")


def one_of(value: object, allowed: frozenset[str], path: str) -> str:
    """``value`` if it is one of ``allowed``; 400 naming ``path`` if not."""
    if isinstance(value, str) and value in allowed:
        return value
    raise invalid(path, f"{path} must be one of: {', '.join(sorted(allowed))}")


def _sized_list(value: object, path: str, maximum: int) -> list[object]:
    if not isinstance(value, list):
        raise invalid(path, f"{path} must be an array")
    if not 1 <= len(value) <= maximum:
        raise invalid(path, f"{path} must contain between 1 and {maximum} items")
    return value


def parse_trigger(body: object) -> tuple[list[str], str]:
    """Validate a batch trigger body; returns ``(personIds, field)``.

    Raises:
        ApiError: 400 ``VALIDATION_ERROR`` naming the offending field.
    """
    obj = json_object(body, "body")
    ids = _sized_list(obj.get("personIds"), "personIds", MAX_PERSON_IDS)
    field = one_of(obj.get("field"), TRIGGER_FIELDS, "field")
    return [uuid4(value, f"personIds[{i}]") for i, value in enumerate(ids)], field


def parse_tasks(body: object) -> list[tuple[str, str, str]]:
    """Validate a batch-query body; returns ``(entityType, entityId, field)`` per task.

    Raises:
        ApiError: 400 ``VALIDATION_ERROR`` naming the offending field.
    """
    tasks = _sized_list(json_object(body, "body").get("tasks"), "tasks", MAX_TASKS)
    return [_parse_task(task, i) for i, task in enumerate(tasks)]


def _parse_task(task: object, i: int) -> tuple[str, str, str]:
    # The hot path of the batch-query: checks inline, error paths formatted only on failure.
    if isinstance(task, dict):
        entity_type = task.get("entityType", PERSON)
        entity_id = task.get("entityId")
        field = task.get("field")
        if (
            isinstance(entity_type, str)
            and entity_type in ENTITY_TYPES
            and isinstance(entity_id, str)
            and _UUID4.fullmatch(entity_id)
            and isinstance(field, str)
            and field in QUERY_FIELDS
        ):
            return entity_type, entity_id.lower(), field
    raise _task_error(task, f"tasks[{i}]")


def _task_error(task: object, path: str) -> ApiError:
    try:
        obj = json_object(task, path)
        one_of(obj.get("entityType", PERSON), ENTITY_TYPES, f"{path}.entityType")
        uuid4(obj.get("entityId"), f"{path}.entityId")
        one_of(obj.get("field"), QUERY_FIELDS, f"{path}.field")
    except ApiError as err:
        return err
    return invalid(path, f"{path} is invalid")


def number(value: object, name: str, maximum: float = 1.0) -> float:
    """``value`` as a float if it is a number in ``[0, maximum]``; ``ValueError`` if not."""
    if not (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= maximum
    ):
        raise ValueError(f"{name} must be a number between 0 and {maximum}")
    return float(value)

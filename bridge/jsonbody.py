"""JSON request bodies, parsed with a limit on how deeply they nest.

Every JSON body the bridge takes (``/v1/*``, ``/hooks/*``) goes through :func:`loads` or
:func:`validate`, so one setting, ``server.max_json_depth``, bounds them all. Recursive parsers
cannot be handed hostile depth: Python's ``json`` overflows the stack (``RecursionError``, a
500) on a body of 200,000 ``[``. orjson stops at a fixed 1024 levels with an error ("depth
limit exceeded") and is fast, so it parses first, and the depth below 1024 is measured,
level by level, on what it returns.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
import pydantic

from bridge import errors

DEFAULT_MAX_DEPTH = 64
# pydantic's own JSON parser (the /v1 bodies) refuses anything deeper than about 200 levels.
MAX_DEPTH = 200

Model = TypeVar("Model", bound=pydantic.BaseModel)


class JsonBodyError(errors.BridgeError):
    """request body is not valid JSON"""


def loads(raw: bytes, *, max_depth: int) -> Any:
    """``raw`` decoded, if it is JSON nesting at most ``max_depth`` levels.

    Raises:
        JsonBodyError: The body is not JSON, or nests deeper.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in exc.msg:
            raise _too_deep(max_depth) from None
        raise JsonBodyError from None
    # Fewer brackets than the limit cannot nest past it: most small bodies stop here.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _deeper_than(value, max_depth):
        raise _too_deep(max_depth)
    return value


def validate(raw: bytes, model: type[Model], *, max_depth: int) -> Model:
    """``raw`` parsed and validated as ``model``, if it nests at most ``max_depth`` levels.

    Raises:
        JsonBodyError: The body is not JSON, or nests deeper.
        pydantic.ValidationError: It is JSON, but not a valid ``model``.
    """
    # A body this small cannot nest too deep, and parsing it twice would cost the hot path
    # (single-task triggers); a larger one is checked by the depth-safe parser first.
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        loads(raw, max_depth=max_depth)
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        if any(problem["type"] == "json_invalid" for problem in exc.errors()):
            raise JsonBodyError from None
        raise


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` has arrays or objects nested more than ``limit`` levels deep.

    Level by level, not recursively: the point is to survive bodies built to be deep.
    """
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _too_deep(max_depth: int) -> JsonBodyError:
    return JsonBodyError(
        f"request body nests deeper than {max_depth} levels (server.max_json_depth)"
    )

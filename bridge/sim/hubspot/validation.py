"""Reading what clients send the HubSpot sandbox, with HubSpot's validation messages."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bridge.sim.hubspot.errors import invalid, missing_attributes
from bridge.sim.hubspot.schema import DEFAULT_READ, Properties
from bridge.sim.hubspot.state import UpdateInput

MAX_BATCH_INPUTS = 100


async def read_json(request: web.Request) -> object:
    """The request body as JSON; 400 with the parser's position if it is not."""
    try:
        return json.loads(await request.read())
    except json.JSONDecodeError as exc:
        raise invalid(
            f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    except ValueError as exc:  # not UTF-8
        raise invalid(f"Invalid input JSON: {exc}") from exc


def json_object(value: object, model: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; 400 naming ``model`` if not."""
    if not isinstance(value, dict):
        raise invalid(f"Invalid input JSON: {model} must be a JSON object")
    return value


def string_map(value: object, where: str) -> Properties:
    """``value`` if it is an object of strings; 400 naming the first offending key if not."""
    if not isinstance(value, dict):
        raise invalid(f"Invalid input JSON: {where} must be a JSON object")
    for name, item in value.items():
        if not isinstance(item, str):
            kind = type(item).__name__
            raise invalid(f"Invalid input JSON: {where}.{name} must be a string, not {kind}")
    return value


def batch_inputs(body: dict[str, Any], model: str) -> list[object]:
    """The ``inputs`` of a batch body; 400 if missing or above the batch limit."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise missing_attributes(model, ["inputs"])
    if len(inputs) > MAX_BATCH_INPUTS:
        raise invalid(
            f"The maximum number of inputs supported in a batch request is {MAX_BATCH_INPUTS}."
            f" {len(inputs)} were given. Please reduce the number of items and try again."
        )
    return inputs


def update_input(value: object, index: int) -> UpdateInput:
    """One checked input of a batch update."""
    item = json_object(value, f"inputs[{index}]")
    missing = [name for name in ("id", "properties") if name not in item]
    if missing:
        raise missing_attributes("SimplePublicObjectBatchInput", missing)
    if not isinstance(item["id"], str):
        raise invalid(f"Invalid input JSON: inputs[{index}].id must be a string")
    properties = string_map(item["properties"], f"inputs[{index}].properties")
    extra = {name: item.get(name) for name in ("idProperty", "objectWriteTraceId")}
    for name, text in extra.items():
        if text is not None and not isinstance(text, str):
            raise invalid(f"Invalid input JSON: inputs[{index}].{name} must be a string")
    return UpdateInput(item["id"], properties, extra["idProperty"], extra["objectWriteTraceId"])


def read_ids(body: dict[str, Any]) -> list[str]:
    """The distinct ids of a batch read, in input order."""
    ids = []
    for index, value in enumerate(batch_inputs(body, "BatchReadInputSimplePublicObjectId")):
        item = json_object(value, f"inputs[{index}]")
        if not isinstance(item.get("id"), str):
            raise missing_attributes("SimplePublicObjectId", ["id"])
        ids.append(item["id"])
    return list(dict.fromkeys(ids))


def property_names(value: object, t: str) -> list[str]:
    """The properties a batch read asks for (HubSpot's defaults if none)."""
    if value is None:
        return list(DEFAULT_READ[t])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("Invalid input JSON: properties must be an array of strings")
    return value

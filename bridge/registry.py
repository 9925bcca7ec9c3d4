"""The registry of connector types, fed by the ``lance_bridge.connectors`` entry points.

The core never names a connector: :func:`connector_types` finds them, :func:`parse_configs`
validates each ``[[connectors]]`` table with its type's own schema, :func:`build` makes them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

import aiohttp
import pydantic

from bridge import connector, errors

ENTRY_POINT_GROUP = "lance_bridge.connectors"


@functools.cache
def connector_types() -> dict[str, type[connector.Connector]]:
    """Connector classes by type name, from the ``lance_bridge.connectors`` entry points.

    Read once per process: scanning every installed distribution's entry points is slow.
    """
    found: dict[str, type[connector.Connector]] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, connector.Connector)):
            raise errors.ConnectorError(f"entry point {entry.value} is not a Connector subclass")
        found[entry.name] = cls
    return found


def parse_configs(raw: Sequence[Mapping[str, Any]]) -> list[connector.ConnectorConfig]:
    """Validate each ``[[connectors]]`` table with its type's own schema.

    Raises:
        errors.ConfigError: naming the key path (``connectors[1].url``) of the first problem.
    """
    types = connector_types()
    parsed: list[connector.ConnectorConfig] = []
    for index, table in enumerate(raw):
        where = f"connectors[{index}]"
        kind = table.get("type")
        if kind not in types:
            known = ", ".join(sorted(types)) or "none installed"
            raise errors.ConfigError(f"{where}.type: unknown connector type {kind!r} ({known})")
        try:
            parsed.append(types[kind].Config.model_validate(dict(table)))
        except pydantic.ValidationError as exc:
            raise errors.ConfigError(describe_validation_error(exc, where)) from None
    names = [config.name for config in parsed]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise errors.ConfigError(f"connectors: duplicate name {duplicates[0]!r}; names are unique")
    return parsed


def build(
    configs: Sequence[connector.ConnectorConfig],
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], float] = time.time,
) -> list[connector.Connector]:
    """Instantiate connectors from validated configs, sharing the app's HTTP session and clock."""
    types = connector_types()
    return [types[config.type](config, session, clock=clock) for config in configs]


def describe_validation_error(exc: pydantic.ValidationError, prefix: str = "") -> str:
    """One line naming the key path and the problem of the first validation error."""
    first = exc.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    where = ".".join(part for part in (prefix, path) if part) or "(root)"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    return f"{where}: {first['msg']}"

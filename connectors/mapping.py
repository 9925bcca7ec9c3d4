"""Field mapping shared by the CRM connectors: which Lance value goes to which CRM field, when.

A mapping names a source in the delivery event (``emails[0]``, ``phones[1:]``, ``summary``,
``state``, ``enriched_at`` ...) and a write policy: ``fill_if_empty`` (the default; the CRM's
current value is read first and only an empty field is written), ``overwrite`` or ``never``.
An empty or missing Lance value never produces a write, so it can never clear a field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import pydantic
from pydantic import Field

from bridge import model

_SOURCE = re.compile(r"^(?:(emails|phones)(?:\[(\d+)(:)?\])?|summary|state|enriched_at)$")
Policy = Literal["fill_if_empty", "overwrite", "never"]
# A plain string bound once: read for every mapped property of every event delivered.
_FINISHED = model.EnrichmentState.FINISHED.value


class PropertyMap(pydantic.BaseModel):
    """Where a HubSpot property's value comes from, and when it may be written.

    ``from``: ``emails`` / ``phones`` (all, joined with ``;``), ``emails[0]`` (the first),
    ``emails[1:]`` (from the second on, joined with ``;``), likewise for ``phones``;
    ``summary``; ``state`` (the enrichment's final state); ``enriched_at`` (when it finished).
    A plain string is short for ``{from = "..."}``.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    policy: Policy = "fill_if_empty"

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"from": value} if isinstance(value, str) else value

    @pydantic.field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if not _SOURCE.match(value):
            raise ValueError(
                f"unknown source {value!r}: use emails, emails[0], emails[1:], phones, phones[0],"
                " phones[1], phones[1:], summary, state or enriched_at"
            )
        return value

    def value(self, event: Mapping[str, Any]) -> str | None:
        """This property's value in a delivery event, or ``None`` when it has none."""
        data = event.get("data") or {}
        if self.source == "state":
            state = data.get("state")
            return state if isinstance(state, str) and state else None
        if self.source == "enriched_at":
            stamp = event.get("timestamp")
            finished = data.get("state") == _FINISHED
            return stamp if finished and isinstance(stamp, str) and stamp else None
        values = data.get("values") or {}
        if self.source == "summary":
            summary = values.get("summary")
            return summary.strip() if isinstance(summary, str) and summary.strip() else None
        match = _SOURCE.match(self.source)
        assert match is not None
        field, index, sliced = match.groups()
        items = [v.strip() for v in values.get(field) or [] if isinstance(v, str) and v.strip()]
        if index is not None:
            items = items[int(index) :] if sliced else items[int(index) : int(index) + 1]
        return ";".join(items) or None


def mappings(sources: Mapping[str, str]) -> dict[str, PropertyMap]:
    """``{field: source}`` defaults as mappings with the default policy."""
    return {name: PropertyMap(source=source) for name, source in sources.items()}


def filled(value: Any) -> bool:
    """Whether a CRM field holds a value (a non-blank string)."""
    return isinstance(value, str) and bool(value.strip())

"""The dashboard's query-string checks, which every page runs before it reads anything.

A value a page does not know raises :class:`BadQuery`, which the page answers with a 400 page
naming the parameter; nothing is read and nothing changes.
"""

from __future__ import annotations

import datetime
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bridge import web as api

PAGE = 50
MAX_TEXT = 200  # longest filter value accepted from a query string


def iso(value: Any) -> str:
    """A timestamp (Unix seconds or ISO text) as ISO 8601 UTC, for ``<time datetime>``."""
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return "" if value is None else str(value)


class BadQuery(Exception):
    """A query string the pages do not accept (answered 400)."""


def text(request: web.Request, name: str) -> str | None:
    """A free-text filter: printable, at most :data:`MAX_TEXT` characters; blank is none."""
    value = request.query.get(name, "").strip() or None
    if value is not None and (len(value) > MAX_TEXT or not value.isprintable()):
        raise BadQuery(f"{name} must be printable text of at most {MAX_TEXT} characters")
    return value


def choice(request: web.Request, name: str, allowed: frozenset[str]) -> str | None:
    """A filter that must be one of ``allowed``; absent or empty is none."""
    value = request.query.get(name) or None
    if value is not None and value not in allowed:
        raise BadQuery(f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


def cursor(request: web.Request) -> int:
    """The keyset cursor of a ``Next`` link (0 on the first page)."""
    raw = request.query.get("cursor", "0")
    if not api._is_number(raw):
        raise BadQuery("cursor must be a value from a Next link")
    return int(raw)


def moment(request: web.Request, name: str) -> float | None:
    """A ``from``/``to`` bound: ISO 8601, UTC unless it names its zone."""
    raw = text(request, name)
    if raw is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name} must be a date and time like 2026-12-01T09:30 (UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def path_id(request: web.Request) -> int | None:
    """The ``{id}`` of the path as a number, or None when it is not one (a 404 page)."""
    raw = request.match_info["id"]
    return int(raw) if api._is_number(raw) else None


def encode(filters: dict[str, str], **extra: str) -> str:
    """A query string of the non-empty filters and ``extra``, for links that keep them."""
    return urlencode({k: v for k, v in (filters | extra).items() if v})


def shown(request: web.Request, keys: tuple[str, ...]) -> dict[str, str]:
    """The filters as the viewer typed them, to fill the form in again."""
    return {key: request.query.get(key, "").strip() for key in keys}

"""A real PostgreSQL server for the tests: one schema of its own per test, dropped after it.

The server is ``LANCE_BRIDGE_TEST_POSTGRES_URL`` (default: trust auth on 127.0.0.1:5432). When
it cannot be reached the PostgreSQL tests skip with one line, except in CI (``CI=true``), where
they fail: a missing server must never pass as a green run.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import pytest

# Read at import: the tests' environment cleaner removes every LANCE_BRIDGE_* variable.
URL = os.environ.get(
    "LANCE_BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def in_schema(url: str, schema: str) -> str:
    """``url`` with every session's search_path set to ``schema``."""
    options = urllib.parse.quote(f"-csearch_path={schema}")
    return f"{url}{'&' if '?' in url else '?'}options={options}"


async def _admin() -> psycopg.AsyncConnection[object]:
    try:
        return await psycopg.AsyncConnection.connect(URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL at {URL.split('@')[-1]} unreachable: {str(exc).splitlines()[0]}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@asynccontextmanager
async def schema() -> AsyncIterator[str]:
    """A fresh, empty schema; yields the URL that uses it."""
    name = f"lb_{uuid.uuid4().hex[:16]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE SCHEMA "{name}"')
        yield in_schema(URL, name)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await admin.close()

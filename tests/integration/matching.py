"""What the matching tests share: the inbound list as the API pages it, and the simulator's
people sorted by whether their LinkedIn URL names one person or several."""

from __future__ import annotations

import collections
from typing import Any

from bridge.sim import lance as sim
from bridge.sim.lance.search import Person
from tests.conftest import auth


async def inbound(client: Any, state: str | None = None) -> list[dict[str, Any]]:
    """Every inbound event ``GET /v1/inbound`` lists (in ``state``), following its cursor."""
    rows: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = [f"state={state}"] if state else []
        query += ["limit=50"] + ([f"cursor={cursor}"] if cursor else [])
        response = await client.get(f"/v1/inbound?{'&'.join(query)}", headers=auth())
        assert response.status == 200, await response.text()
        page = await response.json()
        rows += page["inbound"]
        cursor = page["nextCursor"]
        if not cursor:
            return rows


def people_by_url(lance: sim.LanceSimulator) -> tuple[list[Person], list[str]]:
    """The people whose LinkedIn URL is theirs alone (directory order), and the URLs that
    name several people (sorted)."""
    shared = collections.Counter(p.linkedin_url for p in lance.directory.people)
    single = [p for p in lance.directory.people if shared[p.linkedin_url] == 1]
    return single, sorted(url for url, n in shared.items() if n > 1)


def twin(lance: sim.LanceSimulator) -> Person:
    """The first person whose LinkedIn URL another person shares (a search finds both)."""
    return next(p for p in lance.directory.people if p.id in lance.directory.url_overrides)

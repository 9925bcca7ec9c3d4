"""The HubSpot connector's request budget against the sandbox's rolling window, over loopback.

The sandbox counts requests as they arrive, after a random time on the way; the connector's
budget is the same as the sandbox's limit, so one request too early is a 429.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge import model
from bridge.sim import hubspot as hs
from connectors import hubspot

LIMIT = 8
WINDOW_S = 1.0
SENDS = 14  # each a batch read and a batch update: 28 requests, 3 to 4 windows


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[hs.HubSpotSandbox, str]]:
    state = hs.HubSpotSandbox(
        clock=time.monotonic,  # the connector's clock: a wall-clock step cannot skew the count
        rate_limit=LIMIT,
        rate_window_s=WINDOW_S,
        latency_s=(0.0, 0.12),
        rng=random.Random(7),
    )
    runner = await hs.serve(state)
    yield state, hs.base_url(runner)
    await runner.cleanup()


def finished(delivery_id: int, record_id: str) -> model.Delivery:
    body = {
        "type": "enrichment.finished",
        "timestamp": "2027-01-15T08:00:00Z",
        "data": {
            "state": "finished",
            "values": {"emails": [f"p{delivery_id}@example.com"], "phones": ["+1 555 0100"]},
        },
    }
    return model.Delivery(delivery_id, delivery_id, "hubspot", "contacts", record_id,
                          "enrichment.finished", f"msg_{delivery_id}",
                          json.dumps(body).encode())  # fmt: skip


async def test_many_batches_within_the_budget_get_no_429(
    sandbox: tuple[hs.HubSpotSandbox, str],
) -> None:
    state, url = sandbox
    ids = [state.add_record("contacts") for _ in range(SENDS)]
    config = hubspot.HubSpotConfig(
        name="hubspot",
        base_url=url,
        access_token="pat-sandbox",
        rate_limit_requests=LIMIT,
        rate_limit_window_seconds=WINDOW_S,
        max_concurrency=8,
    )
    async with aiohttp.ClientSession() as session:
        crm = hubspot.HubSpotConnector(config, session)
        # One send per record, all at once, as concurrent delivery runs would.
        results = await asyncio.gather(
            *(crm.send([finished(i, record_id)]) for i, record_id in enumerate(ids))
        )

    statuses = [r.status for r in state.requests]
    assert statuses.count(429) == 0, statuses
    assert len(statuses) == 2 * SENDS
    assert [outcome.kind for [outcome] in results] == ["delivered"] * SENDS
    assert all(state.record("contacts", i).get("email") for i in ids)


# ---- the sandbox's window, on a clock the test moves ----------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(url + "/crm/v3/properties/contacts", headers=headers) as response:
        return response.status


async def _oauth_token(session: aiohttp.ClientSession, url: str, state: hs.HubSpotSandbox) -> str:
    form = {"grant_type": "refresh_token", "refresh_token": "refresh-sandbox",
            "client_id": state.client_id, "client_secret": "sandbox-secret"}  # fmt: skip
    async with session.post(url + "/oauth/v1/token", data=form) as response:
        return str((await response.json())["access_token"])


async def test_the_sandbox_counts_arrivals_in_a_true_rolling_window_per_account() -> None:
    clock = Clock()
    state = hs.HubSpotSandbox(clock=clock, rate_limit=2, rate_window_s=10.0)
    runner = await hs.serve(state)
    url = hs.base_url(runner)
    try:
        async with aiohttp.ClientSession() as session:
            first = await _oauth_token(session, url, state)
            assert await _get(session, url, first) == 200
            clock.now += 9.999
            second = await _oauth_token(session, url, state)  # a refresh: same account
            assert await _get(session, url, second) == 200
            assert await _get(session, url, first) == 429  # 3 arrivals in 10 s
            clock.now += 0.001  # the first arrival has left the window
            assert await _get(session, url, second) == 200
            assert await _get(session, url, first) == 429  # still 2 arrivals in the last 10 s
            assert await _get(session, url, "pat-sandbox") == 200  # a private app: its own
    finally:
        await runner.cleanup()

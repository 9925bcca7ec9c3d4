"""The trigger hold `status` reports is the current one, whatever a previous process left."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import runtime, triggerer
from bridge.sim import _http
from bridge.sim import lance as sim
from tests.conftest import BridgeFactory, Clock, auth, jobs_of, make_settings, tasks_for

Sim = tuple[sim.LanceSimulator, str]


@pytest.mark.parametrize("sim_config", [{"credits": 0}], indirect=True)
async def test_a_restarted_bridge_clears_the_hold_it_inherited_once_triggering_works(
    make_bridge: BridgeFactory, simulator: Sim, tmp_path: Path, clock: Clock
) -> None:
    _, broke_url = simulator
    first = await make_bridge(make_settings(tmp_path, broke_url))
    await first.post("/v1/triggers", json={"tasks": tasks_for(3, "emails")}, headers=auth())
    report = await jobs_of(first).triggerer.run_once()  # a real 402
    assert report.held == "insufficient Lance credits"
    await first.close()  # the process ends without clearing anything

    funded = sim.LanceSimulator(sim.SimConfig(completion_s=(0.0, 0.0), seed=7, clock=clock))
    runner = await sim.serve(funded)
    try:
        settings = make_settings(
            tmp_path, _http.base_url(runner), trigger={"max_requests_per_run": 1}
        )
        second = await make_bridge(settings)
        # More work queued behind the first batch, so a hold would still be worth showing.
        await second.post("/v1/triggers", json={"tasks": tasks_for(150, "phones")}, headers=auth())
        report = await jobs_of(second).triggerer.run_once()  # 100 rows this run
        store = second.app[runtime.BRIDGE].ledger
        facts = await store.counts()
        stored = await store.get_meta(triggerer.HOLD_META_KEY)
    finally:
        await runner.cleanup()

    assert (report.triggered, report.held) == (100, None)
    assert facts["enrichments"]["queued"] == 53, "still work queued"
    assert facts["triggersHeld"] is None
    assert not stored

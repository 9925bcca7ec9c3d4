"""A replica's identity on the SQLite ledger and over HTTP: the heartbeat job registers the one
``serve`` of a file, and ``/readyz`` names the replica that answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from bridge import runtime, schemas
from bridge import settings as settings_mod
from tests.conftest import BridgeFactory, make_settings


async def test_readyz_names_the_replica_that_answered(
    make_bridge: BridgeFactory, simulator: Any, tmp_path: Path
) -> None:
    _, lance_url = simulator
    settings = make_settings(tmp_path, lance_url, ledger={"replica_id": "edge-1"})
    client = await make_bridge(settings)

    ready = await client.get("/readyz")

    assert ready.status == 200
    assert schemas.Ready.model_validate(await ready.json()).replica == "edge-1"


async def test_the_heartbeat_job_registers_the_one_serve_of_a_sqlite_file(
    make_bridge: BridgeFactory, simulator: Any, tmp_path: Path
) -> None:
    _, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url, ledger={"replica_id": "solo"}))
    bridge = client.app[runtime.BRIDGE]
    assert await bridge.ledger.replicas() == []

    await bridge.heartbeat()
    first = bridge.clock()
    await bridge.heartbeat()

    [replica] = await bridge.ledger.replicas()
    assert (replica.id, replica.started_at, replica.held) == ("solo", first, 0)
    text = await (await client.get("/metrics")).text()
    assert 'lance_bridge_replica_claims{replica="solo"} 0.0' in text
    assert "lance_bridge_replicas 1.0" in text


@pytest.mark.parametrize("bad", ["two words", "a/b", "x" * 65])
def test_a_replica_id_that_is_not_a_plain_name_is_refused(bad: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="replica_id"):
        settings_mod.LedgerSettings(replica_id=bad)

"""docker-compose.yml, the README's several-replicas example: PostgreSQL, a one-shot migrate
that the replicas wait for, and two replicas with ids of their own on an image with the
PostgreSQL driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_migrate_runs_once_before_two_replicas_with_their_own_ids() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["lance-bridge", "migrate"]
    assert services["migrate"]["restart"] == "no"
    replicas = {name: svc for name, svc in services.items() if name.startswith("bridge-")}
    assert len(replicas) == 2
    ids = {svc["environment"]["LANCE_BRIDGE_LEDGER__REPLICA_ID"] for svc in replicas.values()}
    assert ids == set(replicas)
    for svc in replicas.values():
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert svc["environment"]["LANCE_BRIDGE_LEDGER__URL"].startswith("postgresql://")
        assert ":" not in svc["environment"]["LANCE_BRIDGE_LEDGER__URL"].split("@")[0][13:]


def test_the_image_is_built_with_the_postgresql_driver() -> None:
    services = _compose()["services"]
    for name in ("migrate", "bridge-a", "bridge-b"):
        assert services[name]["build"]["args"]["EXTRAS"] == "[postgres]"
    assert 'ARG EXTRAS=""' in (ROOT / "Dockerfile").read_text()

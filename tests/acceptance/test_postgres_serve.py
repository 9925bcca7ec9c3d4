"""``serve`` on a PostgreSQL ledger, as an operator runs it: refused before ``migrate``, then two
replicas on one database sharing the work, each event delivered once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge.sim import sink as sink_mod
from tests import pg
from tests.acceptance.test_serve import (
    Serve,
    _cli,
    _config,
    _eventually,
    _free_port,
    _trigger,
    lance_url,  # noqa: F401 - fixture
    receiver,  # noqa: F401 - fixture
)

COUNT = 200


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with pg.schema() as found:
        yield found


def _pg_config(folder: Path, url: str, lance: str, sink_url: str, port: int) -> Path:
    """The acceptance config of ``test_serve`` with its ledger in PostgreSQL."""
    folder.mkdir()
    path = _config(folder, lance, sink_url, port)
    text = path.read_text().replace(f'path = "{folder / "ledger.db"}"', f'url = "{url}"')
    assert 'url = "postgresql://' in text
    path.write_text(text)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_cli(), *args], capture_output=True, text=True, timeout=60, check=False)


async def _replica_of(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        assert response.status == 200
        return str((await response.json())["replica"])


async def test_serve_refuses_an_unmigrated_database_then_two_replicas_share_it(
    tmp_path: Path,
    url: str,
    lance_url: str,  # noqa: F811 - fixture
    receiver: tuple[sink_mod.WebhookSink, str],  # noqa: F811 - fixture
) -> None:
    sink, sink_url = receiver
    ports = [_free_port(), _free_port()]
    configs = [
        _pg_config(tmp_path / f"r{i}", url, lance_url, sink_url, port)
        for i, port in enumerate(ports)
    ]

    refused = await asyncio.to_thread(_run, "serve", "-c", str(configs[0]))
    assert refused.returncode == 1
    assert "run `lance-bridge migrate -c FILE` first" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    migrated = await asyncio.to_thread(_run, "migrate", "-c", str(configs[0]))
    assert migrated.returncode == 0, migrated.stderr

    replicas = [
        Serve(config, port, tmp_path / f"serve{i}.log")
        for i, (config, port) in enumerate(zip(configs, ports, strict=True))
    ]
    for replica in replicas:
        await replica.start()
    tasks = [{"entityId": str(uuid.uuid4()), "field": "emails"} for _ in range(COUNT)]
    await _trigger(replicas[0].url, tasks[: COUNT // 2])
    await _trigger(replicas[1].url, tasks[COUNT // 2 :])

    async def all_delivered() -> bool:
        return len(sink.received) >= COUNT

    await _eventually(all_delivered, "every delivery")
    # Each replica names itself on /readyz; `status` lists both (their first heartbeat ran at
    # start).
    names = [await _replica_of(replica.url) for replica in replicas]
    assert len(set(names)) == 2
    status = await asyncio.to_thread(_run, "status", "-c", str(configs[0]))
    assert status.returncode == 0, status.stderr
    assert all(name in status.stdout for name in names), status.stdout
    for replica in replicas:
        assert await replica.stop(signal.SIGTERM) == 0

    entities = [p["data"]["enrichment"]["entityId"] for p in sink.received.values()]
    assert sorted(entities) == sorted(t["entityId"] for t in tasks)
    assert max(sink.attempts.values()) == 1, "no event was sent twice"

"""A trigger hold survives no crash: `status` tells what is true after a SIGKILL and restart."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim import _http
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.acceptance.test_serve import Serve, _cli, _config, _eventually, _free_port, _trigger
from tests.conftest import SECRET

BANNER = "triggers held"


@pytest.fixture
async def sink_url() -> AsyncIterator[str]:
    runner = await sink_mod.serve(sink_mod.WebhookSink(SECRET))
    yield _http.base_url(runner)
    await runner.cleanup()


async def _status(config: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *_cli(),
        "status",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    return out.decode()


def _ledger(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        return db.execute(sql).fetchall()


async def test_a_hold_from_before_a_crash_is_gone_once_triggering_works_again(
    tmp_path: Path, sink_url: str
) -> None:
    lance_port = _free_port()
    lance = await sim.serve(
        sim.LanceSimulator(sim.SimConfig(credits=0, completion_s=(0.0, 0.0), seed=7)),
        port=lance_port,
    )
    port = _free_port()
    config = _config(tmp_path, f"http://127.0.0.1:{lance_port}", sink_url, port)
    serve = Serve(config, port, tmp_path / "serve.log")
    await serve.start()
    tasks = [{"entityId": str(uuid.uuid4()), "field": "emails"} for _ in range(3)]
    await _trigger(serve.url, tasks)

    async def held() -> bool:  # a real 402 from Lance, recorded by the running bridge
        rows = _ledger(tmp_path, "SELECT value FROM meta WHERE key = 'trigger_held'")
        return bool(rows and rows[0][0])

    await _eventually(held, "the credit hold")
    assert await serve.stop(signal.SIGKILL) == -signal.SIGKILL
    assert BANNER in await _status(config), "held while the bridge is down with work queued"

    await lance.cleanup()  # the account is topped up: Lance answers again, with credits
    lance = await sim.serve(sim.LanceSimulator(sim.SimConfig(seed=7)), port=lance_port)
    try:
        await serve.start()

        async def triggered() -> bool:
            return not _ledger(tmp_path, "SELECT 1 FROM enrichments WHERE state = 'queued'")

        await _eventually(triggered, "the queued rows triggered")
        shown_while_serving = await _status(config)
        assert await serve.stop(signal.SIGTERM) == 0
        shown_after = await _status(config)
    finally:
        await lance.cleanup()

    assert BANNER not in shown_while_serving
    assert BANNER not in shown_after

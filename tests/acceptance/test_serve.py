"""The installed CLI as a subprocess: serve, SIGKILL mid-run and restart, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.sim import _http
from bridge.sim import sink as sink_mod
from tests.conftest import API_TOKEN, SECRET

DEADLINE_S = 60.0
COUNT = 400


def _cli() -> list[str]:
    installed = shutil.which("lance-bridge", path=str(Path(sys.executable).parent))
    return [installed] if installed else [sys.executable, "-m", "bridge"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _eventually(check: Any, what: str, timeout_s: float = DEADLINE_S) -> Any:
    """Poll a real subprocess's progress (there is no scheduler of ours to drive here)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def lance_url(tmp_path: Path) -> AsyncIterator[str]:
    """``lance-bridge simulate`` as its own process, so it outlives bridge restarts."""
    process = await asyncio.create_subprocess_exec(
        *_cli(),
        "simulate",
        "--port",
        "0",
        "--completion",
        "0.2",
        "1.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    match = re.search(r"on (http://\S+)", line)
    assert match, line
    yield match.group(1)
    process.terminate()
    assert await process.wait() == 0


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[sink_mod.WebhookSink, str]]:
    sink = sink_mod.WebhookSink(SECRET)
    runner = await sink_mod.serve(sink)
    yield sink, _http.base_url(runner)
    await runner.cleanup()


def _config(tmp_path: Path, lance_url: str, sink_url: str, port: int) -> Path:
    path = tmp_path / "lance-bridge.toml"
    path.write_text(
        f"""
[lance]
base_url = "{lance_url}"
token = "sim-token"

[ledger]
path = "{tmp_path / "ledger.db"}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]
drain_seconds = 5

[poll]
interval_seconds = 0.2
young_seconds = 2
max_delay_seconds = 1

[trigger]
interval_seconds = 0.1

[fetch]
interval_seconds = 0.1

[delivery]
interval_seconds = 0.1

[log]
level = "warning"

[[connectors]]
name = "hook"
type = "webhook"
url = "{sink_url}/hook"
secret = "{SECRET}"
events = ["enrichment.finished", "enrichment.failed", "enrichment.timeout",
          "enrichment.cancelled", "enrichment.expired", "enrichment.lost"]
""",
        encoding="utf-8",
    )
    return path


class Serve:
    """One ``lance-bridge serve`` process."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.url, self.log = config, f"http://127.0.0.1:{port}", log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *_cli(),
                "serve",
                "-c",
                str(self.config),
                stdout=log,
                stderr=log,
                env={k: v for k, v in os.environ.items() if not k.startswith("LANCE_BRIDGE_")},
            )
        await _eventually(self.ready, "readyz")

    async def ready(self) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"serve exited: {self.log.read_text()[-2000:]}")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{self.url}/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def stop(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), 30)


async def _trigger(url: str, tasks: list[dict[str, str]]) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for start in range(0, len(tasks), 100):
            body = {"tasks": tasks[start : start + 100]}
            async with session.post(f"{url}/v1/triggers", json=body) as response:
                assert response.status == 202, await response.text()


async def _sim_stats(lance_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{lance_url}/_sim/stats") as response,
    ):
        stats: dict[str, Any] = await response.json()
        return stats


async def _metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_sigkill_mid_run_then_restart_loses_nothing_and_repeats_no_paid_trigger(
    tmp_path: Path, lance_url: str, receiver: tuple[sink_mod.WebhookSink, str]
) -> None:
    sink, sink_url = receiver
    port = _free_port()
    serve = Serve(_config(tmp_path, lance_url, sink_url, port), port, tmp_path / "serve.log")
    await serve.start()
    fields = ("emails", "phones")
    tasks = [{"entityId": str(uuid.uuid4()), "field": fields[i % 2]} for i in range(COUNT)]
    await _trigger(serve.url, tasks)

    async def some_delivered() -> bool:
        return len(sink.received) >= COUNT // 10

    await _eventually(some_delivered, "first deliveries")
    assert await serve.stop(signal.SIGKILL) == -signal.SIGKILL
    assert len(sink.received) < COUNT, "killed mid-run, not after"

    await serve.start()

    async def all_delivered() -> bool:
        return len(sink.received) >= COUNT

    await _eventually(all_delivered, "every delivery after the restart")
    samples = await _metrics(serve.url)
    assert samples["lance_bridge_invariant_ok", frozenset()] == 1
    for job in ("trigger", "poll", "fetch", "deliver"):
        assert samples["lance_bridge_job_duration_seconds_count", frozenset({("job", job)})] >= 1
    assert await serve.stop(signal.SIGTERM) == 0

    entities = {p["data"]["enrichment"]["entityId"] for p in sink.received.values()}
    assert entities == {t["entityId"] for t in tasks}
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        states = dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY 1").fetchall())
        in_flight = db.execute(
            "SELECT count(*) FROM enrichments WHERE state IN ('queued', 'pending')"
        ).fetchone()[0]
    assert states == {"delivered": COUNT}
    assert in_flight == 0
    stats = await _sim_stats(lance_url)
    assert stats["credits"]["maxChargesPerKey"] == 1, "no paid trigger repeated"


async def test_second_serve_on_the_same_ledger_refuses_to_start(
    tmp_path: Path, lance_url: str, receiver: tuple[sink_mod.WebhookSink, str]
) -> None:
    _, sink_url = receiver
    port = _free_port()
    config = _config(tmp_path, lance_url, sink_url, port)
    first = Serve(config, port, tmp_path / "first.log")
    await first.start()
    second = await asyncio.create_subprocess_exec(
        *_cli(),
        "serve",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 1
    assert b"ledger in use by another lance-bridge process" in err
    assert b"Traceback" not in err
    assert await first.stop(signal.SIGTERM) == 0

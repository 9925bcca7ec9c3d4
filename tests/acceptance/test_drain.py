"""SIGTERM while ``serve`` delivers: what the receiver acknowledged is never sent again.

1,500 events wait in the ledger; ``serve`` starts delivering them to a receiver that
acknowledges the first 600 and then holds every request open, so the delivery run is still busy
when SIGTERM comes and drain cancels it after ``server.drain_seconds``. After a restart every
event is delivered, and none of the 600 acknowledged before the SIGTERM arrives twice.
"""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim import _http
from tests.acceptance import test_serve as serve_mod
from tests.conftest import API_TOKEN, SECRET
from tests.integration.test_drain import StallingReceiver

COUNT = 1500
ACK_FIRST = 600
CONCURRENCY = 4
DRAIN_S = 0.5

lance_url = serve_mod.lance_url


@pytest.fixture
async def stalling() -> AsyncIterator[tuple[StallingReceiver, str]]:
    receiver = StallingReceiver(ack_first=ACK_FIRST)
    runner = await _http.serve_app(receiver.app, "127.0.0.1", 0)
    yield receiver, _http.base_url(runner)
    receiver.release()
    await runner.cleanup()


def _config(path: Path, lance_url: str, receiver_url: str, port: int, deliver_s: float) -> Path:
    path.write_text(
        f"""
[lance]
base_url = "{lance_url}"
token = "sim-token"

[ledger]
path = "{path.parent / "ledger.db"}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]
drain_seconds = {DRAIN_S}

[poll]
interval_seconds = 0.2
young_seconds = 2
max_delay_seconds = 1

[trigger]
interval_seconds = 0.1

[fetch]
interval_seconds = 0.1

[delivery]
interval_seconds = {deliver_s}

[log]
level = "warning"

[[connectors]]
name = "hook"
type = "webhook"
url = "{receiver_url}/hook"
secret = "{SECRET}"
max_concurrency = {CONCURRENCY}
timeout_seconds = 60
""",
        encoding="utf-8",
    )
    return path


def _deliveries(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "ledger.db", timeout=10) as db:
        rows = db.execute("SELECT message_id, state FROM deliveries").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


async def test_sigterm_mid_delivery_then_restart_sends_no_acknowledged_event_twice(
    tmp_path: Path, lance_url: str, stalling: tuple[StallingReceiver, str]
) -> None:
    receiver, receiver_url = stalling
    port = serve_mod._free_port()
    config = tmp_path / "lance-bridge.toml"
    # First the events only pile up: the delivery job runs at start (nothing due), then not
    # for an hour; so one run later takes a thousand of them at once.
    serve = serve_mod.Serve(
        _config(config, lance_url, receiver_url, port, 3600), port, tmp_path / "serve.log"
    )
    await serve.start()
    fields = ("emails", "phones")
    tasks = [{"entityId": str(uuid.uuid4()), "field": fields[i % 2]} for i in range(COUNT)]
    await serve_mod._trigger(serve.url, tasks)

    async def all_waiting() -> bool:
        return len(_deliveries(tmp_path)) == COUNT

    await serve_mod._eventually(all_waiting, "every event written to the outbox")
    assert await serve.stop(signal.SIGTERM) == 0
    assert {state for _, state in _deliveries(tmp_path)} == {"pending"}

    _config(config, lance_url, receiver_url, port, 0.1)
    await serve.start()
    await receiver.wait_stalled(CONCURRENCY)  # 600 acknowledged, the run stuck on the rest
    started = time.monotonic()
    assert await serve.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < DRAIN_S + 3.0
    acknowledged = set(receiver.acknowledged)
    assert len(acknowledged) == ACK_FIRST
    delivered = {message for message, state in _deliveries(tmp_path) if state == "delivered"}
    assert delivered == acknowledged, "what was acknowledged before SIGTERM is recorded"

    receiver.release()
    await serve.start()

    async def all_delivered() -> bool:
        return {state for _, state in _deliveries(tmp_path)} == {"delivered"}

    await serve_mod._eventually(all_delivered, "every delivery after the restart")
    assert await serve.stop(signal.SIGTERM) == 0
    assert len(receiver.arrivals) == COUNT
    twice = {message for message, seen in receiver.arrivals.items() if seen > 1}
    assert not twice & acknowledged, f"{len(twice & acknowledged)} acknowledged events re-sent"
    assert len(twice) <= CONCURRENCY, "only requests never answered may be sent again"
    log = (tmp_path / "serve.log").read_text()
    assert "cancelling deliver after the grace period" in log
    assert "Traceback" not in log, "a drain that cancels a run is one warning line"

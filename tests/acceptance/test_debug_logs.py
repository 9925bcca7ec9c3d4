"""``serve`` at ``log.level = "debug"``: its whole log holds no enriched value and no secret."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sim import _http
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.acceptance.test_serve import Serve, _config, _eventually, _free_port, _trigger
from tests.conftest import API_TOKEN, SECRET

COUNT = 40


@pytest.fixture
async def lance_url() -> AsyncIterator[str]:
    runner = await sim.serve(sim.LanceSimulator(sim.SimConfig(completion_s=(0.1, 0.5), seed=7)))
    yield _http.base_url(runner)
    await runner.cleanup()


@pytest.fixture
async def sink() -> AsyncIterator[tuple[sink_mod.WebhookSink, str]]:
    receiver = sink_mod.WebhookSink(SECRET)
    runner = await sink_mod.serve(receiver)
    yield receiver, _http.base_url(runner)
    await runner.cleanup()


async def test_a_debug_log_of_a_whole_run_holds_no_enriched_value_and_no_secret(
    tmp_path: Path, lance_url: str, sink: tuple[sink_mod.WebhookSink, str]
) -> None:
    receiver, sink_url = sink
    port = _free_port()
    config = _config(tmp_path, lance_url, sink_url, port)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('level = "warning"', 'level = "debug"\nformat = "json"'))
    log = tmp_path / "serve.log"
    serve = Serve(config, port, log)
    await serve.start()
    fields = ("emails", "phones")
    tasks = [{"entityId": str(uuid.uuid4()), "field": fields[i % 2]} for i in range(COUNT)]
    await _trigger(serve.url, tasks)

    async def all_delivered() -> bool:
        return len(receiver.received) >= COUNT

    await _eventually(all_delivered, "every delivery")
    assert await serve.stop(signal.SIGTERM) == 0

    written = log.read_text(encoding="utf-8")
    values = {
        str(v)
        for payload in receiver.received.values()
        for field in fields
        for v in payload["data"]["values"].get(field) or []
    }
    assert len(values) >= COUNT // 2, "Lance found emails and phones"
    assert '"level": "debug"' in written, "the log is at debug level"
    forbidden = values | {API_TOKEN, "sim-token", SECRET, SECRET.removeprefix("whsec_")}
    assert not {value for value in forbidden if value in written}

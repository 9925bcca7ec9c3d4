"""At ``log.level = "debug"`` no record carries an enriched value or a secret, whoever logs it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import logs
from bridge.sim import hubspot as hs
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.conftest import API_TOKEN, SECRET, BridgeFactory, auth, drain, make_settings, tasks_for

LANCE_TOKEN = "sim-token"
HUBSPOT_TOKEN = "pat-sandbox"
HUBSPOT_SECRET = "hubspot-app-client-secret"


class Capture(logging.Handler):
    """Every record, rendered every way the bridge can write it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.texts: list[tuple[str, str]] = []  # (logger, text)
        self._formatters = (logs.JsonFormatter(), logs.ConsoleFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        texts = [f.format(record) for f in self._formatters] + [repr(record.args)]
        self.texts.extend((record.name, text) for text in texts)


@pytest.fixture
def debug_logs() -> Iterator[Capture]:
    """``logs.configure("debug", ...)`` as ``serve`` does, plus a handler that keeps it all."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    logs.configure("debug", "json")
    capture = Capture()
    root.addHandler(capture)
    yield capture
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, old in saved_levels.items():
        logging.getLogger(name).setLevel(old)


def _personal(values: Any) -> set[str]:
    """Every email and phone in delivered payloads."""
    found: set[str] = set()
    for field in ("emails", "phones"):
        found.update(str(v) for v in values.get(field) or [])
    return found


async def test_a_pipeline_at_debug_level_logs_no_enriched_value_and_no_secret(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    debug_logs: Capture,
) -> None:
    _, lance_url = simulator
    receiver, sink_url = sink
    crm = hs.HubSpotSandbox(client_secret=HUBSPOT_SECRET, rate_limit=0)
    runner = await hs.serve(crm)
    try:
        hook = {"name": "hook", "type": "webhook", "url": f"{sink_url}/hook", "secret": SECRET}
        hubspot = {"name": "hubspot", "type": "hubspot", "base_url": hs.base_url(runner),
                   "access_token": HUBSPOT_TOKEN, "client_secret": HUBSPOT_SECRET}  # fmt: skip
        settings = make_settings(tmp_path, lance_url, connectors=[hook, hubspot])
        client = await make_bridge(settings)
        contacts = [crm.add_record("contacts") for _ in range(5)]
        to_crm = [
            {"connector": "hubspot", "objectType": "contacts", "objectId": c} for c in contacts
        ]
        tasks = [
            task | {"targets": [{"connector": "hook"}, target]}
            for task, target in zip(tasks_for(5, "emails"), to_crm, strict=True)
        ] + tasks_for(5, "phones")
        response = await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
        assert response.status == 202, await response.text()
        await drain(client)
    finally:
        await runner.cleanup()
    personal = set().union(*(_personal(p["data"]["values"]) for p in receiver.received.values()))

    assert len(personal) >= 10, "the simulator found emails and phones"
    assert all(crm.record("contacts", c).get("email") for c in contacts), "HubSpot written"
    assert logging.getLogger("bridge").isEnabledFor(logging.DEBUG), "debug is on"
    secrets = {API_TOKEN, LANCE_TOKEN, SECRET, SECRET.removeprefix("whsec_")}
    forbidden = personal | secrets | {HUBSPOT_TOKEN, HUBSPOT_SECRET}
    leaks = {
        (name, value) for name, text in debug_logs.texts for value in forbidden if value in text
    }
    assert not leaks, "values in the logs of these loggers"

"""``lance-bridge demo``: the whole pipeline on this machine, with no account.

Starts the Lance simulator and a webhook receiver that verifies every signature on loopback,
runs the bridge on a temporary ledger, sends the triggers over its HTTP API, shows progress,
and prints a summary. Exit 0 only if every enrichment reached a terminal state and every
delivery was acknowledged.

``--crm hubspot`` starts the HubSpot sandbox instead: contacts carrying a Lance id are created
there, HubSpot-signed ``contact.propertyChange`` webhooks start the enrichments, and the
results are written back to the contacts with batch updates. ``--crm salesforce`` does the same
with the Salesforce sandbox: Outbound Messages in, sObject Collections updates out.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge import app as app_mod
from bridge import ledger
from bridge import settings as settings_mod
from bridge.sim import _http
from bridge.sim import hubspot as hubspot_sim
from bridge.sim import lance as sim
from bridge.sim import salesforce as salesforce_sim
from bridge.sim import sink as sink_mod

TRIGGER_CHUNK = 1000  # tasks per POST /v1/triggers (the API's maximum)
PROGRESS_EVERY_S = 0.25
FIELDS = ("emails", "phones")
CRMS = ("webhook", "hubspot", "salesforce")
HUBSPOT_TOKEN = "pat-demo"  # noqa: S105 - the sandbox's token, valid on loopback only
SALESFORCE_SECRET = secrets.token_urlsafe(24)


@dataclasses.dataclass(slots=True)
class Stage:
    """The loopback services of one demo run."""

    simulator: sim.LanceSimulator
    sink: sink_mod.WebhookSink
    settings: settings_mod.Settings
    runners: list[web.AppRunner]
    api_url: str = ""
    api_token: str = ""
    hubspot: hubspot_sim.HubSpotSandbox | None = None
    hubspot_secret: str = ""
    salesforce: salesforce_sim.SalesforceSandbox | None = None


def demo_settings(
    lance_url: str,
    sink_url: str,
    secret: str,
    ledger_path: Path,
    api_token: str,
    *,
    connectors: list[dict[str, Any]] | None = None,
) -> settings_mod.Settings:
    """Settings tuned for a fast local run: short intervals, everything on loopback."""
    webhook = {
        "name": "demo-webhook",
        "type": "webhook",
        "url": f"{sink_url}/hook",
        "secret": secret,
    }
    return settings_mod.Settings(
        lance={"base_url": lance_url, "token": sim.SimConfig.token},
        ledger={"path": ledger_path},
        server={"host": "127.0.0.1", "port": 0, "api_tokens": [api_token], "drain_seconds": 2},
        poll={"interval_seconds": 0.5, "young_seconds": 5, "max_delay_seconds": 2},
        trigger={"interval_seconds": 0.25},
        fetch={"interval_seconds": 0.25},
        delivery={"interval_seconds": 0.25, "retry_schedule_seconds": [0, 0.5, 1, 2, 5]},
        inbound={"interval_seconds": 0.25},
        connectors=connectors if connectors is not None else [webhook],
    )


async def run(count: int, *, timeout_s: float, quiet: bool, crm: str = "webhook") -> int:
    """Run the demo with ``count`` enrichments; returns the exit code."""
    console = Console(quiet=False)
    if count < 1:
        console.print("demo: --count must be at least 1")
        return 2
    if crm not in CRMS:
        console.print(f"demo: --crm must be one of {', '.join(CRMS)}")
        return 2
    if crm != "webhook" and count % len(FIELDS):
        count += 1  # each contact asks for emails and phones
    with tempfile.TemporaryDirectory(prefix="lance-bridge-demo-") as folder:
        stage = await _start(Path(folder), crm)
        try:
            started = time.monotonic()
            if stage.hubspot is not None:
                await _send_hubspot_events(stage, count // len(FIELDS))
            elif stage.salesforce is not None:
                await _send_outbound_messages(stage, count // len(FIELDS))
            else:
                await _send_triggers(stage, count)
            store = await ledger.open(stage.settings.ledger, exclusive=False)
            try:
                done = await _watch(store, count, timeout_s, quiet, console)
                facts = await store.counts()
            finally:
                await store.close()
            elapsed = time.monotonic() - started
        finally:
            for runner in reversed(stage.runners):
                await runner.cleanup()
    _summary(console, stage, facts, count, elapsed)
    if stage.hubspot is not None:
        ok = done and _hubspot_written(stage.hubspot) == count // len(FIELDS)
    elif stage.salesforce is not None:
        ok = done and _salesforce_written(stage.salesforce) == count // len(FIELDS)
    else:
        ok = done and len(stage.sink.received) == count
    console.print("demo: [bold green]ok[/]" if ok else "demo: [bold red]incomplete[/]")
    return 0 if ok else 1


async def _start(folder: Path, crm: str) -> Stage:
    simulator = sim.LanceSimulator(sim.SimConfig(completion_s=(0.2, 2.0)))
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    sink = sink_mod.WebhookSink(secret)
    runners = [await sim.serve(simulator), await sink_mod.serve(sink)]
    token = secrets.token_urlsafe(24)
    sandbox: hubspot_sim.HubSpotSandbox | None = None
    connectors = None
    hubspot_secret = secrets.token_urlsafe(24)
    if crm == "hubspot":
        sandbox = hubspot_sim.HubSpotSandbox(
            private_tokens=(HUBSPOT_TOKEN,), client_secret=hubspot_secret
        )
        runners.append(await hubspot_sim.serve(sandbox))
        connectors = [
            {
                "name": "hubspot",
                "type": "hubspot",
                "base_url": _http.base_url(runners[-1]),
                "access_token": HUBSPOT_TOKEN,
                "client_secret": hubspot_secret,
                "contacts": {
                    "properties": {
                        "lance_enrichment_status": {"from": "state", "policy": "overwrite"},
                        "lance_last_enriched": {"from": "enriched_at", "policy": "overwrite"},
                    }
                },
            }
        ]
    salesforce: salesforce_sim.SalesforceSandbox | None = None
    if crm == "salesforce":
        salesforce = salesforce_sim.SalesforceSandbox(client_secret=SALESFORCE_SECRET)
        runners.append(await salesforce_sim.serve(salesforce))
        connectors = [
            {
                "name": "salesforce",
                "type": "salesforce",
                "login_url": _http.base_url(runners[-1]),
                "client_id": salesforce.client_id,
                "client_secret": SALESFORCE_SECRET,
                "organization_id": salesforce.org_id,
                "contact": {
                    "fields": {"Lance_Status__c": {"from": "state", "policy": "overwrite"}}
                },
            }
        ]
    settings = demo_settings(
        _http.base_url(runners[0]),
        _http.base_url(runners[1]),
        secret,
        folder / "demo.db",
        token,
        connectors=connectors,
    )
    bridge_runner = web.AppRunner(app_mod.create_app(settings), access_log=None)
    await bridge_runner.setup()
    runners.append(bridge_runner)
    await web.TCPSite(bridge_runner, "127.0.0.1", 0).start()
    return Stage(
        simulator,
        sink,
        settings,
        runners,
        _http.base_url(bridge_runner),
        token,
        sandbox,
        hubspot_secret,
        salesforce,
    )


async def _send_hubspot_events(stage: Stage, contacts: int) -> None:
    """Create contacts with a Lance id in the sandbox; HubSpot tells the bridge, signed."""
    sandbox = stage.hubspot
    assert sandbox is not None
    ids = [
        sandbox.add_record("contacts", {"lance_person_id": str(uuid.uuid4())})
        for _ in range(contacts)
    ]
    events = [
        hubspot_sim.property_change(
            int(i), "lance_person_id", sandbox.record("contacts", i)["lance_person_id"]
        )
        for i in ids
    ]
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(events), hubspot_sim.MAX_WEBHOOK_EVENTS):
            batch = events[start : start + hubspot_sim.MAX_WEBHOOK_EVENTS]
            url = f"{stage.api_url}/hooks/hubspot"
            status = await hubspot_sim.send_webhook(session, url, stage.hubspot_secret, batch)
            if status != 200:
                raise RuntimeError(f"HubSpot webhook refused: {status}")


async def _send_outbound_messages(stage: Stage, contacts: int) -> None:
    """Create Contacts with a Lance id in the sandbox; Salesforce sends Outbound Messages."""
    sandbox = stage.salesforce
    assert sandbox is not None
    ids = [
        sandbox.add_record("Contact", {"Lance_Person_Id__c": str(uuid.uuid4())})
        for _ in range(contacts)
    ]
    notifications = [
        (
            f"04l{n:015d}",
            "Contact",
            {"Id": i, "Lance_Person_Id__c": sandbox.record("Contact", i)["Lance_Person_Id__c"]},
        )
        for n, i in enumerate(ids)
    ]
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(notifications), salesforce_sim.MAX_NOTIFICATIONS):
            envelope = salesforce_sim.outbound_message(
                sandbox.org_id, notifications[start : start + salesforce_sim.MAX_NOTIFICATIONS]
            )
            url = f"{stage.api_url}/hooks/salesforce"
            if not await salesforce_sim.send_outbound_message(session, url, envelope):
                raise RuntimeError("the bridge did not acknowledge an Outbound Message")


def _salesforce_written(sandbox: salesforce_sim.SalesforceSandbox) -> int:
    """Contacts whose enrichment status was written back."""
    return sum(1 for record in sandbox.records["Contact"].values() if record.get("Lance_Status__c"))


def _hubspot_written(sandbox: hubspot_sim.HubSpotSandbox) -> int:
    """Contacts whose enrichment status was written back."""
    return sum(
        1
        for record in sandbox.objects["contacts"].values()
        if record.get("lance_enrichment_status")
    )


async def _send_triggers(stage: Stage, count: int) -> None:
    tasks = [
        {"entityId": str(uuid.uuid4()), "field": FIELDS[i % len(FIELDS)]} for i in range(count)
    ]
    headers = {"Authorization": f"Bearer {stage.api_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for start in range(0, count, TRIGGER_CHUNK):
            body = {"tasks": tasks[start : start + TRIGGER_CHUNK]}
            async with session.post(f"{stage.api_url}/v1/triggers", json=body) as response:
                if response.status != 202:
                    text = await response.text()
                    raise RuntimeError(f"trigger request failed: {response.status} {text}")


async def _watch(
    store: ledger.Ledger, count: int, timeout_s: float, quiet: bool, console: Console
) -> bool:
    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        finished = progress.add_task("enrichments terminal", total=count)
        delivered = progress.add_task("deliveries acknowledged", total=count)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            terminal, acked, unsettled = await _progress(store)
            progress.update(finished, completed=terminal)
            progress.update(delivered, completed=acked)
            if terminal == count and acked == count and not unsettled:
                return True
            await asyncio.sleep(PROGRESS_EVERY_S)
    return False


async def _progress(store: ledger.Ledger) -> tuple[int, int, int]:
    done = await store.progress()
    return done.terminal, done.delivered, done.unsettled


def _summary(
    console: Console, stage: Stage, facts: dict[str, Any], count: int, elapsed: float
) -> None:
    table = Table(title=f"lance-bridge demo: {count} enrichments in {elapsed:.1f} s")
    table.add_column("what")
    table.add_column("count", justify="right")
    for state, n in sorted(facts["enrichments"].items()):
        table.add_row(f"enrichments {state}", str(n))
    for name, by_state in sorted(facts["deliveries"].items()):
        for state, n in sorted(by_state.items()):
            table.add_row(f"deliveries {state} ({name})", str(n))
    if stage.hubspot is not None:
        _hubspot_rows(table, stage.hubspot, count)
    elif stage.salesforce is not None:
        _salesforce_rows(table, stage.salesforce, count)
    else:
        table.add_row("webhooks verified by the receiver", str(len(stage.sink.received)))
    total = 0
    for endpoint, n in sorted(stage.simulator.requests.items()):
        table.add_row(f"Lance {endpoint}", str(n))
        total += n
    table.add_row("Lance requests per enrichment", f"{total / count:.3f}")
    floor = _floor(count)
    table.add_row(
        "batch triggers (floor ⌈n/100⌉ per field)", f"{_trigger_calls(stage)} (floor {floor})"
    )
    table.add_row("credits charged", str(stage.simulator.credits_charged))
    console.print(table)


def _hubspot_rows(table: Table, sandbox: hubspot_sim.HubSpotSandbox, count: int) -> None:
    contacts = count // len(FIELDS)
    table.add_row("HubSpot contacts written back", f"{_hubspot_written(sandbox)} of {contacts}")
    total = 0
    for endpoint, n in sorted(sandbox.counts.items()):
        table.add_row(f"HubSpot {endpoint}", str(n))
        total += n
    table.add_row("HubSpot requests per 1,000 contact updates", f"{total * 1000 / contacts:.0f}")


def _salesforce_rows(table: Table, sandbox: salesforce_sim.SalesforceSandbox, count: int) -> None:
    contacts = count // len(FIELDS)
    written = _salesforce_written(sandbox)
    table.add_row("Salesforce contacts written back", f"{written} of {contacts}")
    total = 0
    for endpoint, n in sorted(sandbox.counts.items()):
        table.add_row(f"Salesforce {endpoint}", str(n))
        total += n
    table.add_row("Salesforce requests per 1,000 contact updates", f"{total * 1000 / contacts:.0f}")


def _floor(count: int) -> int:
    per_field = [
        count // len(FIELDS) + (1 if i < count % len(FIELDS) else 0) for i in range(len(FIELDS))
    ]
    return sum(math.ceil(n / 100) for n in per_field)


def _trigger_calls(stage: Stage) -> int:
    requests = stage.simulator.requests
    return sum(n for key, n in requests.items() if key.endswith("/enrichment/batch"))

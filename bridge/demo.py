"""``lance-bridge demo``: the whole pipeline on this machine, with no account.

Starts the Lance simulator and a webhook receiver that verifies every signature on loopback,
runs the bridge on a temporary ledger, sends the triggers over its HTTP API, shows progress,
and prints a summary. Exit 0 only if every enrichment reached a terminal state and every
delivery was acknowledged.

``--crm hubspot`` starts the HubSpot sandbox instead, seeded the way a real portal is: most
contacts carry a LinkedIn URL (in the forms CRMs hold them) and no Lance id, a few are a second
record of the same person, some URLs belong to two Lance people (namesakes) and some to nobody.
HubSpot-signed ``contact.creation`` webhooks tell the bridge; it reads the contacts, finds their
Lance person (one search per distinct URL), writes the ids back, enriches the matched ones and
writes the results back with batch updates; the summary shows matched / unmatched / ambiguous,
searches per contact, the ids written back and the cost per 1,000 contacts.
``--crm salesforce`` runs Contacts carrying a Lance id through the Salesforce sandbox:
Outbound Messages in, sObject Collections updates out.
"""

from __future__ import annotations

import asyncio
import base64
import collections
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
from bridge import ledger, linkedin
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
# The simulator's directory per seeded contact: it holds every 25th profile twice, so a
# portal's share of ambiguous URLs needs a directory this much larger than the portal.
PEOPLE_PER_CONTACT = 3
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
    portal: Portal | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Portal:
    """The HubSpot contacts the demo seeded, by what a search should find for them.

    Attributes:
        contacts: Contacts created, all without a Lance id.
        findable: Contacts whose LinkedIn URL names exactly one Lance person.
        persons: Distinct Lance people among those (two records of one person share it).
        keys: Distinct LinkedIn profiles among all contacts (the searches to expect).
    """

    contacts: int
    findable: int
    persons: int
    keys: int


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
        # The demo's Lance is on loopback: a budget well above a portal's first sync.
        match={"interval_seconds": 0.25, "searches_per_minute": 60_000},
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
        stage = await _start(Path(folder), crm, count // len(FIELDS))
        inbound: dict[tuple[str, str], int] = {}
        deliveries = count
        try:
            started = time.monotonic()
            if stage.hubspot is not None:
                stage.portal = await _send_hubspot_events(stage, count // len(FIELDS))
                count = len(FIELDS) * stage.portal.persons
                deliveries = len(FIELDS) * stage.portal.findable
            elif stage.salesforce is not None:
                await _send_outbound_messages(stage, count // len(FIELDS))
            else:
                await _send_triggers(stage, count)
            store = await ledger.open(stage.settings.ledger, exclusive=False)
            try:
                done = await _watch(
                    store, count, deliveries, timeout_s=timeout_s, quiet=quiet, console=console
                )
                facts = await store.counts()
                inbound = await store.inbound_counts()
            finally:
                await store.close()
            elapsed = time.monotonic() - started
        finally:
            for runner in reversed(stage.runners):
                await runner.cleanup()
    _summary(console, stage, facts, count, elapsed)
    if stage.hubspot is not None and stage.portal is not None:
        _matching_summary(console, stage, stage.portal, inbound)
        ok = done and _hubspot_written(stage.hubspot) == stage.portal.findable
    elif stage.salesforce is not None:
        ok = done and _salesforce_written(stage.salesforce) == count // len(FIELDS)
    else:
        ok = done and len(stage.sink.received) == count
    console.print("demo: [bold green]ok[/]" if ok else "demo: [bold red]incomplete[/]")
    return 0 if ok else 1


async def _start(folder: Path, crm: str, contacts: int) -> Stage:
    # Enough people that the portal's URLs (and the profiles Lance holds twice) are found.
    people = max(sim.SimConfig.people, contacts * PEOPLE_PER_CONTACT)
    simulator = sim.LanceSimulator(sim.SimConfig(completion_s=(0.2, 2.0), people=people))
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


async def _send_hubspot_events(stage: Stage, contacts: int) -> Portal:
    """Seed a portal's contacts (no Lance ids); HubSpot tells the bridge they were created."""
    sandbox = stage.hubspot
    assert sandbox is not None
    urls, found = _portal_urls(stage.simulator, contacts)
    ids = [sandbox.add_record("contacts", {"hs_linkedin_url": url}) for url in urls]
    events = [hubspot_sim.creation(int(i)) for i in ids]
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(events), hubspot_sim.MAX_WEBHOOK_EVENTS):
            batch = events[start : start + hubspot_sim.MAX_WEBHOOK_EVENTS]
            url = f"{stage.api_url}/hooks/hubspot"
            status = await hubspot_sim.send_webhook(session, url, stage.hubspot_secret, batch)
            if status != 200:
                raise RuntimeError(f"HubSpot webhook refused: {status}")
    keys = {linkedin.match_key(url) for url in urls}
    persons = {linkedin.match_key(url) for url in found}
    return Portal(contacts, len(found), len(persons), len(keys))


def _portal_urls(simulator: sim.LanceSimulator, contacts: int) -> tuple[list[str], list[str]]:
    """The LinkedIn URLs of a portal's contacts, as CRMs hold them, and the findable ones.

    Of every 20 contacts: 16 name one Lance person (one of them a second record of a person
    already seeded), 2 a profile Lance holds twice (ambiguous) and 2 nobody Lance knows.
    """
    directory = simulator.directory.people
    shared = collections.Counter(p.linkedin_url for p in directory)
    single = [p.linkedin_url for p in directory if shared[p.linkedin_url] == 1]
    twins = sorted(url for url, n in shared.items() if n > 1)
    urls: list[str] = []
    found: list[str] = []
    for n in range(contacts):
        slot = n % 20
        if slot < 16 and single:
            # The 16th is a second record of the 15th's person, written another way.
            person = single[(n - n // 20 - (slot == 15)) % len(single)]
            urls.append(_as_crms_hold(person, n))
            found.append(urls[-1])
        elif slot < 18 and twins:
            urls.append(twins[(n // 20) % len(twins)])
        else:
            urls.append(f"https://www.linkedin.com/in/not-at-lance-{n}")
    return urls, found


def _as_crms_hold(url: str, n: int) -> str:
    """``url`` in one of the forms CRM records hold LinkedIn URLs in (all one profile)."""
    forms = (
        url,
        url.removeprefix("https://www."),
        url.replace("https://www.", "http://uk.") + "/?originalSubdomain=uk",
        url.upper() + "/",
    )
    return forms[n % len(forms)]


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


def _matching_summary(
    console: Console, stage: Stage, portal: Portal, inbound: dict[tuple[str, str], int]
) -> None:
    """What matching did, and what it cost per 1,000 contacts (searches, triggers, writes)."""
    assert stage.hubspot is not None
    table = Table(title=f"matching {portal.contacts} HubSpot contacts without a Lance id")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("per 1,000 contacts", justify="right")
    searches = stage.simulator.searches["total"]
    triggers = _trigger_calls(stage)
    writes = sum(n for key, n in stage.hubspot.counts.items() if key.endswith("/batch/update"))
    ids = sum(1 for r in stage.hubspot.objects["contacts"].values() if r.get("lance_person_id"))
    per = 1000 / portal.contacts
    for state in ("matched", "unmatched", "ambiguous"):
        n = inbound.get(("hubspot", state), 0)
        table.add_row(f"contacts {state}", str(n), f"{n * per:.0f}")
    table.add_row("person searches", str(searches), f"{searches * per:.0f}")
    table.add_row("searches per contact", f"{searches / portal.contacts:.3f}", "")
    table.add_row("Lance ids written back", str(ids), f"{ids * per:.0f}")
    table.add_row("Lance batch triggers", str(triggers), f"{triggers * per:.1f}")
    table.add_row("HubSpot batch updates (ids + values)", str(writes), f"{writes * per:.1f}")
    table.add_row("credits charged", str(stage.simulator.credits_charged), "")
    console.print(table)


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
    store: ledger.Ledger,
    count: int,
    deliveries: int,
    *,
    timeout_s: float,
    quiet: bool,
    console: Console,
) -> bool:
    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        finished = progress.add_task("enrichments terminal", total=count)
        delivered = progress.add_task("deliveries acknowledged", total=deliveries)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            terminal, acked, unsettled = await _progress(store)
            progress.update(finished, completed=terminal)
            progress.update(delivered, completed=acked)
            if terminal == count and acked == deliveries and not unsettled:
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
        written = stage.portal.findable if stage.portal else count // len(FIELDS)
        _hubspot_rows(table, stage.hubspot, written)
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


def _hubspot_rows(table: Table, sandbox: hubspot_sim.HubSpotSandbox, contacts: int) -> None:
    # ``contacts``: the matched ones; the others are never enriched.
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

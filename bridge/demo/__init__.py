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
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bridge import ledger
from bridge.demo.seed import (
    TRIGGER_CHUNK,
    send_hubspot_events,
    send_outbound_messages,
    send_triggers,
)
from bridge.demo.stage import FIELDS, Portal, Stage, demo_settings, start
from bridge.demo.summary import hubspot_written, matching_summary, salesforce_written, summary

__all__ = ["CRMS", "FIELDS", "TRIGGER_CHUNK", "Portal", "Stage", "demo_settings", "run"]

PROGRESS_EVERY_S = 0.25
CRMS = ("webhook", "hubspot", "salesforce")


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
        stage = await start(Path(folder), crm, count // len(FIELDS))
        inbound: dict[tuple[str, str], int] = {}
        deliveries = count
        try:
            started = time.monotonic()
            if stage.hubspot is not None:
                stage.portal = await send_hubspot_events(stage, count // len(FIELDS))
                count = len(FIELDS) * stage.portal.persons
                deliveries = len(FIELDS) * stage.portal.findable
            elif stage.salesforce is not None:
                await send_outbound_messages(stage, count // len(FIELDS))
            else:
                await send_triggers(stage, count)
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
    summary(console, stage, facts, count, elapsed)
    if stage.hubspot is not None and stage.portal is not None:
        matching_summary(console, stage, stage.portal, inbound)
        ok = done and hubspot_written(stage.hubspot) == stage.portal.findable
    elif stage.salesforce is not None:
        ok = done and salesforce_written(stage.salesforce) == count // len(FIELDS)
    else:
        ok = done and len(stage.sink.received) == count
    console.print("demo: [bold green]ok[/]" if ok else "demo: [bold red]incomplete[/]")
    return 0 if ok else 1


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

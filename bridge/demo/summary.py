"""The demo's closing tables: states, Lance requests and credits, and what matching cost."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from bridge.demo.stage import FIELDS, Portal, Stage
from bridge.sim import hubspot as hubspot_sim
from bridge.sim import salesforce as salesforce_sim


def summary(
    console: Console, stage: Stage, facts: dict[str, Any], count: int, elapsed: float
) -> None:
    """The run's table: states, what the receiver or sandbox saw, Lance requests and credits."""
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
        "batch triggers (floor ⌈n/100⌉ per field)", f"{trigger_calls(stage)} (floor {floor})"
    )
    table.add_row("credits charged", str(stage.simulator.credits_charged))
    console.print(table)


def _hubspot_rows(table: Table, sandbox: hubspot_sim.HubSpotSandbox, contacts: int) -> None:
    # ``contacts``: the matched ones; the others are never enriched.
    table.add_row("HubSpot contacts written back", f"{hubspot_written(sandbox)} of {contacts}")
    total = 0
    for endpoint, n in sorted(sandbox.counts.items()):
        table.add_row(f"HubSpot {endpoint}", str(n))
        total += n
    table.add_row("HubSpot requests per 1,000 contact updates", f"{total * 1000 / contacts:.0f}")


def _salesforce_rows(table: Table, sandbox: salesforce_sim.SalesforceSandbox, count: int) -> None:
    contacts = count // len(FIELDS)
    written = salesforce_written(sandbox)
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


def trigger_calls(stage: Stage) -> int:
    """Batch trigger requests Lance received."""
    requests = stage.simulator.requests
    return sum(n for key, n in requests.items() if key.endswith("/enrichment/batch"))


def matching_summary(
    console: Console, stage: Stage, portal: Portal, inbound: dict[tuple[str, str], int]
) -> None:
    """What matching did, and what it cost per 1,000 contacts (searches, triggers, writes)."""
    assert stage.hubspot is not None
    table = Table(title=f"matching {portal.contacts} HubSpot contacts without a Lance id")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("per 1,000 contacts", justify="right")
    searches = stage.simulator.searches["total"]
    triggers = trigger_calls(stage)
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


def hubspot_written(sandbox: hubspot_sim.HubSpotSandbox) -> int:
    """Contacts whose enrichment status was written back."""
    return sum(
        1
        for record in sandbox.objects["contacts"].values()
        if record.get("lance_enrichment_status")
    )


def salesforce_written(sandbox: salesforce_sim.SalesforceSandbox) -> int:
    """Contacts whose enrichment status was written back."""
    return sum(1 for record in sandbox.records["Contact"].values() if record.get("Lance_Status__c"))

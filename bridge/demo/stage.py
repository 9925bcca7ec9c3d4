"""The demo's loopback services: the Lance simulator, the receiver, a sandbox and the bridge.

:func:`start` brings them up on ephemeral ports, the bridge on a ledger in the run's folder,
with :func:`demo_settings` (short intervals, everything on loopback).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge import app as app_mod
from bridge import settings as settings_mod
from bridge.sim import _http
from bridge.sim import hubspot as hubspot_sim
from bridge.sim import lance as sim
from bridge.sim import salesforce as salesforce_sim
from bridge.sim import sink as sink_mod

FIELDS = ("emails", "phones")
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


async def start(folder: Path, crm: str, contacts: int) -> Stage:
    """Start the loopback services and the bridge, with ``contacts`` worth of Lance people."""
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

"""What the demo sends the bridge: API triggers, HubSpot webhooks or Outbound Messages.

The HubSpot portal is seeded the way a real one is: LinkedIn URLs in the forms CRMs hold them,
second records of one person, namesakes Lance holds twice, and people Lance does not know.
"""

from __future__ import annotations

import collections
import uuid

import aiohttp

from bridge import linkedin
from bridge.demo.stage import FIELDS, Portal, Stage
from bridge.sim import hubspot as hubspot_sim
from bridge.sim import lance as sim
from bridge.sim import salesforce as salesforce_sim

TRIGGER_CHUNK = 1000  # tasks per POST /v1/triggers (the API's maximum)


async def send_triggers(stage: Stage, count: int) -> None:
    """Send ``count`` tasks over the bridge's API, :data:`TRIGGER_CHUNK` per request."""
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


async def send_hubspot_events(stage: Stage, contacts: int) -> Portal:
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


async def send_outbound_messages(stage: Stage, contacts: int) -> None:
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

"""Salesforce Leads and Contacts without a Lance id, end to end over loopback: Outbound
Messages carrying ``LinkedIn_URL__c`` → person search → ids written back in sObject
Collections of 200 → enriched → values written; namesakes and unknowns untouched."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bridge.sim import lance as sim
from bridge.sim import salesforce as sf
from tests.conftest import BridgeFactory, drain, jobs_of
from tests.integration.matching import inbound, people_by_url
from tests.integration.test_salesforce import (
    FLOW_TOKEN,
    HOOK,
    TRIGGER,
    UPDATE,
    envelope,
    flow_headers,
    lance_values,
    post_soap,
    rsa_keys,  # noqa: F401 - a fixture the sandbox needs
    salesforce,  # noqa: F401 - the sandbox fixture
    sf_table,
    start,
)


async def _send(client: Any, body: bytes) -> None:
    response = await post_soap(client, body)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("sim_config", [{"people": 600}], indirect=True)
async def test_leads_and_contacts_without_lance_ids_are_matched_and_written_back(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    lance, lance_url = simulator
    sandbox, salesforce_url = salesforce
    client = await start(make_bridge, tmp_path, lance_url, sf_table(salesforce_url))
    single, twins = people_by_url(lance)
    single, twins = single[:250], twins[:10]
    found = []
    for n, person in enumerate(single):
        sobject = "Lead" if n % 2 else "Contact"
        fields = {"LastName": f"P{n}", "LinkedIn_URL__c": person.linkedin_url.upper()}
        if sobject == "Lead":
            fields["Company"] = "Acme"
        found.append((sobject, sandbox.add_record(sobject, fields), person))
    others = [
        ("Contact", sandbox.add_record("Contact", {"LastName": "T", "LinkedIn_URL__c": u}))
        for u in twins
    ]
    others += [
        ("Contact", sandbox.add_record("Contact", {"LastName": "U", "LinkedIn_URL__c": v}))
        for v in ("https://www.linkedin.com/in/nobody-here", "see notes")
    ]
    records = [(t, i) for t, i, _ in found] + others
    bodies = [envelope(sandbox, records[s : s + 100]) for s in range(0, len(records), 100)]
    for body in bodies:
        await _send(client, body)

    report = await jobs_of(client).matcher.run_once()

    assert (report.matched, report.ambiguous, report.unmatched) == (250, 10, 1)
    assert lance.searches["total"] == 261  # the junk value is never searched
    assert sandbox.counts[UPDATE] == math.ceil(250 / 200)
    for sobject, record_id, person in found:
        assert sandbox.record(sobject, record_id)["Lance_Person_Id__c"] == person.id
    await drain(client)
    for sobject, record_id, person in found:
        assert sandbox.record(sobject, record_id)["Email"] == lance_values(person.id, "emails")[0]
    for sobject, record_id in others:
        record = sandbox.record(sobject, record_id)
        assert not record.get("Lance_Person_Id__c")
        assert not record.get("Email")
    assert {entity for _, entity, _ in lance.charges} == {p.id for _, _, p in found}
    assert len(await inbound(client, "ambiguous")) == 10

    searches, triggers = lance.searches["total"], lance.requests[TRIGGER]
    for body in bodies:  # Salesforce's retries of the same messages
        await _send(client, body)
    await _send(client, envelope(sandbox, others))  # new messages for the unsettled ones
    await drain(client)
    assert (lance.searches["total"], lance.requests[TRIGGER]) == (searches, triggers)


async def test_a_flow_callout_with_a_linkedin_url_is_matched_and_junk_is_unmatched(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    lance, lance_url = simulator
    sandbox, salesforce_url = salesforce
    client = await start(make_bridge, tmp_path, lance_url, sf_table(salesforce_url))
    person = lance.directory.people[4]
    lead = sandbox.add_record("Lead", {"LastName": "L", "Company": "Acme"})
    contact = sandbox.add_record("Contact", {"LastName": "C"})
    body = [
        {"recordId": lead, "objectType": "Lead", "linkedinUrl": person.linkedin_url + "/"},
        {"recordId": contact, "objectType": "Contact", "linkedinUrl": "my profile"},
    ]

    response = await client.post(HOOK, json=body, headers=flow_headers(FLOW_TOKEN))
    both = {"recordId": lead, "objectType": "Lead", "linkedinUrl": "x", "lanceId": person.id}
    refused = await client.post(HOOK, json=both, headers=flow_headers(FLOW_TOKEN))
    report = await jobs_of(client).matcher.run_once()

    assert response.status == 200, await response.text()
    assert refused.status == 400
    assert (report.searches, report.matched) == (1, 1)
    assert sandbox.record("Lead", lead)["Lance_Person_Id__c"] == person.id
    [junk] = await inbound(client, "unmatched")
    assert (junk["objectId"], junk["reason"]) == (contact, "linkedinUrl: contains whitespace")

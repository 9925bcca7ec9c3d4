"""HubSpot contacts without a Lance id, end to end over loopback: creation events → record
reads → person search at the Lance simulator → ids written back → enriched → values written.

Ambiguous and unknown contacts stay untouched, are listed with their reasons and cost no
credit; the same contacts sent again cost no search and no trigger.
"""

from __future__ import annotations

import collections
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge import runtime
from bridge.sim import hubspot as hs
from bridge.sim import lance as sim
from tests.conftest import BridgeFactory, Clock, drain, jobs_of
from tests.integration.matching import inbound, people_by_url
from tests.integration.test_hubspot import (
    CLIENT_SECRET,
    READ,
    TRIGGER,
    UPDATE,
    Client,
    hubspot,  # noqa: F401 - the sandbox fixture
    hubspot_settings,
    lance_values,
    post_events,
    post_workflow,
)

# Each written in one of the forms CRMs hold them in; all name the same profile.
FORMS = (
    lambda url: url,
    lambda url: url.upper(),
    lambda url: url.replace("https://www.", "http://uk.") + "/?trk=public_profile",
    lambda url: url.removeprefix("https://") + "/",
)


def _portal(sandbox: hs.HubSpotSandbox, lance: sim.LanceSimulator) -> dict[str, list[Any]]:
    """500 contacts as a portal has them: 400 findable, 40 namesakes, 40 unknown, 20 junk."""
    single, twins = people_by_url(lance)
    assert (len(single) >= 400, len(twins) >= 40) == (True, True)
    contacts: dict[str, list[Any]] = {"matched": [], "ambiguous": [], "unmatched": []}
    for n, person in enumerate(single[:400]):
        url = FORMS[n % len(FORMS)](person.linkedin_url)
        contacts["matched"].append(
            (sandbox.add_record("contacts", {"hs_linkedin_url": url}), person)
        )
    for url in twins[:40]:
        contacts["ambiguous"].append(sandbox.add_record("contacts", {"hs_linkedin_url": url}))
    for n in range(40):
        url = f"https://www.linkedin.com/in/nobody-at-lance-{n}"
        contacts["unmatched"].append(sandbox.add_record("contacts", {"hs_linkedin_url": url}))
    for n in range(20):
        junk = f"https://www.linkedin.com/company/acme-{n}" if n % 2 else f"call me {n}"
        contacts["unmatched"].append(sandbox.add_record("contacts", {"hs_linkedin_url": junk}))
    return contacts


def _creations(ids: list[str], clock: Clock, first_event: int) -> list[list[dict[str, Any]]]:
    """Creation events for ``ids``, 100 per request as HubSpot batches them."""
    events = [hs.creation(int(i), clock=clock, event_id=first_event + n) for n, i in enumerate(ids)]
    return [events[start : start + 100] for start in range(0, len(events), 100)]


async def _send(client: Client, requests: list[list[dict[str, Any]]], clock: Clock) -> Any:
    answers = collections.Counter[str]()
    for events in requests:
        response = await post_events(client, events, clock)
        assert response.status == 200
        answers.update(await response.json())
    return answers


@pytest.mark.parametrize("sim_config", [{"people": 1200}], indirect=True)
async def test_500_contacts_without_lance_ids_are_matched_written_back_and_enriched(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance, lance_url = simulator
    sandbox, hubspot_url = hubspot
    settings = hubspot_settings(tmp_path, lance_url, hubspot_url)
    settings = settings.model_copy(
        update={"match": settings.match.model_copy(update={"searches_per_minute": 0})}
    )
    client = await make_bridge(settings)
    contacts = _portal(sandbox, lance)
    matched = contacts["matched"]
    ids = [i for i, _ in matched] + contacts["ambiguous"] + contacts["unmatched"]

    sent = _creations(ids, clock, 1_000)
    assert (await _send(client, sent, clock))["lookups"] == 500
    jobs = jobs_of(client)
    resolved = await jobs.resolver.run_once()
    report = await jobs.matcher.run_once()

    assert sandbox.counts[READ] == 5
    assert resolved.matching == 480  # the 20 junk values are unmatched without a search
    assert lance.searches["total"] == report.searches == 480
    assert (report.matched, report.ambiguous, report.unmatched) == (400, 40, 40)
    assert sandbox.counts[UPDATE] == math.ceil(400 / 100)  # the ids, written back
    for contact, person in matched:
        assert sandbox.record("contacts", contact)["lance_person_id"] == person.id

    await drain(client)

    for contact, person in matched:
        record = sandbox.record("contacts", contact)
        assert record["email"] == lance_values(person.id, "emails")[0]
    untouched = contacts["ambiguous"] + contacts["unmatched"]
    for contact in untouched:
        record = sandbox.record("contacts", contact)
        assert not record.get("lance_person_id")
        assert not record.get("email")
    assert {entity for _, entity, _ in lance.charges} == {person.id for _, person in matched}
    ambiguous = await inbound(client, "ambiguous")
    assert sorted(r["objectId"] for r in ambiguous) == sorted(contacts["ambiguous"])
    assert all(r["reason"].startswith("2 Lance people match") for r in ambiguous)
    assert all(len(r["candidates"]) == 2 for r in ambiguous)
    unmatched = await inbound(client, "unmatched")
    assert sorted(r["objectId"] for r in unmatched) == sorted(contacts["unmatched"])
    reasons = collections.Counter(r["reason"].split(":")[0] for r in unmatched)
    assert reasons == {"no Lance person found for this LinkedIn URL": 40, "hs_linkedin_url": 20}

    # Sent again: HubSpot's retries of the same events, and new events for the contacts
    # that found nobody or several people (read again, never searched again).
    searches, triggers, credits = lance.searches["total"], lance.requests[TRIGGER], lance.charges
    assert (await _send(client, sent, clock))["duplicates"] == 500
    again = _creations(untouched, clock, 9_000)
    assert (await _send(client, again, clock))["lookups"] == 100
    await drain(client)

    assert lance.searches["total"] == searches
    assert lance.requests[TRIGGER] == triggers
    assert lance.charges == credits
    # The events settled from the match table carry the reason the search gave.
    ambiguous = await inbound(client, "ambiguous")
    assert len(ambiguous) == 80
    assert all(r["reason"].startswith("2 Lance people match") for r in ambiguous)
    counts = await client.app[runtime.BRIDGE].ledger.inbound_counts()
    assert counts[("hubspot", "ambiguous")] == 40 * 2
    assert counts[("hubspot", "unmatched")] == 60 * 2


async def test_workflow_calls_and_linkedin_changes_of_contacts_without_a_lance_id_match(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance, lance_url = simulator
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, lance_url, hubspot_url))
    first, second = lance.directory.people[1], lance.directory.people[2]
    by_workflow = sandbox.add_record("contacts", {"hs_linkedin_url": first.linkedin_url})
    by_change = sandbox.add_record("contacts", {"hs_linkedin_url": second.linkedin_url})
    customised = {"hs_object_id": by_workflow, "hs_linkedin_url": first.linkedin_url + "/"}

    workflow = await post_workflow(client, customised, clock)
    change = hs.property_change(int(by_change), "hs_linkedin_url", second.linkedin_url, clock=clock)
    changed = await post_events(client, [change], clock)
    await jobs_of(client).resolver.run_once()  # both name match properties only: records read
    report = await jobs_of(client).matcher.run_once()

    assert (workflow.status, changed.status) == (200, 200)
    assert (report.searches, report.matched) == (2, 2)
    assert sandbox.record("contacts", by_workflow)["lance_person_id"] == first.id
    assert sandbox.record("contacts", by_change)["lance_person_id"] == second.id
    await drain(client)
    assert sandbox.record("contacts", by_change)["email"] == lance_values(second.id, "emails")[0]


async def test_a_linkedin_change_on_a_contact_with_a_lance_id_never_replaces_it(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    clock: Clock,
) -> None:
    # The contact already carries a Lance id; its LinkedIn URL now names someone else. The
    # change event and a customised workflow body name the URL only: neither may search,
    # write another id over the one the record holds, or trigger another person.
    lance, lance_url = simulator
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, lance_url, hubspot_url))
    own, other = lance.directory.people[3], lance.directory.people[4]
    contact = sandbox.add_record(
        "contacts", {"lance_person_id": own.id, "hs_linkedin_url": other.linkedin_url}
    )
    change = hs.property_change(int(contact), "hs_linkedin_url", other.linkedin_url, clock=clock)
    changed = await post_events(client, [change], clock)
    workflow = await post_workflow(
        client, {"hs_object_id": contact, "hs_linkedin_url": other.linkedin_url}, clock
    )
    await jobs_of(client).resolver.run_once()
    report = await jobs_of(client).matcher.run_once()

    assert (changed.status, workflow.status) == (200, 200)
    assert report.searches == 0
    assert sandbox.record("contacts", contact)["lance_person_id"] == own.id
    await drain(client)
    assert sandbox.record("contacts", contact)["lance_person_id"] == own.id
    assert sandbox.record("contacts", contact)["email"] == lance_values(own.id, "emails")[0]


async def test_a_failed_write_back_is_retried_and_never_holds_up_the_enrichment(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance, lance_url = simulator
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, lance_url, hubspot_url))
    person = lance.directory.people[6]
    contact = sandbox.add_record("contacts", {"hs_linkedin_url": person.linkedin_url})
    await _send(client, _creations([contact], clock, 50_000), clock)
    await jobs_of(client).resolver.run_once()
    sandbox.fail_next(1, 503, route="batch/update")

    report = await jobs_of(client).matcher.run_once()
    triggered = await jobs_of(client).triggerer.run_once()

    assert (report.matched, report.written_back, report.write_back_failed) == (1, 0, 1)
    assert not sandbox.record("contacts", contact).get("lance_person_id")
    assert triggered.requests >= 1
    clock.advance(61)
    assert (await jobs_of(client).matcher.run_once()).written_back == 1
    assert sandbox.record("contacts", contact)["lance_person_id"] == person.id


class _RefusingSandbox(hs.HubSpotSandbox):
    """A sandbox whose OAuth tokens expire at the second batch update of contacts, and whose
    token endpoint then refuses the refresh once."""

    def _take_fault(self, key: str) -> web.Response | None:
        if key.endswith("/batch/update") and self.counts[key] == 2:
            self.expire_tokens()
            self.fail_next(1, 400, route="oauth")
        return super()._take_fault(key)


@pytest.fixture
async def refusing(clock: Clock) -> AsyncIterator[tuple[hs.HubSpotSandbox, str]]:
    sandbox = _RefusingSandbox(clock=clock, client_secret=CLIENT_SECRET, rate_limit=0)
    runner = await hs.serve(sandbox)
    yield sandbox, hs.base_url(runner)
    await runner.cleanup()


@pytest.mark.parametrize("sim_config", [{"people": 600}], indirect=True)
async def test_a_failed_batch_of_write_backs_leaves_the_batches_written_before_it_done(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    refusing: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance, lance_url = simulator
    sandbox, hubspot_url = refusing
    oauth = {"access_token": None, "refresh_token": "refresh-sandbox"}
    settings = hubspot_settings(
        tmp_path, lance_url, hubspot_url, client_id=sandbox.client_id, **oauth
    )
    settings = settings.model_copy(
        update={"match": settings.match.model_copy(update={"searches_per_minute": 0})}
    )
    client = await make_bridge(settings)
    single, _ = people_by_url(lance)
    people = {
        sandbox.add_record("contacts", {"hs_linkedin_url": p.linkedin_url}): p for p in single[:150]
    }
    await _send(client, _creations(list(people), clock, 70_000), clock)
    await jobs_of(client).resolver.run_once()

    report = await jobs_of(client).matcher.run_once()

    # The first 100 were written before the token was refused; only the last 50 wait.
    assert (report.matched, report.written_back, report.write_back_failed) == (150, 100, 50)
    written = [c for c in people if sandbox.record("contacts", c).get("lance_person_id")]
    assert len(written) == 100
    clock.advance(61)
    assert (await jobs_of(client).matcher.run_once()).written_back == 50
    for contact, person in people.items():
        assert sandbox.record("contacts", contact)["lance_person_id"] == person.id

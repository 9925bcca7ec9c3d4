"""The match step over loopback: ``match`` tasks of ``POST /v1/triggers``, a manual trigger
settling an ambiguous record, and what each way a person search can fail leaves on the record.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge import runtime
from bridge.sim import _http
from bridge.sim import hubspot as hs
from bridge.sim import lance as sim
from tests.conftest import BridgeFactory, Clock, auth, drain, jobs_of, make_settings
from tests.integration.matching import inbound
from tests.integration.matching import twin as twin_of
from tests.integration.test_hubspot import (
    TRIGGER,
    hubspot,  # noqa: F401 - the sandbox fixture
    hubspot_settings,
    post_events,
)

SEARCH = "/api/v1/entities/prospects/person"


async def test_a_match_task_triggers_only_once_its_one_person_is_found(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: Any,
    tmp_path: Path,
) -> None:
    lance, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url, sink[1]))
    person = lance.directory.people[3]
    twin = twin_of(lance)
    tasks = [
        {"match": {"linkedinUrl": person.linkedin_url.upper() + "/"}, "field": "emails"},
        {"match": {"linkedinUrl": twin.linkedin_url}, "field": "emails"},
        {"match": {"linkedinUrl": "linkedin.com/in/nobody-here"}, "field": "phones"},
        {"entityId": str(uuid.uuid4()), "field": "phones"},
    ]

    response = await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())

    assert response.status == 202, await response.text()
    answer = await response.json()
    assert len(answer["enrichments"]) == 1
    assert [(m["task"], m["state"]) for m in answer["matching"]] == [
        (0, "matching"),
        (1, "matching"),
        (2, "matching"),
    ]
    report = await jobs_of(client).matcher.run_once()
    assert (report.searches, report.matched, report.ambiguous, report.unmatched) == (3, 1, 1, 1)
    await drain(client)
    charged = {entity for _, entity, _ in lance.charges}
    assert person.id in charged
    assert twin.id not in charged
    assert len(charged) == 2  # the match, and the task that named its entityId
    states = collections.Counter(row["state"] for row in await inbound(client))
    assert states == {"matched": 1, "ambiguous": 1, "unmatched": 1}
    scraped = await (await client.get("/metrics", headers=auth())).text()
    for outcome, n in (("matched", 1), ("ambiguous", 1), ("unmatched", 1), ("error", 0)):
        assert f'lance_bridge_person_searches_total{{outcome="{outcome}"}} {n}.0' in scraped


async def test_write_back_false_enriches_without_writing_the_id(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance, lance_url = simulator
    sandbox, hubspot_url = hubspot
    settings = hubspot_settings(tmp_path, lance_url, hubspot_url, contacts={"write_back": False})
    client = await make_bridge(settings)
    person = lance.directory.people[5]
    contact = sandbox.add_record("contacts", {"hs_linkedin_url": person.linkedin_url})

    await post_events(client, [hs.creation(int(contact), clock=clock)], clock)
    await drain(client)

    record = sandbox.record("contacts", contact)
    assert not record.get("lance_person_id")
    assert record["email"]
    [event] = await inbound(client, "matched")
    assert event["entityId"] == person.id


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"match": {"linkedinUrl": "https://example.com/in/x"}}, "not a linkedin.com address"),
        ({"match": {"fullName": "Ada Lovelace"}}, "both fullName and company"),
        (
            {"match": {"linkedinUrl": "linkedin.com/in/ada"}, "entityId": str(uuid.uuid4())},
            "exactly one",
        ),
        ({}, "exactly one"),
        ({"match": {"linkedinUrl": "linkedin.com/in/ada"}, "mode": "track"}, "a match finds"),
    ],
)
async def test_a_bad_match_task_is_a_422_and_stores_nothing(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    tmp_path: Path,
    task: dict[str, Any],
    message: str,
) -> None:
    client = await make_bridge(make_settings(tmp_path, simulator[1]))
    body = {
        "tasks": [{"entityId": str(uuid.uuid4()), "field": "emails"}, task | {"field": "emails"}]
    }

    response = await client.post("/v1/triggers", json=body, headers=auth())

    assert response.status == 422
    assert message in (await response.json())["error"]["message"]
    assert await inbound(client) == []
    assert (await client.get("/v1/enrichments", headers=auth())).status == 200
    page = await (await client.get("/v1/enrichments", headers=auth())).json()
    assert page["enrichments"] == []


async def test_a_manual_trigger_with_an_entity_id_settles_an_ambiguous_contact(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance, lance_url = simulator
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, lance_url, hubspot_url))
    twin = twin_of(lance)
    contact = sandbox.add_record("contacts", {"hs_linkedin_url": twin.linkedin_url})
    await post_events(client, [hs.creation(int(contact), clock=clock)], clock)
    await jobs_of(client).resolver.run_once()
    await jobs_of(client).matcher.run_once()
    [event] = await inbound(client, "ambiguous")
    assert twin.id in event["candidates"]
    assert lance.requests[TRIGGER] == 0

    target = {"connector": "hubspot", "objectType": "contacts", "objectId": contact}
    task = {"entityId": twin.id, "field": "emails", "targets": [target]}
    response = await client.post("/v1/triggers", json={"tasks": [task]}, headers=auth())

    assert response.status == 202
    [settled] = await inbound(client, "matched")
    assert (settled["objectId"], settled["entityId"]) == (contact, twin.id)
    assert "manual trigger" in settled["reason"]
    await drain(client)
    assert lance.requests[TRIGGER] == 1


# -- a person search that fails ----------------------------------------------------------------

GOOD = str(uuid.uuid4())


def _answer(slug: str) -> web.Response:
    """What the fake Lance answers for a profile slug (the remote side only)."""
    person = {"id": GOOD, "linkedinUrl": f"https://www.linkedin.com/in/{slug}"}
    answers: dict[str, tuple[int, Any]] = {
        "refused-400": (400, {"error": "VALIDATION_ERROR", "message": "bad filter"}),
        "token-401": (401, {"error": "UNAUTHORIZED", "message": "no"}),
        "throttled-429": (429, {"error": "RATE_LIMITED", "message": "slow down"}),
        "broken-500": (500, {"error": "INTERNAL_ERROR", "message": "oops"}),
        "malformed-page": (200, {"content": "not a list"}),
        "candidate-without-id": (200, {"content": [{"fullName": "X"}], "totalElements": 1}),
    }
    status, body = answers.get(slug, (200, {"content": [person], "totalElements": 1}))
    headers = {"Retry-After": "120"} if status == 429 else {}
    return web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def failing_lance() -> AsyncIterator[str]:
    async def search(request: web.Request) -> web.Response:
        body = await request.json()
        url = body["contact"]["socialMediaLink"]["any"]["include"][0]
        return _answer(url.rstrip("/").rsplit("/", 1)[-1])

    app = web.Application()
    app.router.add_post(SEARCH, search)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield _http.base_url(runner)
    await runner.cleanup()


async def test_each_failed_search_leaves_a_reason_and_the_rest_of_the_batch_goes_on(
    make_bridge: BridgeFactory, failing_lance: str, tmp_path: Path, clock: Clock
) -> None:
    client = await make_bridge(make_settings(tmp_path, failing_lance, "http://127.0.0.1:9"))
    slugs = [
        "refused-400",
        "token-401",
        "throttled-429",
        "broken-500",
        "malformed-page",
        "candidate-without-id",
        "found-fine",
    ]
    tasks = [{"match": {"linkedinUrl": f"linkedin.com/in/{s}"}, "field": "emails"} for s in slugs]
    response = await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    assert response.status == 202

    report = await jobs_of(client).matcher.run_once()

    assert report.searches == len(slugs)
    rows = {row["matchKey"].rsplit("/", 1)[-1]: row for row in await inbound(client)}
    expect = {
        "refused-400": ("unmatched", "Lance refused the search"),
        "token-401": ("matching", "Lance token rejected"),
        "throttled-429": ("matching", "HTTP 429"),
        "broken-500": ("matching", "HTTP 500"),
        "malformed-page": ("matching", "unexpected person search answer"),
        "candidate-without-id": ("unmatched", "without a usable id"),
        "found-fine": ("matched", None),
    }
    for slug, (state, reason) in expect.items():
        assert rows[slug]["state"] == state, slug
        if reason is None:
            assert rows[slug]["reason"] is None
        else:
            assert reason in rows[slug]["reason"], (slug, rows[slug]["reason"])
    [row] = await client.app[runtime.BRIDGE].ledger.fetch("SELECT count(*) FROM enrichments")
    assert tuple(row) == (1,)  # only the one found person is queued
    # Failed searches wait (429: its Retry-After) before they are asked again.
    assert (await jobs_of(client).matcher.run_once()).searches == 0
    clock.advance(61)
    assert (await jobs_of(client).matcher.run_once()).searches == 3  # 401, 500, malformed
    clock.advance(60)
    assert (await jobs_of(client).matcher.run_once()).searches == 4  # and now the 429 too


@pytest.mark.parametrize("match_by", [["linkedin"], ["linkedin", "name_company"]])
async def test_name_and_company_are_searched_only_when_match_by_names_them(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    clock: Clock,
    match_by: list[str],
) -> None:
    lance, lance_url = simulator
    sandbox, hubspot_url = hubspot
    contacts = {"match_by": match_by}
    client = await make_bridge(
        hubspot_settings(tmp_path, lance_url, hubspot_url, contacts=contacts)
    )
    names = collections.Counter((p.full_name, p.company_name) for p in lance.directory.people)
    person = next(p for p in lance.directory.people if names[(p.full_name, p.company_name)] == 1)
    first, _, last = person.full_name.partition(" ")
    fields = {"firstname": first, "lastname": last, "company": person.company_name.upper()}
    contact = sandbox.add_record("contacts", fields)

    await post_events(client, [hs.creation(int(contact), clock=clock)], clock)
    await jobs_of(client).resolver.run_once()
    report = await jobs_of(client).matcher.run_once()

    if match_by == ["linkedin"]:
        assert report.searches == 0
        [event] = await inbound(client, "skipped")
        assert event["reason"] == f"no lance_person_id on contacts {contact}"
        return
    assert (report.searches, report.matched) == (1, 1)
    assert lance.searches["fullName"] == lance.searches["company.current"] == 1
    assert sandbox.record("contacts", contact)["lance_person_id"] == person.id


async def test_a_match_task_by_name_and_company_finds_its_person(
    make_bridge: BridgeFactory, simulator: tuple[sim.LanceSimulator, str], tmp_path: Path
) -> None:
    lance, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url))
    names = collections.Counter((p.full_name, p.company_name) for p in lance.directory.people)
    person = next(p for p in lance.directory.people if names[(p.full_name, p.company_name)] == 1)
    match = {"fullName": f" {person.full_name.lower()} ", "company": person.company_name}

    response = await client.post(
        "/v1/triggers", json={"tasks": [{"match": match, "field": "phones"}]}, headers=auth()
    )
    report = await jobs_of(client).matcher.run_once()

    assert response.status == 202
    assert report.matched == 1
    [event] = await inbound(client, "matched")
    assert event["entityId"] == person.id
    assert event["matchKey"] == f"name:{person.full_name.lower()}\t{person.company_name.lower()}"


async def test_searches_keep_to_their_budget_and_the_rest_wait(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance, lance_url = simulator
    settings = make_settings(tmp_path, lance_url, match={"searches_per_minute": 2})
    client = await make_bridge(settings)
    people = lance.directory.people[7:12]
    tasks = [{"match": {"linkedinUrl": p.linkedin_url}, "field": "emails"} for p in people]
    await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    matcher = jobs_of(client).matcher

    first = await matcher.run_once()
    again = await matcher.run_once()
    clock.advance(30)
    half = await matcher.run_once()
    clock.advance(31)
    later = await matcher.run_once()

    assert (first.searches, first.deferred) == (2, 3)
    assert (again.searches, half.searches, later.searches) == (0, 0, 2)
    assert lance.searches["total"] == 4
    assert len(await inbound(client, "matching")) == 1

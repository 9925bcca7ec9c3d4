"""The simulator's person search over real loopback HTTP: validation, filters, the page shape."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.sim import lance

AUTH = {"Authorization": "Bearer sim-token"}
Client = TestClient[Any, Any]
PAGE_KEYS = {
    "content",
    "totalElements",
    "totalPages",
    "number",
    "size",
    "first",
    "last",
    "numberOfElements",
    "empty",
}


@pytest.fixture
async def sim_client(aiohttp_client: Any) -> tuple[lance.LanceSimulator, Client]:
    sim = lance.LanceSimulator(lance.SimConfig(seed=7))
    return sim, await aiohttp_client(sim.app)


async def search(
    client: Client, body: Any, headers: dict[str, str] | None = AUTH
) -> tuple[int, Any]:
    async with client.post(lance.SEARCH, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


def by_url(url: str, quantifier: str = "any") -> dict[str, Any]:
    return {"contact": {"socialMediaLink": {quantifier: {"include": [url]}}}}


def by_name(name: str, mode: str = "STRICT", company: str | None = None) -> dict[str, Any]:
    contact: dict[str, Any] = {"fullName": {"any": {"include": {"mode": mode, "content": [name]}}}}
    if company is not None:
        contact["company"] = {"current": {"any": {"include": [company]}}}
    return {"contact": contact, "size": 100}


def namesakes(sim: lance.LanceSimulator) -> tuple[str, int]:
    names = Counter(p.full_name for p in sim.directory.people)
    name, count = names.most_common(1)[0]
    return name, count


async def test_a_linkedin_url_finds_its_person_in_any_written_form(
    sim_client: tuple[lance.LanceSimulator, Client],
) -> None:
    sim, client = sim_client
    person = sim.directory.people[3]
    messy = person.linkedin_url.replace("https://www.", "http://uk.").upper() + "/?trk=x"
    status, page = await search(client, by_url(messy))
    assert status == 200, page
    assert [p["id"] for p in page["content"]] == [person.id]
    found = page["content"][0]
    assert found["linkedinUrl"] == person.linkedin_url
    assert found["company"]["name"] == person.company_name


async def test_some_linkedin_urls_match_several_people_and_unknown_ones_none(
    sim_client: tuple[lance.LanceSimulator, Client],
) -> None:
    sim, client = sim_client
    shared = Counter(p.linkedin_url for p in sim.directory.people)
    twin_url = next(url for url, n in shared.items() if n > 1)
    status, page = await search(client, by_url(twin_url))
    assert status == 200
    assert page["totalElements"] == 2
    status, page = await search(client, by_url("https://www.linkedin.com/in/nobody-here-123"))
    assert (status, page["totalElements"], page["content"], page["empty"]) == (200, 0, [], True)


async def test_a_full_name_finds_every_namesake_and_the_company_narrows_it(
    sim_client: tuple[lance.LanceSimulator, Client],
) -> None:
    sim, client = sim_client
    name, count = namesakes(sim)
    assert count > 1
    status, page = await search(client, by_name(name.upper()))
    assert status == 200
    assert page["totalElements"] == count
    assert {p["firstName"] + " " + p["lastName"] for p in page["content"]} == {name}
    first = next(p for p in sim.directory.people if p.full_name == name)
    same_company = [
        p
        for p in sim.directory.people
        if p.full_name == name and p.company_name == first.company_name
    ]
    status, page = await search(client, by_name(name, company=first.company_name.lower()))
    assert page["totalElements"] == len(same_company)
    assert first.id in {p["id"] for p in page["content"]}
    status, page = await search(client, by_name(name, company=first.company_domain))
    assert page["totalElements"] == len(same_company)


async def test_name_modes_strict_word_smart(
    sim_client: tuple[lance.LanceSimulator, Client],
) -> None:
    sim, client = sim_client
    name, count = namesakes(sim)
    first, last = name.split()
    surname_total = sum(1 for p in sim.directory.people if p.full_name.split()[1] == last)
    assert (await search(client, by_name(last, "STRICT")))[1]["totalElements"] == 0
    assert (await search(client, by_name(last, "WORD")))[1]["totalElements"] == surname_total
    assert (await search(client, by_name(f"{last} {first}", "WORD")))[1]["totalElements"] == count
    assert (await search(client, by_name(last[:3], "WORD")))[1]["totalElements"] == 0
    smart = (await search(client, by_name(f"{first[:2]} {last[:3]}", "SMART")))[1]
    assert smart["totalElements"] >= count
    assert (await search(client, by_name("Nobody Known", "SMART")))[1]["totalElements"] == 0


async def test_exclude_drops_people(sim_client: tuple[lance.LanceSimulator, Client]) -> None:
    sim, client = sim_client
    name, count = namesakes(sim)
    excluded = next(p for p in sim.directory.people if p.full_name == name)
    body = by_name(name)
    body["contact"]["socialMediaLink"] = {"any": {"exclude": [excluded.linkedin_url]}}
    status, page = await search(client, body)
    assert status == 200
    assert excluded.id not in {p["id"] for p in page["content"]}
    assert page["totalElements"] < count


async def test_pages_are_spring_pages(sim_client: tuple[lance.LanceSimulator, Client]) -> None:
    sim, client = sim_client
    total = len(sim.directory.people)
    status, page = await search(client, {})
    assert status == 200
    assert set(page) == PAGE_KEYS
    assert (page["size"], page["number"], page["numberOfElements"]) == (10, 0, 10)
    assert (page["totalElements"], page["totalPages"]) == (total, -(-total // 10))
    assert page["first"] is True
    assert page["last"] is False
    seen = set()
    for number in range(page["totalPages"]):
        status, part = await search(client, {"page": number, "size": 10})
        seen |= {p["id"] for p in part["content"]}
    assert len(seen) == total
    assert part["last"] is True
    status, beyond = await search(client, {"page": 999, "size": 100})
    assert (status, beyond["content"], beyond["number"]) == (200, [], 999)
    status, empty = await search(client, {"size": 0})
    assert (status, empty["content"], empty["size"], empty["totalPages"]) == (200, [], 0, 1)
    status, full = await search(client, {"size": 100})
    assert full["numberOfElements"] == 100


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"page": -1}, "page"),
        ({"page": "0"}, "page"),
        ({"page": True}, "page"),
        ({"size": 101}, "size"),
        ({"size": -1}, "size"),
        ({"size": 1.5}, "size"),
        ({"limit": 5}, "limit"),
        ({"contact": []}, "contact"),
        ({"account": 1}, "account"),
        ({"contact": {"email": {}}}, "contact.email"),
        ({"contact": {"socialMediaLink": {}}}, "contact.socialMediaLink"),
        ({"contact": {"socialMediaLink": {"some": {}}}}, "contact.socialMediaLink.some"),
        ({"contact": {"socialMediaLink": {"any": []}}}, "contact.socialMediaLink.any"),
        (
            {"contact": {"socialMediaLink": {"any": {"include": "x"}}}},
            "contact.socialMediaLink.any.include",
        ),
        (
            {"contact": {"socialMediaLink": {"any": {"include": [""]}}}},
            "contact.socialMediaLink.any.include",
        ),
        (
            {"contact": {"socialMediaLink": {"any": {"only": ["x"]}}}},
            "contact.socialMediaLink.any.only",
        ),
        (
            {"contact": {"fullName": {"any": {"include": {"mode": "FUZZY", "content": ["a"]}}}}},
            "contact.fullName.any.include.mode",
        ),
        (
            {"contact": {"fullName": {"any": {"include": {"mode": "WORD", "content": "a"}}}}},
            "contact.fullName.any.include.content",
        ),
        ({"contact": {"fullName": {"any": {"include": ["a"]}}}}, "contact.fullName.any.include"),
        ({"contact": {"company": {"past": {}}}}, "contact.company.past"),
        (
            {"contact": {"company": {"current": {"any": {"include": [3]}}}}},
            "contact.company.current.any.include",
        ),
        ({"contact": {"skill": "python"}}, "contact.skill"),
    ],
)
async def test_bad_bodies_are_a_400_naming_the_field(
    sim_client: tuple[lance.LanceSimulator, Client], body: Any, field: str
) -> None:
    sim, client = sim_client
    status, data = await search(client, body)
    assert status == 400
    assert data["error"] == "VALIDATION_ERROR"
    assert data["details"] == {"field": field}
    assert sim.stats()["searches"]["total"] == 0


async def test_not_json_is_a_400(sim_client: tuple[lance.LanceSimulator, Client]) -> None:
    _, client = sim_client
    async with client.post(lance.SEARCH, data=b"{nope", headers=AUTH) as resp:
        assert resp.status == 400
        assert (await resp.json())["details"] == {"field": "body"}


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer wrong"}])
async def test_a_missing_or_wrong_token_is_a_401(
    sim_client: tuple[lance.LanceSimulator, Client], headers: dict[str, str] | None
) -> None:
    sim, client = sim_client
    status, data = await search(client, {}, headers=headers)
    assert (status, data["error"]) == (401, "UNAUTHORIZED")
    assert sim.stats()["searches"]["total"] == 0


async def test_documented_filters_the_simulator_does_not_match_on_are_accepted(
    sim_client: tuple[lance.LanceSimulator, Client],
) -> None:
    sim, client = sim_client
    body = {
        "contact": {"skill": {"any": {"include": {"mode": "SMART", "content": ["x"]}}}},
        "account": {"industry": {"any": {"include": ["Software"]}}},
    }
    status, page = await search(client, body)
    assert (status, page["totalElements"]) == (200, len(sim.directory.people))


async def test_searches_are_counted_per_filter_kind(
    sim_client: tuple[lance.LanceSimulator, Client],
) -> None:
    sim, client = sim_client
    person = sim.directory.people[0]
    await search(client, by_url(person.linkedin_url))
    await search(client, by_url(person.linkedin_url))
    await search(client, by_name(person.full_name, company=person.company_name))
    await search(client, {})
    async with client.get("/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["searches"] == {
        "total": 4,
        "byFilter": {"company.current": 1, "fullName": 1, "none": 1, "socialMediaLink": 2},
    }
    assert stats["requests"][f"POST {lance.SEARCH}"] == 4


async def test_a_found_person_reads_the_same_through_the_get(
    sim_client: tuple[lance.LanceSimulator, Client],
) -> None:
    sim, client = sim_client
    shared = Counter(p.linkedin_url for p in sim.directory.people)
    twin = next(p for p in sim.directory.people if shared[p.linkedin_url] > 1)
    _, page = await search(client, by_url(twin.linkedin_url))
    async with client.get(lance.PERSON.replace("{id}", page["content"][-1]["id"])) as resp:
        got = await resp.json()
    assert got == page["content"][-1]

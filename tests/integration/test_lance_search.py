"""``LanceClient.search_people`` against the simulator (and a canned loopback server for the
answers the simulator never gives) over real HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bridge import errors, lance
from bridge.sim import lance as sim

SEARCH = "POST entities/prospects/person"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


class Served(sim.LanceSimulator):
    """The simulator and the base URL it is served at."""

    base = ""


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    lance_sim = Served(sim.SimConfig(seed=3))
    runner = await sim.serve(lance_sim)
    lance_sim.base = sim.base_url(runner)
    yield lance_sim
    await runner.cleanup()


def client_of(
    lance_sim: Served, session: aiohttp.ClientSession, token: str = "sim-token"
) -> lance.LanceClient:
    return lance.LanceClient(session, lance_sim.base, SecretStr(token), timeout_s=5.0)


async def test_a_linkedin_url_finds_one_person(
    served: Served, session: aiohttp.ClientSession
) -> None:
    client = client_of(served, session)
    person = served.directory.people[5]
    page = await client.search_people(linkedin_url=person.linkedin_url + "?trk=x")
    assert [p["id"] for p in page.people] == [person.id]
    assert (page.total, page.skipped) == (1, 0)
    assert page.people[0]["company"]["name"] == person.company_name
    assert client.requests == {SEARCH: 1}
    assert served.stats()["searches"]["byFilter"] == {"socialMediaLink": 1}


async def test_namesakes_come_back_together_and_the_company_narrows_them(
    served: Served, session: aiohttp.ClientSession
) -> None:
    client = client_of(served, session)
    name, count = Counter(p.full_name for p in served.directory.people).most_common(1)[0]
    page = await client.search_people(full_name=name, size=100)
    assert (len(page.people), page.total) == (count, count)
    one = next(p for p in served.directory.people if p.full_name == name)
    narrowed = await client.search_people(
        full_name=name, name_mode="WORD", company=one.company_name
    )
    assert one.id in {p["id"] for p in narrowed.people}
    assert narrowed.total is not None
    assert narrowed.total < count
    assert served.stats()["searches"]["byFilter"] == {"company.current": 1, "fullName": 2}


async def test_nobody_found_is_an_empty_page(
    served: Served, session: aiohttp.ClientSession
) -> None:
    page = await client_of(served, session).search_people(
        linkedin_url="https://www.linkedin.com/in/nobody-at-all-42"
    )
    assert (page.people, page.total, page.skipped) == ([], 0, 0)


async def test_page_and_size_are_sent(served: Served, session: aiohttp.ClientSession) -> None:
    client = client_of(served, session)
    first = await client.search_people(company=served.directory.people[0].company_name, size=1)
    second = await client.search_people(
        company=served.directory.people[0].company_name, page=1, size=1
    )
    assert first.total == second.total
    assert first.total is not None
    assert first.total > 1
    assert first.people[0]["id"] != second.people[0]["id"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"linkedin_url": "  "},
        {"full_name": ""},
        {"company": " "},
        {"full_name": "Ada Lovelace", "name_mode": "FUZZY"},
        {"full_name": "Ada Lovelace", "size": 101},
        {"full_name": "Ada Lovelace", "size": -1},
        {"full_name": "Ada Lovelace", "page": -1},
        {"full_name": "Ada Lovelace", "page": True},
    ],
)
async def test_bad_arguments_are_refused_without_a_request(
    served: Served, session: aiohttp.ClientSession, kwargs: dict[str, Any]
) -> None:
    client = client_of(served, session)
    with pytest.raises(ValueError, match=r"."):
        await client.search_people(**kwargs)
    assert not client.requests
    assert served.stats()["searches"]["total"] == 0


async def test_a_wrong_token_is_an_auth_error(
    served: Served, session: aiohttp.ClientSession
) -> None:
    client = client_of(served, session, token="wrong")
    with pytest.raises(errors.LanceAuthError) as caught:
        await client.search_people(full_name="Ada Lovelace")
    assert (caught.value.status, caught.value.code) == (401, "UNAUTHORIZED")
    assert "wrong" not in str(caught.value)


async def test_throttling_and_server_errors_are_retryable(
    served: Served, session: aiohttp.ClientSession
) -> None:
    client = client_of(served, session)
    served.set_faults(throttle_rate=1.0, retry_after_s=17)
    with pytest.raises(errors.LanceRetryableError) as throttled:
        await client.search_people(full_name="Ada Lovelace")
    assert (throttled.value.status, throttled.value.retry_after_s) == (429, 17.0)
    served.set_faults(throttle_rate=0.0, fail_rate=1.0)
    with pytest.raises(errors.LanceRetryableError) as failed:
        await client.search_people(full_name="Ada Lovelace")
    assert (failed.value.status, failed.value.code) == (500, "INTERNAL_ERROR")
    assert client.statuses[(SEARCH, "429")] == 1
    assert client.statuses[(SEARCH, "500")] == 1


# -- answers the simulator never gives: a canned Lance on loopback ----------------------------


async def canned(aiohttp_server: Any, status: int, body: Any) -> str:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/api/v1/entities/prospects/person", answer)
    server = await aiohttp_server(app)
    return str(server.make_url(""))


async def test_a_validation_error_is_permanent(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    base = await canned(
        aiohttp_server,
        400,
        {"error": "VALIDATION_ERROR", "message": "size must be between 0 and 100"},
    )
    client = lance.LanceClient(session, base, SecretStr("t"))
    with pytest.raises(errors.LancePermanentError) as caught:
        await client.search_people(full_name="Ada Lovelace")
    assert (caught.value.status, caught.value.code) == (400, "VALIDATION_ERROR")
    assert not isinstance(caught.value, errors.LanceRetryableError)


async def test_unknown_keys_are_ignored_and_candidates_without_an_id_skipped(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> None:
    good = {"id": "0b6f6c3a-1c8e-4b8e-9a51-2f0c1d9e7a10", "firstName": "Ada", "novel": [1]}
    body = {
        "content": [good, {"firstName": "No Id"}, {"id": ""}, {"id": 7}, "junk", None],
        "totalElements": 6,
        "pageable": {"pageNumber": 0},
        "sort": {"sorted": False},
        "somethingNew": True,
    }
    base = await canned(aiohttp_server, 200, body)
    page = await lance.LanceClient(session, base, SecretStr("t")).search_people(full_name="Ada")
    assert page.people == [good]
    assert (page.total, page.skipped) == (6, 5)


@pytest.mark.parametrize(
    ("body", "total"),
    [
        ({"content": [], "totalElements": "many"}, None),
        ({"content": [], "totalElements": True}, None),
        ({"content": []}, None),
        ([{"id": "a"}], None),
    ],
)
async def test_odd_totals_and_a_bare_array_are_tolerated(
    aiohttp_server: Any, session: aiohttp.ClientSession, body: Any, total: int | None
) -> None:
    base = await canned(aiohttp_server, 200, body)
    page = await lance.LanceClient(session, base, SecretStr("t")).search_people(full_name="Ada")
    assert page.total == total


@pytest.mark.parametrize("body", [{"items": []}, {"content": {}}, "text", 3])
async def test_an_answer_that_is_no_page_is_retryable(
    aiohttp_server: Any, session: aiohttp.ClientSession, body: Any
) -> None:
    base = await canned(aiohttp_server, 200, body)
    with pytest.raises(errors.LanceRetryableError, match="person search"):
        await lance.LanceClient(session, base, SecretStr("t")).search_people(full_name="Ada")

"""The real ``LanceClient`` against the bundled simulator over loopback.

Each test talks HTTP to ``bridge.sim.lance`` (the ``simulator`` fixture); faults are injected
at rate 1.0 so every request fails the same way, with no sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from pydantic import SecretStr

from bridge import errors, lance
from bridge.sim import lance as sim

Simulator = tuple[sim.LanceSimulator, str]
ClientFactory = Callable[..., lance.LanceClient]

TRIGGER = "POST enrichment/batch"
TRIGGER_ONE = "POST enrichment/{personId}"
QUERY = "POST enrichment/batch/query"
PERSON = "GET entities/prospects/person/{id}"
COMPANY = "GET entities/prospects/company/{id}"
BALANCE = "GET credits/balance"
SIM_TRIGGER = f"POST {sim.BATCH}"
SIM_QUERY = f"POST {sim.QUERY}"


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def make_client(simulator: Simulator, session: aiohttp.ClientSession) -> ClientFactory:
    """A client of the simulator; pass ``token=`` to present another token."""
    lance_sim, base_url = simulator

    def factory(token: str | None = None) -> lance.LanceClient:
        secret = SecretStr(lance_sim.config.token if token is None else token)
        return lance.LanceClient(session, base_url, secret, timeout_s=5.0)

    return factory


@pytest.fixture
def client(make_client: ClientFactory) -> lance.LanceClient:
    return make_client()


# -- the happy paths -------------------------------------------------------------------------


async def test_trigger_batch_returns_one_pending_record_per_person(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    people = _ids(3)

    records = await client.trigger_batch("emails", people)

    assert sorted(r["entityId"] for r in records) == sorted(people)
    assert all(r["status"] == "pending" and r["field"] == "emails" for r in records)
    assert all(r.get("id") for r in records)
    assert "orgId" in records[0], "unknown keys are kept as Lance sent them"
    assert client.requests == {TRIGGER: 1}
    assert lance_sim.requests[SIM_TRIGGER] == 1
    assert sum(lance_sim.charges.values()) == 3


async def test_trigger_batch_reads_the_wrapped_answer_too(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    lance_sim.config.wrap_trigger_response = True
    people = _ids(2)
    records = await client.trigger_batch("phones", people)
    assert sorted(r["entityId"] for r in records) == sorted(people)


async def test_a_second_trigger_reuses_the_record_and_costs_nothing(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    [person] = _ids(1)
    [first] = await client.trigger_batch("emails", [person])
    [again] = await client.trigger_batch("emails", [person])
    assert again["id"] == first["id"]
    assert lance_sim.charges[("person", person, "emails")] == 1


async def test_trigger_one(client: lance.LanceClient) -> None:
    [person] = _ids(1)
    record = await client.trigger_one(person, "phones")
    assert (record["entityId"], record["field"], record["status"]) == (person, "phones", "pending")
    assert client.requests == {TRIGGER_ONE: 1}


@pytest.mark.parametrize("count", [0, lance.TRIGGER_BATCH_MAX + 1])
async def test_trigger_batch_refuses_a_wrong_size_without_a_request(
    client: lance.LanceClient, simulator: Simulator, count: int
) -> None:
    with pytest.raises(ValueError, match="1-100"):
        await client.trigger_batch("emails", _ids(count))
    assert not client.requests
    assert not simulator[0].requests


async def test_query_matches_by_key_and_omitted_tasks_mean_no_record(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    people = _ids(3)
    await client.trigger_batch("emails", people)
    company = str(uuid.uuid4())
    lance_sim.start_enrichment(company, "summary", "company", outcome="not_found", completion_s=0)
    unknown = str(uuid.uuid4())
    # Ask in an order unlike the answer's, with a key the simulator has no record for, a
    # person asked for a field it was not triggered for, and one key twice.
    keys = [
        ("person", unknown, "emails"),
        ("company", company, "summary"),
        *(("person", p, "emails") for p in reversed(people)),
        ("person", people[0], "phones"),
        ("person", people[1], "emails"),
    ]

    found = await client.query(keys)

    assert set(found) == {
        ("company", company, "summary"),
        *(("person", p, "emails") for p in people),
    }
    for key, record in found.items():
        assert lance.key_of(record) == key
    assert found[("company", company, "summary")]["dataFound"] is False
    assert all(found[("person", p, "emails")]["status"] == "finished" for p in people)
    assert client.requests == {TRIGGER: 1, QUERY: 1}


async def test_query_defaults_a_missing_entity_type_to_person(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    # A faithful Lance may omit entityType on person records; key_of fills it in.
    [person] = _ids(1)
    await client.trigger_batch("emails", [person])
    found = await client.query([("person", person, "emails")])
    [record] = found.values()
    assert lance.key_of({k: v for k, v in record.items() if k != "entityType"}) == (
        "person",
        person,
        "emails",
    )


@pytest.mark.parametrize("count", [0, lance.QUERY_BATCH_MAX + 1])
async def test_query_refuses_a_wrong_size_without_a_request(
    client: lance.LanceClient, count: int
) -> None:
    with pytest.raises(ValueError, match="1-200"):
        await client.query(("person", p, "emails") for p in _ids(count))
    assert not client.requests


async def test_query_takes_a_full_batch_in_one_request(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    people = _ids(lance.QUERY_BATCH_MAX)
    for start in range(0, len(people), lance.TRIGGER_BATCH_MAX):
        await client.trigger_batch("emails", people[start : start + lance.TRIGGER_BATCH_MAX])
    found = await client.query(("person", p, "emails") for p in people)
    assert len(found) == lance.QUERY_BATCH_MAX
    assert simulator[0].requests[SIM_QUERY] == 1


async def test_entity_reads_person_and_company(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    [person] = _ids(1)
    await client.trigger_batch("emails", [person])
    await client.query([("person", person, "emails")])  # finished: the values are now visible

    found = await client.entity("person", person)
    assert found is not None
    assert found["id"] == person
    assert found["emails"], "a found enrichment shows its values"
    company = await client.entity("company", str(found["companyId"]))
    assert company is not None
    assert company["id"] == found["companyId"]
    assert client.requests[PERSON] == 1
    assert client.requests[COMPANY] == 1


async def test_entity_is_none_when_lance_has_no_such_entity(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    [missing] = _ids(1)
    lance_sim.config.unknown_entities.add(missing)
    assert await client.entity("person", missing) is None
    assert await client.entity("company", missing) is None


async def test_entity_with_a_malformed_id_is_a_permanent_error(client: lance.LanceClient) -> None:
    with pytest.raises(errors.LancePermanentError) as caught:
        await client.entity("person", "not-a-uuid")
    assert caught.value.status == 400


async def test_balance_reports_credits_left(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    before = await client.balance()
    assert before == lance_sim.config.credits
    await client.trigger_batch("phones", _ids(2))
    cost = lance_sim.config.cost_per_field["phones"]
    assert await client.balance() == before - 2 * cost
    assert client.requests[BALANCE] == 2


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["wrong-token", ""])
async def test_a_wrong_token_is_an_auth_error(
    make_client: ClientFactory, simulator: Simulator, token: str
) -> None:
    lance_sim, _ = simulator
    client = make_client(token)
    with pytest.raises(errors.LanceAuthError) as trigger:
        await client.trigger_batch("emails", _ids(1))
    with pytest.raises(errors.LanceAuthError) as query:
        await client.query([("person", str(uuid.uuid4()), "emails")])
    assert trigger.value.status == query.value.status == 401
    assert "LANCE_BRIDGE_LANCE__TOKEN" in trigger.value.message
    assert "wrong-token" not in trigger.value.message
    assert not lance_sim.charges


async def test_balance_with_a_wrong_token_is_the_documented_400(make_client: ClientFactory) -> None:
    # reference/lance-api.md §6: the balance endpoint answers 400 VALIDATION_ERROR, not 401;
    # the client still reports it as a rejected token, which is what the user must fix.
    with pytest.raises(errors.LanceAuthError) as caught:
        await make_client("wrong-token").balance()
    assert (caught.value.status, caught.value.code) == (400, "VALIDATION_ERROR")
    assert "not authenticated" in caught.value.message
    assert "lance.token" in caught.value.message


@pytest.mark.parametrize("sim_config", [sim.SimConfig(credits=3, seed=7)])
async def test_too_few_credits_is_a_credits_error_and_charges_nothing(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    with pytest.raises(errors.LanceCreditsError) as caught:
        await client.trigger_batch("emails", _ids(4))
    assert (caught.value.status, caught.value.code) == (402, "INSUFFICIENT_CREDITS")
    assert "4 credits required, 3 available" in caught.value.message
    assert await client.balance() == 3
    assert not lance_sim.charges


async def test_a_server_error_is_retryable(client: lance.LanceClient, simulator: Simulator) -> None:
    lance_sim, _ = simulator
    lance_sim.set_faults(fail_rate=1.0)
    with pytest.raises(errors.LanceRetryableError) as caught:
        await client.query([("person", str(uuid.uuid4()), "emails")])
    assert (caught.value.status, caught.value.code) == (500, "INTERNAL_ERROR")
    assert caught.value.retry_after_s is None
    assert lance_sim.statuses[(SIM_QUERY, 500)] == 1


async def test_throttling_is_retryable_with_retry_after(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    lance_sim.set_faults(throttle_rate=1.0, retry_after_s=42)
    with pytest.raises(errors.LanceRetryableError) as caught:
        await client.trigger_batch("emails", _ids(1))
    assert (caught.value.status, caught.value.code) == (429, "RATE_LIMITED")
    assert caught.value.retry_after_s == 42.0
    assert not lance_sim.charges, "a throttled trigger is not executed"


async def test_a_dropped_connection_is_retryable(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    lance_sim.set_faults(drop_rate=1.0)
    with pytest.raises(errors.LanceRetryableError) as caught:
        await client.query([("person", str(uuid.uuid4()), "emails")])
    assert caught.value.status is None
    assert caught.value.message.startswith(QUERY)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert lance_sim.statuses[(SIM_QUERY, 0)] == lance_sim.requests[SIM_QUERY] == 1


async def test_the_client_works_again_once_faults_stop(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    for fault in ("fail_rate", "throttle_rate", "drop_rate"):
        lance_sim.set_faults(**{fault: 1.0})
        with pytest.raises(errors.LanceRetryableError):
            await client.balance()
        lance_sim.set_faults(**{fault: 0.0})
    assert await client.balance() == lance_sim.config.credits


async def test_an_unreachable_lance_is_retryable(session: aiohttp.ClientSession) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    client = lance.LanceClient(session, "http://127.0.0.1:9", SecretStr("t"), timeout_s=5.0)
    with pytest.raises(errors.LanceRetryableError) as caught:
        await client.balance()
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectionError)


async def test_requests_are_counted_per_endpoint_faults_included(
    client: lance.LanceClient, simulator: Simulator
) -> None:
    lance_sim, _ = simulator
    people = _ids(2)
    await client.trigger_batch("emails", people)
    await client.query(("person", p, "emails") for p in people)
    await client.query(("person", p, "emails") for p in people)
    await client.entity("person", people[0])
    lance_sim.set_faults(fail_rate=1.0)
    with pytest.raises(errors.LanceRetryableError):
        await client.balance()

    assert client.requests == {TRIGGER: 1, QUERY: 2, PERSON: 1, BALANCE: 1}
    assert lance_sim.requests[SIM_TRIGGER] == 1
    assert lance_sim.requests[SIM_QUERY] == 2


async def test_repr_shows_the_endpoint_but_never_the_token(session: aiohttp.ClientSession) -> None:
    client = lance.LanceClient(session, "http://lance.example/", SecretStr("tok-never-shown"))
    assert repr(client) == "<LanceClient http://lance.example/api/v1>"

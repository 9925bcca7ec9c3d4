"""The Lance simulator over real loopback HTTP: documented limits, credits, lazy state, faults."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bridge.sim import lance
from bridge.sim.lance import state as lance_state

AUTH = {"Authorization": "Bearer sim-token"}
BATCH_KEY = f"POST {lance.BATCH}"
ENRICHMENT_KEYS = {
    "id",
    "createdAt",
    "updatedAt",
    "entityId",
    "entityType",
    "field",
    "status",
    "error",
    "dataFound",
    "createdBy",
    "orgId",
    "globalEnrichmentId",
    "creditTransactionId",
}
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def pid(n: int) -> str:
    """A deterministic UUID v4."""
    return str(uuid.UUID(int=n, version=4))


A, B, C = pid(1), pid(2), pid(3)
V1_UUID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"  # the docs' own batch example: not v4


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Client = TestClient[Any, Any]
Make = Callable[..., Awaitable[tuple[lance.LanceSimulator, Client]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(aiohttp_client: Any, clock: FakeClock) -> Make:
    async def make(**overrides: Any) -> tuple[lance.LanceSimulator, Client]:
        overrides.setdefault("outcomes", {"found": 1.0})
        overrides.setdefault("completion_s", (10.0, 10.0))
        sim = lance.LanceSimulator(lance.SimConfig(seed=1, clock=clock, **overrides))
        return sim, await aiohttp_client(sim.app)

    return make


async def call(
    client: Client,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = AUTH,
) -> tuple[int, Any, Any]:
    kwargs: dict[str, Any] = {"headers": headers}
    if raw is not None:
        kwargs["data"] = raw
    elif body is not None:
        kwargs["json"] = body
    async with client.request(method, path, **kwargs) as resp:
        data = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data, resp.headers


async def trigger(client: Client, ids: list[str], field: str = "emails") -> list[dict[str, Any]]:
    status, data, _ = await call(client, "POST", lance.BATCH, {"personIds": ids, "field": field})
    assert status == 200, data
    return list(data)


async def query(client: Client, *tasks: dict[str, str]) -> list[dict[str, Any]]:
    status, data, _ = await call(client, "POST", lance.QUERY, {"tasks": list(tasks)})
    assert status == 200, data
    return list(data)


def task(entity_id: str, field: str = "emails", entity_type: str | None = None) -> dict[str, str]:
    out = {"entityId": entity_id, "field": field}
    if entity_type:
        out["entityType"] = entity_type
    return out


def person_path(person_id: str) -> str:
    return lance.PERSON.replace("{id}", person_id)


def company_path(company_id: str) -> str:
    return lance.COMPANY.replace("{id}", company_id)


def single_path(person_id: str, field: str | None = "emails") -> str:
    path = lance.SINGLE.replace("{personId}", person_id)
    return path if field is None else f"{path}?field={field}"


def ids(n: int) -> list[str]:
    return [pid(i) for i in range(1, n + 1)]


VALIDATION_CASES: list[tuple[str, str, Any, bytes | None, str]] = [
    ("POST", lance.BATCH, None, b"{not json", "body"),
    ("POST", lance.BATCH, [A], None, "body"),
    ("POST", lance.BATCH, {"field": "emails"}, None, "personIds"),
    ("POST", lance.BATCH, {"personIds": [], "field": "emails"}, None, "personIds"),
    ("POST", lance.BATCH, {"personIds": ids(101), "field": "emails"}, None, "personIds"),
    ("POST", lance.BATCH, {"personIds": A, "field": "emails"}, None, "personIds"),
    ("POST", lance.BATCH, {"personIds": ["nope"], "field": "emails"}, None, "personIds[0]"),
    ("POST", lance.BATCH, {"personIds": [A, V1_UUID], "field": "emails"}, None, "personIds[1]"),
    ("POST", lance.BATCH, {"personIds": [7], "field": "emails"}, None, "personIds[0]"),
    ("POST", lance.BATCH, {"personIds": [A], "field": "summary"}, None, "field"),
    ("POST", lance.BATCH, {"personIds": [A]}, None, "field"),
    ("POST", lance.BATCH, {"personIds": [A], "field": ["emails"]}, None, "field"),
    ("POST", lance.QUERY, None, b"", "body"),
    ("POST", lance.QUERY, {}, None, "tasks"),
    ("POST", lance.QUERY, {"tasks": []}, None, "tasks"),
    ("POST", lance.QUERY, {"tasks": [task(A)] * 201}, None, "tasks"),
    ("POST", lance.QUERY, {"tasks": {"entityId": A}}, None, "tasks"),
    ("POST", lance.QUERY, {"tasks": [5]}, None, "tasks[0]"),
    ("POST", lance.QUERY, {"tasks": [task("x")]}, None, "tasks[0].entityId"),
    ("POST", lance.QUERY, {"tasks": [{"field": "emails"}]}, None, "tasks[0].entityId"),
    ("POST", lance.QUERY, {"tasks": [task(A), task(A, "names")]}, None, "tasks[1].field"),
    ("POST", lance.QUERY, {"tasks": [task(A, "emails", "org")]}, None, "tasks[0].entityType"),
    (
        "POST",
        lance.QUERY,
        {"tasks": [{**task(A), "entityType": None}]},
        None,
        "tasks[0].entityType",
    ),
    ("POST", single_path("nope"), None, None, "personId"),
    ("POST", single_path(A, "summary"), None, None, "field"),
    ("POST", single_path(A, None), None, None, "field"),
    ("GET", single_path(A, None), None, None, "field"),
    ("GET", person_path("not-a-uuid"), None, None, "id"),
    ("GET", company_path("123"), None, None, "id"),
]


@pytest.mark.parametrize(("method", "path", "body", "raw", "field"), VALIDATION_CASES)
async def test_validation_errors_answer_400_with_the_envelope(
    make: Make, method: str, path: str, body: Any, raw: bytes | None, field: str
) -> None:
    sim, client = await make()
    status, data, _ = await call(client, method, path, body, raw=raw)
    assert status == 400
    assert data["error"] == "VALIDATION_ERROR"
    assert data["details"] == {"field": field}
    assert isinstance(data["message"], str)
    assert data["message"]
    assert sim.credits_charged == 0
    assert sim.stats()["records"] == {"total": 0, "byStatus": {}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tasks": []}, "tasks must contain between 1 and 200 items"),
        ({"personIds": [], "field": "emails"}, "personIds must contain between 1 and 100 items"),
    ],
)
async def test_size_limit_messages(make: Make, body: dict[str, Any], message: str) -> None:
    _, client = await make()
    path = lance.QUERY if "tasks" in body else lance.BATCH
    _, data, _ = await call(client, "POST", path, body)
    assert data["message"] == message


async def test_limits_themselves_are_accepted(make: Make) -> None:
    _, client = await make()
    assert len(await trigger(client, ids(100))) == 100
    assert len(await query(client, *[task(pid(i)) for i in range(1, 201)])) == 100


AUTH_CASES = [
    ("POST", lance.BATCH, {"personIds": [A], "field": "emails"}, 401, "VALIDATION_ERROR"),
    ("POST", single_path(A), None, 401, "VALIDATION_ERROR"),
    ("GET", single_path(A), None, 401, "VALIDATION_ERROR"),
    ("POST", lance.QUERY, {"tasks": [task(A)]}, 401, "UNAUTHORIZED"),
    # The credits page documents 400 VALIDATION_ERROR for an unauthenticated user.
    ("GET", lance.BALANCE, None, 400, "VALIDATION_ERROR"),
]
BAD_HEADERS = [None, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic sim-token"}]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), AUTH_CASES)
@pytest.mark.parametrize("headers", BAD_HEADERS)
async def test_missing_or_wrong_token_is_rejected_without_side_effects(
    make: Make,
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
    headers: dict[str, str] | None,
) -> None:
    sim, client = await make()
    got, data, _ = await call(client, method, path, body, headers=headers)
    assert (got, data["error"]) == (status, code)
    assert sim.credits_charged == 0
    assert sim.record("person", A, "emails") is None


@pytest.mark.parametrize("headers", [None, {"Authorization": "Bearer whatever"}, AUTH])
async def test_entity_gets_need_no_auth_but_accept_the_header(
    make: Make, headers: dict[str, str] | None
) -> None:
    _, client = await make()
    for path in (person_path(A), company_path(B)):
        status, data, _ = await call(client, "GET", path, headers=headers)
        assert status == 200
        assert data["id"] in (A, B)


async def test_insufficient_credits_is_402_and_changes_nothing(make: Make) -> None:
    sim, client = await make(credits=3)
    status, data, _ = await call(
        client, "POST", lance.BATCH, {"personIds": ids(4), "field": "emails"}
    )
    assert (status, data["error"]) == (402, "INSUFFICIENT_CREDITS")
    assert data["details"] == {"required": 4, "balance": 3}
    assert await query(client, *[task(i) for i in ids(4)]) == []
    _, balance, _ = await call(client, "GET", lance.BALANCE)
    assert balance == {"balance": 3, "organizationId": "org_sim"}
    assert (sim.credits_charged, sim.charges) == (0, {})


async def test_credits_are_checked_for_new_records_only(make: Make) -> None:
    sim, client = await make(credits=3)
    await trigger(client, ids(3))
    assert sim.balance == 0
    assert len(await trigger(client, ids(3))) == 3  # all reused: free, so allowed at 0
    status, data, _ = await call(
        client, "POST", lance.BATCH, {"personIds": ids(4), "field": "emails"}
    )
    assert (status, data["details"]) == (402, {"required": 1, "balance": 0})


async def test_reused_pending_and_finished_records_are_not_charged(
    make: Make, clock: FakeClock
) -> None:
    sim, client = await make()
    first = await trigger(client, [A, B], "phones")
    assert sim.credits_charged == 4  # phones cost 2
    second = await trigger(client, [A, B, C], "phones")
    assert [r["id"] for r in second[:2]] == [r["id"] for r in first]
    assert second[2]["entityId"] == C
    assert sim.credits_charged == 6
    clock.advance(10)
    third = await trigger(client, [A], "phones")
    assert (third[0]["id"], third[0]["status"]) == (first[0]["id"], "finished")
    assert sim.credits_charged == 6
    assert set(sim.charges.values()) == {1}


@pytest.mark.parametrize("outcome", ["failed", "timeout", "cancelled"])
async def test_unsuccessful_records_are_recreated_and_charged_again(
    make: Make, clock: FakeClock, outcome: str
) -> None:
    sim, client = await make(outcomes={outcome: 1.0})
    (first,) = await trigger(client, [A])
    clock.advance(10)
    (done,) = await query(client, task(A))
    assert (done["id"], done["status"], done["dataFound"]) == (first["id"], outcome, None)
    assert done["error"] == (lance_state.FAILED_ERROR if outcome == "failed" else None)
    (again,) = await trigger(client, [A])
    assert again["id"] != first["id"]
    assert again["status"] == "pending"
    assert sim.charges[("person", A, "emails")] == 2
    assert sim.credits_charged == 2
    (latest,) = await query(client, task(A))
    assert latest["id"] == again["id"]


async def test_duplicate_ids_give_one_record_in_input_order(make: Make) -> None:
    sim, client = await make()
    result = await trigger(client, [C, A, C, B, A])
    assert [r["entityId"] for r in result] == [C, A, B]
    assert sim.credits_charged == 3


async def test_uppercase_ids_are_the_same_entity(make: Make) -> None:
    _, client = await make()
    (upper,) = await trigger(client, [A.upper()])
    (lower,) = await trigger(client, [A])
    assert (upper["id"], upper["entityId"]) == (lower["id"], A)


async def test_wrapped_trigger_response(make: Make) -> None:
    _, client = await make(wrap_trigger_response=True)
    status, data, _ = await call(client, "POST", lance.BATCH, {"personIds": [A], "field": "emails"})
    assert status == 200
    assert [r["entityId"] for r in data["enrichments"]] == [A]


async def test_batch_query_omits_tasks_without_a_record(make: Make) -> None:
    sim, client = await make()
    await trigger(client, [A])
    sim.start_enrichment(C, "summary", "company")
    tasks = [task(A), task(A, "phones"), task(B), task(C, "summary", "company"), task(A)]
    result = await query(client, *tasks)
    keys = {(r["entityType"], r["entityId"], r["field"]) for r in result}
    assert keys == {("person", A, "emails"), ("company", C, "summary")}
    assert len(result) == 2


async def test_enrichment_object_has_exactly_the_documented_fields(make: Make) -> None:
    _, client = await make()
    (pending,) = await trigger(client, [A])
    assert set(pending) == ENRICHMENT_KEYS
    assert uuid.UUID(pending["id"]).version == 4
    assert ISO_MS_Z.fullmatch(pending["createdAt"])
    assert pending["updatedAt"] == pending["createdAt"]
    assert (pending["entityType"], pending["createdBy"], pending["orgId"]) == (
        "person",
        "user_sim",
        "org_sim",
    )
    assert (pending["status"], pending["dataFound"], pending["globalEnrichmentId"]) == (
        "pending",
        None,
        None,
    )
    assert pending["creditTransactionId"] is not None


async def test_records_complete_lazily_with_the_clock(make: Make, clock: FakeClock) -> None:
    _, client = await make()
    (created,) = await trigger(client, [A])
    clock.advance(9.999)
    (still,) = await query(client, task(A))
    assert still["status"] == "pending"
    clock.advance(0.001)
    (done,) = await query(client, task(A))
    assert (done["status"], done["dataFound"], done["error"]) == ("finished", True, None)
    assert done["globalEnrichmentId"] is not None
    assert done["createdAt"] == created["createdAt"]
    assert done["updatedAt"] == "2023-11-14T22:13:30.000Z"  # created + 10 s


async def test_zero_completion_is_pending_in_the_response_and_terminal_on_next_read(
    make: Make,
) -> None:
    _, client = await make(completion_s=(0.0, 0.0), outcomes={"not_found": 1.0})
    (created,) = await trigger(client, [A])
    assert created["status"] == "pending"
    status, single, _ = await call(client, "GET", single_path(A))
    assert (status, single["status"], single["dataFound"]) == (200, "finished", False)


async def test_single_trigger_and_status(make: Make) -> None:
    sim, client = await make()
    status, data, _ = await call(client, "GET", single_path(A, "phones"))
    assert (status, data["error"]) == (404, "NOT_FOUND")
    status, created, _ = await call(client, "POST", single_path(A, "phones"))
    assert (status, created["entityId"], created["field"]) == (200, A, "phones")
    _, again, _ = await call(client, "POST", single_path(A, "phones"))
    _, read, _ = await call(client, "GET", single_path(A, "phones"))
    assert created["id"] == again["id"] == read["id"]
    assert sim.credits_charged == 2


async def test_complete_all_finishes_every_pending_record(make: Make) -> None:
    sim, client = await make(completion_s=(100.0, 100.0), outcomes={"found": 1, "failed": 1})
    await trigger(client, ids(10))
    assert sim.complete_all() == 10
    assert sim.complete_all() == 0
    by_status = sim.stats()["records"]["byStatus"]
    assert sum(by_status.values()) == 10
    assert "pending" not in by_status


async def test_entity_values_appear_only_after_a_found_finish(make: Make, clock: FakeClock) -> None:
    _, client = await make()
    _, before, _ = await call(client, "GET", person_path(A))
    assert (before["emails"], before["phones"]) == ([], [])
    await trigger(client, [A])
    _, pending, _ = await call(client, "GET", person_path(A))
    assert pending["emails"] == []
    clock.advance(10)
    _, after, _ = await call(client, "GET", person_path(A))
    assert 1 <= len(after["emails"]) <= 2
    assert all("@" in e for e in after["emails"])
    assert after["phones"] == []
    first, last = after["firstName"].lower(), after["lastName"].lower()
    assert after["emails"][0].startswith(f"{first}.{last}@")
    assert {k: v for k, v in after.items() if k != "emails"} == {
        k: v for k, v in before.items() if k != "emails"
    }
    assert after["company"]["id"] == after["companyId"]


async def test_not_found_finish_leaves_the_person_empty(make: Make, clock: FakeClock) -> None:
    _, client = await make(outcomes={"not_found": 1.0})
    await trigger(client, [A], "phones")
    clock.advance(10)
    _, person, _ = await call(client, "GET", person_path(A))
    assert person["phones"] == []


async def test_person_data_is_deterministic_per_id(make: Make) -> None:
    _, client = await make()
    _, one, _ = await call(client, "GET", person_path(A))
    _, two, _ = await call(client, "GET", person_path(A))
    _, other, _ = await call(client, "GET", person_path(B))
    assert one == two
    assert one["id"] != other["id"]
    for key in ("firstName", "lastName", "jobTitle", "city", "country", "linkedinUrl"):
        assert isinstance(one[key], str)


async def test_company_summary_appears_after_a_found_summary(make: Make) -> None:
    sim, client = await make()
    _, before, _ = await call(client, "GET", company_path(C))
    assert before["summary"] is None
    assert {"name", "domain", "websiteUrl", "headcount", "industry", "phones"} <= set(before)
    created = sim.start_enrichment(C, "summary", "company", outcome="found", completion_s=0)
    assert created["status"] == "pending"
    _, after, _ = await call(client, "GET", company_path(C))
    assert isinstance(after["summary"], str)
    assert sim.credits_charged == 0  # started elsewhere: not the bridge's spend


async def test_unknown_entities_are_404(make: Make) -> None:
    _, client = await make(unknown_entities={A})
    status, data, _ = await call(client, "GET", person_path(A))
    assert (status, data["error"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize("outcome", ["found", "not_found"])
async def test_charge_on_success_charges_found_finishes_only(
    make: Make, clock: FakeClock, outcome: str
) -> None:
    sim, client = await make(charge_on="success", outcomes={outcome: 1.0})
    (created,) = await trigger(client, [A], "phones")
    assert (created["creditTransactionId"], sim.credits_charged) == (None, 0)
    clock.advance(10)
    (done,) = await query(client, task(A, "phones"))
    charged = outcome == "found"
    assert sim.credits_charged == (2 if charged else 0)
    assert (done["creditTransactionId"] is not None) is charged


async def test_balance_reports_charges(make: Make) -> None:
    _, client = await make(credits=50)
    await trigger(client, [A, B], "phones")
    _, data, _ = await call(client, "GET", lance.BALANCE)
    assert data == {"balance": 46, "organizationId": "org_sim"}


async def test_unknown_route_is_404_with_the_envelope(make: Make) -> None:
    _, client = await make()
    status, data, _ = await call(client, "GET", "/api/v1/nothing/here")
    assert (status, data["error"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("fail_rate", 500, "INTERNAL_ERROR"), ("throttle_rate", 429, "RATE_LIMITED")],
)
async def test_error_faults_have_no_side_effects(
    make: Make, fault: str, status: int, code: str
) -> None:
    sim, client = await make(retry_after_s=7)
    on: dict[str, Any] = {fault: 1.0}
    sim.set_faults(**on)
    got, data, headers = await call(
        client, "POST", lance.BATCH, {"personIds": [A], "field": "emails"}
    )
    assert (got, data["error"]) == (status, code)
    if status == 429:
        assert headers["Retry-After"] == "7"
    sim.set_faults(**{**on, fault: 0.0})
    assert await query(client, task(A)) == []
    assert (sim.credits_charged, sim.balance) == (0, sim.config.credits)
    assert sim.requests[BATCH_KEY] == 1
    assert sim.statuses[(BATCH_KEY, status)] == 1


async def test_dropped_connection_has_no_answer_and_no_side_effects(make: Make) -> None:
    sim, client = await make()
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(client, "POST", lance.BATCH, {"personIds": [A], "field": "emails"})
    sim.set_faults(drop_rate=0.0)
    assert await query(client, task(A)) == []
    assert sim.credits_charged == 0
    assert (sim.requests[BATCH_KEY], sim.statuses[(BATCH_KEY, 0)]) == (1, 1)


async def test_slow_requests_are_answered(make: Make) -> None:
    sim, client = await make()
    sim.set_faults(slow_rate=1.0, slow_s=0.01)
    assert len(await trigger(client, [A])) == 1


async def test_faults_do_not_touch_the_admin_surface(make: Make) -> None:
    sim, client = await make()
    sim.set_faults(fail_rate=1.0)
    status, stats, _ = await call(client, "GET", "/_sim/stats", headers=None)
    assert status == 200
    assert stats["faults"]["fail_rate"] == 1.0


def test_set_faults_rejects_bad_rates() -> None:
    sim = lance.LanceSimulator()
    with pytest.raises(ValueError, match="between 0 and 1"):
        sim.set_faults(fail_rate=1.5)
    with pytest.raises(ValueError, match="emails"):
        sim.start_enrichment(A, "names")


async def test_counters_count_api_calls_but_not_admin_calls(make: Make) -> None:
    sim, client = await make()
    await trigger(client, [A])
    await call(client, "POST", lance.BATCH, {"personIds": []})
    await query(client, task(A))
    await call(client, "GET", person_path(B))
    await call(client, "GET", "/_sim/stats")
    assert sim.requests == {
        BATCH_KEY: 2,
        f"POST {lance.QUERY}": 1,
        f"GET {lance.PERSON}": 1,
    }
    assert sim.statuses == {
        (BATCH_KEY, 200): 1,
        (BATCH_KEY, 400): 1,
        (f"POST {lance.QUERY}", 200): 1,
        (f"GET {lance.PERSON}", 200): 1,
    }
    assert sim.admin_requests == {"GET /_sim/stats": 1}


async def test_admin_surface_drives_the_simulator(make: Make) -> None:
    sim, client = await make()
    body = {"entityId": C, "field": "summary", "entityType": "company", "outcome": "found"}
    status, created, _ = await call(client, "POST", "/_sim/enrichments", body, headers=None)
    assert (status, created["status"], created["entityType"]) == (201, "pending", "company")
    status, done, _ = await call(client, "POST", "/_sim/complete", headers=None)
    assert (status, done) == (200, {"completed": 1})
    _, company, _ = await call(client, "GET", company_path(C))
    assert isinstance(company["summary"], str)
    status, faults, _ = await call(
        client, "POST", "/_sim/faults", {"throttle_rate": 1}, headers=None
    )
    assert (status, faults["throttle_rate"]) == (200, 1.0)
    assert (await call(client, "GET", lance.BALANCE))[0] == 429
    _, stats, _ = await call(client, "GET", "/_sim/stats", headers=None)
    assert stats["records"] == {"total": 1, "byStatus": {"finished": 1}}
    assert stats["statuses"] == {
        f"GET {lance.COMPANY}": {"200": 1},
        f"GET {lance.BALANCE}": {"429": 1},
    }
    assert stats["credits"]["maxChargesPerKey"] == 0
    assert stats["requests"] == sim.stats()["requests"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_sim/enrichments", {"entityId": A, "field": "emails", "outcome": "bogus"}),
        ("/_sim/enrichments", {"entityId": "x", "field": "emails"}),
        ("/_sim/faults", {"fail_rate": 2}),
        ("/_sim/faults", {"bogus": 1}),
        ("/_sim/faults", {"drop_rate": "high"}),
    ],
)
async def test_admin_surface_validates(make: Make, path: str, body: dict[str, Any]) -> None:
    _, client = await make()
    status, data, _ = await call(client, "POST", path, body, headers=None)
    assert (status, data["error"]) == (400, "VALIDATION_ERROR")


async def test_serve_on_a_free_loopback_port() -> None:
    sim = lance.LanceSimulator(lance.SimConfig(seed=3, completion_s=(0, 0)))
    runner = await lance.serve(sim, "127.0.0.1", 0)
    try:
        port = lance.bound_port(runner)
        assert port > 0
        assert lance.base_url(runner) == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(lance.base_url(runner), headers=AUTH) as session:
            async with session.get(lance.BALANCE) as resp:
                assert await resp.json() == {"balance": 10_000_000, "organizationId": "org_sim"}
            sim.set_faults(drop_rate=1.0)
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.get(lance.BALANCE) as resp:
                    await resp.read()
    finally:
        await runner.cleanup()


async def test_configured_names_are_json_escaped(make: Make) -> None:
    sim, client = await make(org_id='org "quoted" \\ name', user_id="user_é")
    (created,) = await trigger(client, [A])
    assert (created["orgId"], created["createdBy"]) == ('org "quoted" \\ name', "user_é")
    assert sim.record("person", A, "emails") == created


async def test_stats_count_reused_triggers_and_the_batch_query_floor(
    make: Make, clock: FakeClock
) -> None:
    sim, client = await make()
    clock.now = 1_700_000_000.0  # on a window boundary of 0.5 s
    await trigger(client, [A, B])
    await trigger(client, [A, C])  # A again: its pending record is returned, no charge
    many = [task(pid(n)) for n in range(10, 160)]
    await query(client, *many)  # two partial queries in one window: one would have done
    await query(client, task(A))
    clock.advance(0.5)
    await query(client, *many, *many[:50])  # 200 tasks: a full query alone in its window
    sim.set_faults(fail_rate=1.0)
    assert (await call(client, "POST", lance.QUERY, {"tasks": [task(A)]}))[0] == 500

    _, stats, _ = await call(client, "GET", "/_sim/stats?tick=0.5", headers=None)
    assert stats["triggers"] == {"ids": 4, "reused": 1}
    assert stats["credits"]["maxChargesPerKey"] == 1
    assert stats["batchQueries"] == {"requests": 3, "tasks": 351, "tickS": 0.5, "floor": 2}
    _, plain, _ = await call(client, "GET", "/_sim/stats", headers=None)
    assert plain["batchQueries"] == {"requests": 3, "tasks": 351}
    for bad in ("0", "-1", "soon", "nan", "inf"):
        status, error, _ = await call(client, "GET", f"/_sim/stats?tick={bad}", headers=None)
        assert status == 400, bad
        assert "tick" in str(error)

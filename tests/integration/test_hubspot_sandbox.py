"""The HubSpot sandbox over real loopback HTTP: the documented contract, auth, limits, faults.

Signatures are checked against the vectors of crm-apis.md §1.2 and against HubSpot's own SDK.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hubspot.utils.signature import Signature  # type: ignore[import-untyped]

from bridge.sim import _http, hubspot
from bridge.sim.hubspot import HubSpotSandbox
from tests.conftest import Clock

Client = TestClient[Any, Any]
AUTH = {"Authorization": "Bearer pat-sandbox"}
UPDATE = "/crm/v3/objects/contacts/batch/update"
READ = "/crm/v3/objects/contacts/batch/read"
UPDATE_KEY = "POST /crm/v3/objects/{objectType}/batch/update"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# crm-apis.md §1.2 test vectors.
VECTOR_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
V1_BODY = (
    '[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    '"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    '"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
V1_SIGNATURE = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
V2_URI = "https://www.example.com/webhook_uri"
V2_BODY = '{"example_field":"example_value"}'
V2_POST_SIGNATURE = "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"
V2_GET_SIGNATURE = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
V3_BODY = "{'example_field':'example_value'}"
V3_TIMESTAMP = "1693657560000"
V3_SIGNATURE = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="


@pytest.fixture
def sandbox(clock: Clock) -> HubSpotSandbox:
    return HubSpotSandbox(clock=clock)


@pytest.fixture
async def client(aiohttp_client: Any, sandbox: HubSpotSandbox) -> Client:
    return await aiohttp_client(hubspot.create_app(sandbox))  # type: ignore[no-any-return]


async def call(
    client: Client,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """``(status, decoded JSON or None, headers)`` of one request, authenticated by default."""
    async with client.request(
        method, path, json=body, headers=AUTH if headers is None else headers
    ) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, resp.headers


def contacts(sandbox: HubSpotSandbox, n: int) -> list[str]:
    return [sandbox.add_record("contacts", {"email": f"c{i}@example.com"}) for i in range(n)]


def assert_error_shape(body: dict[str, Any], category: str) -> None:
    assert body["status"] == "error"
    assert body["category"] == category
    assert UUID.fullmatch(body["correlationId"])
    assert isinstance(body["message"], str)


# ---- signatures ---------------------------------------------------------------------------


def test_signatures_match_the_reference_vectors() -> None:
    assert hubspot.sign_v1(VECTOR_SECRET, V1_BODY.encode()) == V1_SIGNATURE
    assert hubspot.sign_v2(VECTOR_SECRET, "POST", V2_URI, V2_BODY.encode()) == V2_POST_SIGNATURE
    assert hubspot.sign_v2(VECTOR_SECRET, "GET", V2_URI, b"") == V2_GET_SIGNATURE
    signed = hubspot.sign_v3(VECTOR_SECRET, "POST", V2_URI, V3_BODY.encode(), V3_TIMESTAMP)
    assert signed == V3_SIGNATURE
    assert hubspot.sign_v3(VECTOR_SECRET, "POST", V2_URI, V3_BODY, int(V3_TIMESTAMP)) == signed


@pytest.mark.parametrize(
    ("secret", "method", "uri", "body"),
    [
        ("s3cr3t", "POST", "https://bridge.example/hubspot?x=1&y=2", '[{"objectId":1}]'),
        ("another-secret", "GET", "https://bridge.example/hook", ""),
        ("ünïcode", "POST", "https://bridge.example/h", '{"name":"Zoë"}'),
    ],
)
def test_signatures_match_the_official_sdk(secret: str, method: str, uri: str, body: str) -> None:
    stamp = "1769081994066"
    sdk = Signature.get_signature
    assert hubspot.sign_v1(secret, body.encode()) == sdk(secret, body, "v1")
    assert hubspot.sign_v2(secret, method, uri, body.encode()) == sdk(
        secret, body, "v2", uri, method
    )
    assert hubspot.sign_v3(secret, method, uri, body.encode(), stamp) == sdk(
        secret, body, "v3", uri, method, stamp
    )


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_webhook_headers_verify_with_the_official_sdk(version: Any) -> None:
    body = json.dumps([hubspot.creation(7)], separators=(",", ":")).encode()
    uri = "https://bridge.example/hubspot"
    now_ms = int(time.time() * 1000)  # the SDK checks v3 ages against the wall clock
    headers = hubspot.webhook_headers("s3cr3t", body, uri=uri, now_ms=now_ms, version=version)
    assert headers["X-HubSpot-Signature-Version"] == version
    assert headers["X-HubSpot-Request-Timestamp"] == str(now_ms)
    assert headers["User-Agent"].startswith("HubSpot Connect 2.0")
    for signature, sdk_version in (
        (headers["X-HubSpot-Signature"], version),
        (headers["X-HubSpot-Signature-v3"], "v3"),
    ):
        assert Signature.is_valid(
            signature,
            "s3cr3t",
            body.decode(),
            uri,
            "POST",
            signature_version=sdk_version,
            timestamp=headers["X-HubSpot-Request-Timestamp"],
        )


def test_event_builders_use_hubspots_keys(clock: Clock) -> None:
    change = hubspot.property_change(5, "lance_enrich", "yes", event_id=9, clock=clock)
    assert change == {
        "eventId": 9,
        "subscriptionId": hubspot.DEFAULT_SUBSCRIPTION_ID,
        "portalId": hubspot.DEFAULT_PORTAL_ID,
        "appId": hubspot.DEFAULT_APP_ID,
        "occurredAt": int(clock() * 1000),
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 5,
        "propertyName": "lance_enrich",
        "propertyValue": "yes",
        "changeSource": "CRM_UI",
    }
    created = hubspot.creation(6, object_type="company", portal_id=1, occurred_at_ms=3)
    assert (created["subscriptionType"], created["changeFlag"]) == ("company.creation", "CREATED")
    assert (created["portalId"], created["occurredAt"]) == (1, 3)
    assert hubspot.creation(1)["eventId"] < hubspot.creation(1)["eventId"]


def test_workflow_payloads() -> None:
    assert hubspot.workflow_payload("12", {"email": "a@b.c"}, object_type="0-2") == {
        "objectId": 12,
        "objectType": "COMPANY",
        "properties": {"email": "a@b.c"},
    }
    legacy = hubspot.legacy_contact_payload(3, {"email": "a@b.c"}, timestamp_ms=10)
    assert (legacy["vid"], legacy["portal-id"]) == (3, hubspot.DEFAULT_PORTAL_ID)
    assert legacy["properties"] == {
        "email": {
            "value": "a@b.c",
            "versions": [
                {
                    "value": "a@b.c",
                    "source-type": "CRM_UI",
                    "source-id": None,
                    "source-label": None,
                    "timestamp": 10,
                    "selected": False,
                }
            ],
        }
    }
    with pytest.raises(ValueError, match="unknown object type"):
        hubspot.workflow_payload(1, {}, object_type="deals")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[list[tuple[bytes, dict[str, str], str]], str]]:
    """A webhook endpoint that fails its first answer and records what it got."""
    seen: list[tuple[bytes, dict[str, str], str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((await request.read(), dict(request.headers), str(request.url)))
        return web.Response(status=503 if len(seen) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hubspot", handle)
    runner = await _http.serve_app(app)
    yield seen, f"{_http.base_url(runner)}/hubspot"
    await runner.cleanup()


async def test_send_webhook_signs_the_bytes_it_sends_and_retries(
    receiver: tuple[list[tuple[bytes, dict[str, str], str]], str],
) -> None:
    seen, url = receiver
    events = [hubspot.property_change(1, "email", "a@b.c"), hubspot.creation(2)]
    async with aiohttp.ClientSession() as session:
        status = await hubspot.send_webhook(session, url, "s3cr3t", events)
    assert status == 204
    assert [e["attemptNumber"] for e in events] == [0, 0]  # the caller's events are untouched
    for attempt, (body, headers, called) in enumerate(seen):
        assert called == url
        assert [e["attemptNumber"] for e in json.loads(body)] == [attempt, attempt]
        assert b", " not in body  # compact serialisation, signed exactly as sent
        stamp = headers["X-HubSpot-Request-Timestamp"]
        assert Signature.is_valid(
            headers["X-HubSpot-Signature-v3"], "s3cr3t", body.decode(), url, "POST", "v3", stamp
        )
        assert headers["X-HubSpot-Signature"] == hubspot.sign_v1("s3cr3t", body)
    assert len(seen) == 2


async def test_send_webhook_gives_up_after_max_attempts_and_rejects_big_batches(
    receiver: tuple[list[tuple[bytes, dict[str, str], str]], str],
) -> None:
    seen, url = receiver
    async with aiohttp.ClientSession() as session:
        status = await hubspot.send_webhook(
            session, url, "s", [hubspot.creation(1)], now_ms=5, max_attempts=1
        )
        assert (status, len(seen)) == (503, 1)
        with pytest.raises(ValueError, match="1 to 100"):
            await hubspot.send_webhook(session, url, "s", [hubspot.creation(1)] * 101)


# ---- reads ------------------------------------------------------------------------------


async def test_properties_listing_shows_the_schema(client: Client, sandbox: HubSpotSandbox) -> None:
    sandbox.add_property("companies", "lance_summary")
    status, body, _ = await call(client, "GET", "/crm/v3/properties/0-2")
    assert status == 200
    names = [p["name"] for p in body["results"]]
    assert set(names) == hubspot.DEFAULT_SCHEMAS["companies"] | {"lance_summary"}
    summary = next(p for p in body["results"] if p["name"] == "lance_summary")
    expected = {"type": "string", "fieldType": "text", "groupName": "companyinformation"}
    assert summary | expected == summary
    assert {"label", "hasUniqueValue", "modificationMetadata"} <= set(summary)
    status, body, _ = await call(client, "GET", "/crm/v3/properties/deals")
    assert status == 400
    assert_error_shape(body, "VALIDATION_ERROR")
    assert body["message"] == "Unable to infer object type from: deals"


async def test_get_returns_requested_properties_and_404s_unknown_ids(
    client: Client, sandbox: HubSpotSandbox
) -> None:
    cid = sandbox.add_record("contacts", {"email": "a@b.c", "phone": "1"})
    status, body, _ = await call(
        client, "GET", f"/crm/v3/objects/0-1/{cid}?properties=phone,company"
    )
    assert status == 200
    assert body["id"] == cid
    assert set(body["properties"]) == {
        "phone",
        "company",
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
    }
    assert (body["properties"]["phone"], body["properties"]["company"]) == ("1", None)
    assert ISO_MS_Z.fullmatch(body["createdAt"])
    assert body["archived"] is False
    status, body, _ = await call(client, "GET", "/crm/v3/objects/contacts/a@b.c?idProperty=email")
    assert (status, body["id"]) == (200, cid)
    status, body, _ = await call(client, "GET", "/crm/v3/objects/contacts/999")
    assert status == 404
    assert_error_shape(body, "OBJECT_NOT_FOUND")


async def test_batch_read_reports_missing_ids_in_one_error(
    client: Client, sandbox: HubSpotSandbox
) -> None:
    a, b = contacts(sandbox, 2)
    payload = {
        "properties": ["email"],
        "inputs": [{"id": a}, {"id": "404"}, {"id": b}, {"id": "9"}],
    }
    status, body, _ = await call(client, "POST", READ, payload)
    assert status == 207
    assert [r["id"] for r in body["results"]] == [a, b]
    assert body["numErrors"] == 1
    [error] = body["errors"]
    assert error["category"] == "OBJECT_NOT_FOUND"
    assert error["context"] == {"ids": ["404", "9"]}
    assert error["message"].startswith("Could not get some CONTACT objects")
    status, body, _ = await call(client, "POST", READ, {"inputs": [{"id": "1000"}]})
    assert (status, body["results"], body["numErrors"]) == (207, [], 1)
    status, body, _ = await call(client, "POST", READ, {"inputs": [{"id": a}]})
    assert (status, body["status"], len(body["results"])) == (200, "COMPLETE", 1)
    assert "errors" not in body
    status, body, _ = await call(client, "POST", READ, {"inputs": [{"id": a}] * 101})
    assert status == 400
    assert_error_shape(body, "VALIDATION_ERROR")


# ---- writes -----------------------------------------------------------------------------


async def test_patch_updates_clears_and_rejects_unknown_properties(
    client: Client, sandbox: HubSpotSandbox, clock: Clock
) -> None:
    cid = sandbox.add_record("contacts", {"email": "a@b.c", "phone": "1"})
    clock.advance(60)
    path = f"/crm/v3/objects/contacts/{cid}"
    status, body, _ = await call(
        client, "PATCH", path, {"properties": {"mobilephone": "2", "phone": ""}}
    )
    assert status == 200
    assert body["properties"]["mobilephone"] == "2"
    assert body["updatedAt"] > body["createdAt"]
    record = sandbox.record("contacts", cid)
    assert (record["mobilephone"], "phone" in record) == ("2", False)
    status, body, _ = await call(client, "PATCH", path, {"properties": {"nope": "x"}})
    assert status == 400
    assert_error_shape(body, "VALIDATION_ERROR")
    assert body["message"].startswith("Property values were not valid: [")
    assert body["errors"] == [
        {
            "message": 'Property "nope" does not exist',
            "code": "PROPERTY_DOESNT_EXIST",
            "context": {"propertyName": ["nope"]},
        }
    ]


async def test_batch_update_all_good_is_200(client: Client, sandbox: HubSpotSandbox) -> None:
    a, b = contacts(sandbox, 2)
    inputs = [{"id": i, "properties": {"lance_enrichment_status": "done"}} for i in (a, b)]
    status, body, headers = await call(client, "POST", UPDATE, {"inputs": inputs})
    assert status == 200
    assert body["status"] == "COMPLETE"
    assert [r["id"] for r in body["results"]] == [a, b]
    assert body["results"][0]["properties"]["lance_enrichment_status"] == "done"
    assert ISO_MS_Z.fullmatch(body["startedAt"])
    assert ISO_MS_Z.fullmatch(body["completedAt"])
    assert sandbox.record("contacts", b)["lance_enrichment_status"] == "done"
    assert headers["X-HubSpot-RateLimit-Max"] == "100"


async def test_batch_update_one_bad_property_is_207_with_context(
    client: Client, sandbox: HubSpotSandbox
) -> None:
    a, b, c = contacts(sandbox, 3)
    inputs = [
        {"id": a, "properties": {"phone": "1"}},
        {"id": b, "properties": {"phone": "2", "missing": "x"}, "objectWriteTraceId": "t-b"},
        {"id": c, "properties": {"phone": "3"}},
        {"id": "77777", "properties": {"phone": "4"}},
        {"id": "88888", "properties": {"ghost": "x"}},
    ]
    status, body, _ = await call(client, "POST", UPDATE, {"inputs": inputs})
    assert status == 207
    assert [r["id"] for r in body["results"]] == [a, c]
    assert body["numErrors"] == 3
    bad_property, not_found, no_trace = body["errors"]
    assert bad_property["category"] == "VALIDATION_ERROR"
    assert bad_property["context"] == {"objectWriteTraceId": ["t-b"]}
    prefix = "Property values were not valid: "
    assert bad_property["message"].startswith(prefix)
    [detail] = json.loads(bad_property["message"].removeprefix(prefix))
    assert (
        detail | {"isValid": False, "error": "PROPERTY_DOESNT_EXIST", "name": "missing"} == detail
    )
    assert detail["message"] == 'Property "missing" does not exist'
    assert (bad_property["errors"], bad_property["links"]) == ([], {})
    assert not_found["category"] == "OBJECT_NOT_FOUND"
    assert not_found["context"] == {"ids": ["77777"]}
    assert no_trace["category"] == "OBJECT_NOT_FOUND"
    assert sandbox.record("contacts", b).get("phone") is None  # a failed input changes nothing
    assert sandbox.record("contacts", c)["phone"] == "3"


async def test_batch_update_unknown_property_without_trace_names_the_id(
    client: Client, sandbox: HubSpotSandbox
) -> None:
    [a] = contacts(sandbox, 1)
    payload = {"inputs": [{"id": a, "properties": {"ghost": "x"}}]}
    status, body, _ = await call(client, "POST", UPDATE, payload)
    assert (status, body["results"], body["numErrors"]) == (207, [], 1)  # every input failed
    assert body["errors"][0]["context"] == {"ids": [a]}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": [{"id": str(i), "properties": {}} for i in range(101)]}, "100"),
        ({"inputs": [{"id": "1", "properties": {}}, {"id": "1", "properties": {}}]}, "[1]"),
        ({"inputs": [{"id": "1", "properties": {"phone": 5}}]}, "must be a string"),
        ({"inputs": [{"id": "1"}]}, "[properties]"),
        ({"inputs": [{"properties": {}}]}, "[id]"),
        ({}, "[inputs]"),
    ],
    ids=["101 inputs", "duplicate ids", "non-string value", "no properties", "no id", "no inputs"],
)
async def test_batch_update_rejects_bad_batches_whole(
    client: Client, sandbox: HubSpotSandbox, payload: dict[str, Any], message: str
) -> None:
    contacts(sandbox, 1)
    status, body, _ = await call(client, "POST", UPDATE, payload)
    assert status == 400
    assert_error_shape(body, "VALIDATION_ERROR")
    assert message in body["message"]
    assert "phone" not in sandbox.record("contacts", "1")


async def test_invalid_json_and_unknown_routes_answer_in_hubspots_shape(client: Client) -> None:
    async with client.post(UPDATE, data=b"{nope", headers=AUTH) as resp:
        body = await resp.json()
    assert resp.status == 400
    assert body["message"].startswith("Invalid input JSON on line 1, column 2")
    status, body, _ = await call(client, "GET", "/crm/v3/nothing/here")
    assert status == 404
    assert_error_shape(body, "OBJECT_NOT_FOUND")


# ---- auth -------------------------------------------------------------------------------


async def test_missing_or_unknown_token_is_401_invalid_authentication(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        status, body, _ = await call(client, "GET", "/crm/v3/properties/contacts", headers=headers)
        assert status == 401
        assert_error_shape(body, "INVALID_AUTHENTICATION")
        assert body["message"].startswith("Authentication credentials not found.")


async def refresh(client: Client, **overrides: str) -> tuple[int, Any]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "refresh-sandbox",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
    } | overrides
    async with client.post("/oauth/v1/token", data=form) as resp:
        return resp.status, await resp.json()


async def test_oauth_refresh_issues_a_token_that_expires(
    client: Client, sandbox: HubSpotSandbox, clock: Clock
) -> None:
    status, body = await refresh(client)
    assert status == 200
    assert set(body) == {"token_type", "refresh_token", "access_token", "expires_in"}
    assert (body["token_type"], body["refresh_token"], body["expires_in"]) == (
        "bearer",
        "refresh-sandbox",
        1800,
    )
    assert len(body["access_token"]) >= 100
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    status, _, _ = await call(client, "GET", "/crm/v3/properties/contacts", headers=bearer)
    assert status == 200
    clock.advance(1800)
    status, body, _ = await call(client, "GET", "/crm/v3/properties/contacts", headers=bearer)
    assert status == 401
    assert_error_shape(body, "EXPIRED_AUTHENTICATION")
    assert body["message"] == "The OAuth token used to make this call expired 0 second(s) ago."
    assert ISO_MS_Z.fullmatch(body["context"]["expire time"][0])
    assert sandbox.token_requests == 1


async def test_expire_tokens_expires_issued_tokens_now(
    client: Client, sandbox: HubSpotSandbox, clock: Clock
) -> None:
    _, body = await refresh(client)
    assert sandbox.expire_tokens() == 1
    clock.advance(5)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    status, body, _ = await call(client, "GET", "/crm/v3/properties/contacts", headers=bearer)
    assert (status, body["category"]) == (401, "EXPIRED_AUTHENTICATION")
    assert "expired 5 second(s) ago" in body["message"]
    status, _, _ = await call(client, "GET", "/crm/v3/properties/contacts")  # private token
    assert status == 200


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"refresh_token": "stolen"}, "BAD_REFRESH_TOKEN"),
        ({"client_id": "other"}, "BAD_CLIENT_ID"),
        ({"client_secret": "guess"}, "BAD_CLIENT_ID"),
    ],
)
async def test_oauth_refresh_errors(client: Client, overrides: dict[str, str], error: str) -> None:
    status, body = await refresh(client, **overrides)
    assert (status, body["status"]) == (400, error)
    assert "access_token" not in body


# ---- rate limits and faults -------------------------------------------------------------


async def test_rate_limit_per_token_and_recovery(aiohttp_client: Any, clock: Clock) -> None:
    sandbox = HubSpotSandbox(clock=clock, rate_limit=3, private_tokens=("pat-sandbox", "pat-2"))
    [cid] = contacts(sandbox, 1)
    client = await aiohttp_client(hubspot.create_app(sandbox))
    path = f"/crm/v3/objects/contacts/{cid}"
    remaining = []
    for _ in range(3):
        status, _, headers = await call(client, "GET", path)
        assert status == 200
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        remaining.append(headers["X-HubSpot-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    status, body, headers = await call(client, "PATCH", path, {"properties": {"phone": "9"}})
    assert status == 429
    assert body == body | {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "policyName": "TEN_SECONDLY_ROLLING",
    }
    assert UUID.fullmatch(body["correlationId"])
    assert UUID.fullmatch(body["requestId"])
    assert (headers["X-HubSpot-RateLimit-Max"], headers["X-HubSpot-RateLimit-Remaining"]) == (
        "3",
        "0",
    )
    assert "phone" not in sandbox.record("contacts", cid)  # refused, so nothing changed
    assert sandbox.counts["PATCH /crm/v3/objects/{objectType}/{objectId}"] == 1
    status, _, _ = await call(client, "GET", path, headers={"Authorization": "Bearer pat-2"})
    assert status == 200  # another token has its own window
    clock.advance(10)
    status, _, _ = await call(client, "PATCH", path, {"properties": {"phone": "9"}})
    assert status == 200
    assert sandbox.record("contacts", cid)["phone"] == "9"


async def test_rate_limit_zero_disables_limiting(aiohttp_client: Any, clock: Clock) -> None:
    client = await aiohttp_client(hubspot.create_app(HubSpotSandbox(clock=clock, rate_limit=0)))
    for _ in range(5):
        status, _, headers = await call(client, "GET", "/crm/v3/properties/contacts")
        assert status == 200
        assert "X-HubSpot-RateLimit-Max" not in headers


async def test_fail_next_answers_then_recovers(client: Client, sandbox: HubSpotSandbox) -> None:
    [cid] = contacts(sandbox, 1)
    payload = {"inputs": [{"id": cid, "properties": {"phone": "1"}}]}
    sandbox.fail_next(2, 429, route="batch/update")
    sandbox.fail_next(1, 477)
    status, body, headers = await call(client, "GET", "/crm/v3/properties/contacts")
    assert status == 477  # the route filter let this one through to the unfiltered fault
    assert headers["Retry-After"] == str(hubspot.FAULT_RETRY_AFTER_S)
    for _attempt in range(2):
        status, body, _ = await call(client, "POST", UPDATE, payload)
        assert (status, body["policyName"]) == (429, "TEN_SECONDLY_ROLLING")
    assert "phone" not in sandbox.record("contacts", cid)
    status, body, _ = await call(client, "POST", UPDATE, payload)
    assert status == 200
    assert sandbox.counts[UPDATE_KEY] == 3
    assert [r.status for r in sandbox.requests] == [477, 429, 429, 200]
    assert sandbox.requests[-1].json == payload
    assert sandbox.requests[-1].route == "/crm/v3/objects/{objectType}/batch/update"


@pytest.mark.parametrize("status", [423, 500, 502, 503])
async def test_fail_next_default_bodies(
    client: Client, sandbox: HubSpotSandbox, status: int
) -> None:
    sandbox.fail_next(1, status)
    got, body, _ = await call(client, "GET", "/crm/v3/properties/contacts")
    assert got == status
    assert body["status"] == "error"
    assert UUID.fullmatch(body["correlationId"])


async def test_fail_next_custom_body_and_headers(client: Client, sandbox: HubSpotSandbox) -> None:
    sandbox.fail_next(1, 503, body={"oops": True}, headers={"Retry-After": "7"})
    status, body, headers = await call(client, "GET", "/crm/v3/properties/contacts")
    assert (status, body, headers["Retry-After"]) == (503, {"oops": True}, "7")


# ---- admin surface and hygiene ----------------------------------------------------------


async def test_admin_surface_is_unauthenticated_and_uncounted(
    client: Client, sandbox: HubSpotSandbox
) -> None:
    none: dict[str, str] = {}
    status, body, _ = await call(
        client, "POST", "/_sim/objects/0-2", {"properties": {"name": "Acme"}}, none
    )
    assert status == 201
    company = body["id"]
    status, body, _ = await call(client, "GET", f"/_sim/objects/companies/{company}", None, none)
    assert (status, body["properties"]["name"]) == (200, "Acme")
    fault = {"count": 1, "status": 500, "route": "properties"}
    status, body, _ = await call(client, "POST", "/_sim/faults", fault, none)
    assert (status, body) == (200, {"queued": 1})
    status, _, _ = await call(client, "GET", "/crm/v3/properties/companies")
    assert status == 500
    status, body, _ = await call(client, "GET", "/_sim/requests", None, none)
    assert body["counts"] == {"GET /crm/v3/properties/{objectType}": 1}
    status, _, _ = await call(client, "POST", "/_sim/reset-counts", None, none)
    assert (status, sandbox.counts, sandbox.requests) == (204, {}, [])
    status, body, _ = await call(client, "POST", "/_sim/objects/deals", {}, none)
    assert status == 400
    status, body, _ = await call(client, "POST", "/_sim/expire-tokens", None, none)
    assert (status, body) == (200, {"expired": 0})
    assert sandbox.counts == {}


def test_helpers_validate_and_reprs_hide_secrets() -> None:
    sandbox = HubSpotSandbox(private_tokens=("pat-very-secret",), client_secret="cs-hidden")
    assert sandbox.add_record("contacts", record_id="500") == "500"
    assert sandbox.add_record("contacts") == "501"
    assert sandbox.record("contacts", "501")["hs_object_id"] == "501"
    with pytest.raises(ValueError, match="add_property"):
        sandbox.add_record("companies", {"lance_person_id": "x"})
    with pytest.raises(ValueError, match="already used"):
        sandbox.add_record("contacts", record_id="500")
    recorded = hubspot.Recorded("GET", "/", "/", {}, None, 200, "pat-very-secret")
    for text in (repr(sandbox), repr(recorded)):
        assert "pat-very-secret" not in text
        assert "cs-hidden" not in text

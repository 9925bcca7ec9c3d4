"""The Salesforce sandbox over real loopback HTTP, against the documented contract.

Token grants (client credentials, JWT bearer, refresh token), sessions and versions, the daily
limit, sObject Collections update/retrieve, SOQL, describe, and the Outbound Message generator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException

from bridge.sim import _http
from bridge.sim import salesforce as sf
from tests.conftest import Clock

V = "/services/data/v66.0"
COLLECTION_KEY = "PATCH /services/data/v{version}/composite/sobjects"
JWT_USER = "integration@example.com"
SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
OM = "{http://soap.sforce.com/2005/09/outbound}"
SF = "{urn:sobject.enterprise.soap.sforce.com}"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"


def _key_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return _key_pair()


@pytest.fixture(scope="module")
def other_private_key() -> bytes:
    return _key_pair()[0]


class Api:
    """A loopback client for one sandbox: raw calls plus a cached client-credentials token."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.token = ""

    async def grant(self, data: dict[str, str], **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.post(f"{self.base}{sf.TOKEN_PATH}", data=data, **kwargs) as resp:
            return resp.status, await resp.json()

    async def login(self) -> str:
        status, body = await self.grant(
            {
                "grant_type": "client_credentials",
                "client_id": "sandbox-consumer-key",
                "client_secret": "sandbox-consumer-secret",
            }
        )
        assert status == 200, body
        self.token = body["access_token"]
        return self.token

    async def call(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        bearer = self.token if token is None else token
        headers = dict(kwargs.pop("headers", {}))
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            body = await resp.json() if raw else None
            return resp.status, body, resp.headers


@pytest.fixture
def sandbox(clock: Clock, keys: tuple[bytes, bytes]) -> sf.SalesforceSandbox:
    return sf.SalesforceSandbox(clock=clock, jwt_public_key_pem=keys[1], daily_limit=1_000)


@pytest.fixture
async def api(sandbox: sf.SalesforceSandbox) -> AsyncIterator[Api]:
    runner = await sf.serve(sandbox)
    try:
        async with aiohttp.ClientSession() as http:
            client = Api(http, _http.base_url(runner))
            await client.login()
            yield client
    finally:
        await runner.cleanup()


def assertion(private_key: bytes, clock: Clock, **claims: Any) -> str:
    payload = {
        "iss": "sandbox-consumer-key",
        "sub": JWT_USER,
        "aud": "https://login.salesforce.com",
        "exp": int(clock.now) + 120,
    }
    return jwt.encode(payload | claims, private_key, algorithm="RS256")


def basic_auth(client_id: str, client_secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


# --- OAuth --------------------------------------------------------------------------------


async def test_client_credentials_token_has_documented_shape(
    api: Api, sandbox: sf.SalesforceSandbox, clock: Clock
) -> None:
    status, body = await api.grant(
        {
            "grant_type": "client_credentials",
            "client_id": "sandbox-consumer-key",
            "client_secret": "sandbox-consumer-secret",
        }
    )
    assert status == 200
    assert set(body) == {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert (body["scope"], body["token_type"], body["instance_url"]) == ("api", "Bearer", api.base)
    assert body["issued_at"] == str(int(clock.now * 1000))
    assert re.fullmatch(
        r"https://login\.salesforce\.com/id/00D000000000001EAA/005\w{15}", body["id"]
    )
    mac = hmac.new(
        b"sandbox-consumer-secret", (body["id"] + body["issued_at"]).encode(), hashlib.sha256
    )
    assert body["signature"] == base64.b64encode(mac.digest()).decode()
    assert sandbox.token_requests["client_credentials"] == 2  # the fixture's login too


async def test_client_credentials_over_http_basic(api: Api) -> None:
    headers = basic_auth("sandbox-consumer-key", "sandbox-consumer-secret")
    status, body = await api.grant({"grant_type": "client_credentials"}, headers=headers)
    assert status == 200
    status, _, _ = await api.call("GET", f"{V}/sobjects/Lead/describe", token=body["access_token"])
    assert status == 200


@pytest.mark.parametrize(
    ("form", "basic"),
    [
        ({"client_id": "sandbox-consumer-key", "client_secret": "wrong"}, None),
        ({"client_id": "other", "client_secret": "sandbox-consumer-secret"}, None),
        ({"client_id": "sandbox-consumer-key"}, None),
        ({}, ("sandbox-consumer-key", "wrong")),
    ],
)
async def test_bad_client_credentials(
    api: Api, form: dict[str, str], basic: tuple[str, str] | None
) -> None:
    headers = basic_auth(*basic) if basic else {}
    status, body = await api.grant({"grant_type": "client_credentials", **form}, headers=headers)
    assert (status, body) == (
        400,
        {"error": "invalid_client", "error_description": "invalid client credentials"},
    )


async def test_unknown_grant_type(api: Api) -> None:
    status, body = await api.grant({"grant_type": "password", "username": "u", "password": "p"})
    assert (status, body["error"], body["error_description"]) == (
        400,
        "unsupported_grant_type",
        "grant type not supported",
    )


@pytest.mark.parametrize(
    "audience", ["https://login.salesforce.com", "https://test.salesforce.com", "self"]
)
async def test_jwt_bearer_grant(
    api: Api, keys: tuple[bytes, bytes], clock: Clock, audience: str
) -> None:
    aud = api.base if audience == "self" else audience
    status, body = await api.grant(
        {"grant_type": sf.JWT_GRANT, "assertion": assertion(keys[0], clock, aud=aud)}
    )
    assert status == 200, body
    assert body["instance_url"] == api.base
    assert "refresh_token" not in body
    status, _, _ = await api.call("GET", f"{V}/sobjects/Lead/describe", token=body["access_token"])
    assert status == 200


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        ({"aud": "https://evil.example.com"}, "invalid_grant", "audience is invalid"),
        ({"exp_ahead": 181}, "invalid_grant", "invalid assertion"),
        ({"exp_ahead": -1}, "invalid_grant", "expired authorization code"),
        ({"wrong_key": True}, "invalid_grant", "invalid assertion"),
        ({"sub": "someone@example.com"}, "invalid_grant", "invalid assertion"),
        ({"iss": "other-app"}, "invalid_client_id", "client identifier invalid"),
    ],
)
async def test_jwt_bearer_failures(
    api: Api,
    keys: tuple[bytes, bytes],
    other_private_key: bytes,
    clock: Clock,
    claims: dict[str, Any],
    error: str,
    description: str,
) -> None:
    key = other_private_key if claims.pop("wrong_key", False) else keys[0]
    if "exp_ahead" in claims:
        claims["exp"] = int(clock.now) + claims.pop("exp_ahead")
    status, body = await api.grant(
        {"grant_type": sf.JWT_GRANT, "assertion": assertion(key, clock, **claims)}
    )
    assert (status, body) == (400, {"error": error, "error_description": description})


async def test_jwt_without_exp_and_garbage_are_invalid(api: Api, keys: tuple[bytes, bytes]) -> None:
    no_exp = jwt.encode(
        {"iss": "sandbox-consumer-key", "sub": JWT_USER, "aud": "https://login.salesforce.com"},
        keys[0],
        algorithm="RS256",
    )
    for token in (no_exp, "not.a.jwt", ""):
        status, body = await api.grant({"grant_type": sf.JWT_GRANT, "assertion": token})
        assert (status, body["error_description"]) == (400, "invalid assertion")


async def test_refresh_token_grant(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    refresh = sandbox.issue_refresh_token()
    form = {"grant_type": "refresh_token", "client_id": "sandbox-consumer-key"}
    status, body = await api.grant(form | {"refresh_token": refresh})
    assert status == 200
    assert body["access_token"]
    status, body = await api.grant(form | {"refresh_token": "5Aep861nope"})
    assert (status, body["error"]) == (400, "invalid_grant")
    assert sandbox.token_requests["refresh_token"] == 2


async def test_token_secrets_are_masked_in_records_and_repr(
    api: Api, sandbox: sf.SalesforceSandbox
) -> None:
    [recorded] = [r for r in sandbox.requests if r.path == sf.TOKEN_PATH]
    assert recorded.body["client_secret"] == "***"
    assert recorded.route == sf.TOKEN_PATH
    assert recorded.status == 200
    assert "sandbox-consumer-secret" not in repr(sandbox) + repr(sandbox.requests)
    assert api.token not in repr(sandbox)


# --- Sessions, versions, limits -----------------------------------------------------------


async def test_expired_sessions_answer_invalid_session_id(
    api: Api, sandbox: sf.SalesforceSandbox
) -> None:
    sandbox.expire_sessions()
    status, body, headers = await api.call("GET", f"{V}/sobjects/Lead/describe")
    assert (status, body) == (
        401,
        [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
    )
    assert sf.LIMIT_HEADER in headers
    await api.login()
    status, _, _ = await api.call("GET", f"{V}/sobjects/Lead/describe")
    assert status == 200


async def test_session_times_out_after_inactivity(api: Api, clock: Clock) -> None:
    clock.advance(7199)  # each call resets the inactivity timer
    assert (await api.call("GET", f"{V}/sobjects/Lead/describe"))[0] == 200
    clock.advance(7199)
    assert (await api.call("GET", f"{V}/sobjects/Lead/describe"))[0] == 200
    clock.advance(7200)
    status, body, _ = await api.call("GET", f"{V}/sobjects/Lead/describe")
    assert (status, body[0]["errorCode"]) == (401, "INVALID_SESSION_ID")


@pytest.mark.parametrize("token", ["", "00D000000000001!forged"])
async def test_missing_or_unknown_token(api: Api, token: str) -> None:
    api.token = token
    status, body, _ = await api.call("GET", f"{V}/sobjects/Lead/describe")
    assert (status, body[0]["errorCode"]) == (401, "INVALID_SESSION_ID")


async def test_retired_version_is_gone(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    status, body, _ = await api.call("GET", "/services/data/v30.0/sobjects/Lead/describe")
    assert status == 410
    assert body[0]["errorCode"] == "GONE"
    assert "retired" in body[0]["message"]
    status, _, _ = await api.call("GET", "/services/data/v31.0/sobjects/Lead/describe")
    assert status == 200


async def test_versions_list_needs_no_token_and_is_not_counted(
    api: Api, sandbox: sf.SalesforceSandbox
) -> None:
    status, body, headers = await api.call("GET", "/services/data/", token="")
    assert status == 200
    assert sf.LIMIT_HEADER not in headers
    assert body[0] == {"label": "Summer '14", "url": "/services/data/v31.0", "version": "31.0"}
    assert {"label": "Spring '26", "url": "/services/data/v66.0", "version": "66.0"} in body
    assert sandbox.api_usage == 0


async def test_limit_info_increases_then_request_limit_exceeded(
    api: Api, sandbox: sf.SalesforceSandbox
) -> None:
    seen = [
        (await api.call("GET", f"{V}/sobjects/Lead/describe"))[2][sf.LIMIT_HEADER] for _ in range(3)
    ]
    assert seen == ["api-usage=1/1000", "api-usage=2/1000", "api-usage=3/1000"]
    sandbox.set_usage(999)
    assert (await api.call("GET", f"{V}/sobjects/Lead/describe"))[0] == 200
    status, body, headers = await api.call("GET", f"{V}/sobjects/Lead/describe")
    assert (status, body) == (
        403,
        [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
    )
    assert headers[sf.LIMIT_HEADER] == "api-usage=1000/1000"


# --- sObject Collections update -----------------------------------------------------------


def lead(record_id: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Lead"}, "id": record_id, **fields}


async def test_more_than_200_records_is_refused(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    lead_id = sandbox.add_record("Lead", {"LastName": "A", "Company": "C"})
    body = {"records": [lead(lead_id, Lance_Status__c="found")] * 201}
    status, errors, _ = await api.call("PATCH", f"{V}/composite/sobjects", json=body)
    assert status == 400
    assert errors[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert "200" in errors[0]["message"]
    assert sandbox.record("Lead", lead_id).get("Lance_Status__c") is None
    body = {"records": [lead(lead_id, Lance_Status__c="found")] * 200}
    status, results, _ = await api.call("PATCH", f"{V}/composite/sobjects", json=body)
    assert status == 200
    assert len(results) == 200


async def test_per_record_results_in_order(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    ok_lead = sandbox.add_record("Lead", {"LastName": "A", "Phone": "1"})
    ruled = sandbox.add_record("Lead", {"LastName": "B"})
    contact = sandbox.add_record("Contact", {"LastName": "C"})
    account = sandbox.add_record("Account", {"Name": "D"})
    sandbox.add_validation_rule("Lead", ruled, "Phone must be in E.164")
    deleted = sf.with_checksum(ok_lead[:3] + "000000000ZZZ")
    records = [
        lead(ok_lead, Lance_Status__c="found", Phone=None),
        lead(ruled, Lance_Status__c="found"),
        {"attributes": {"type": "Contact"}, "id": contact, "Nope__c": "x"},
        {"attributes": {"type": "Contact"}, "id": account, "LastName": "wrong type"},
        lead(deleted, Lance_Status__c="found"),
        {"attributes": {"type": "Account"}, "id": account, "Lance_Status__c": "found"},
    ]
    status, results, headers = await api.call(
        "PATCH", f"{V}/composite/sobjects/", json={"records": records}
    )
    assert status == 200
    assert sf.LIMIT_HEADER in headers
    assert results[0] == {"id": ok_lead, "success": True, "errors": []}
    assert results[1]["errors"] == [
        {
            "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "message": "Phone must be in E.164",
            "fields": [],
        }
    ]
    assert results[2]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert results[2]["errors"][0]["fields"] == ["Nope__c"]
    assert results[3]["errors"] == [
        {
            "statusCode": "MALFORMED_ID",
            "message": f"Contact ID: id value of incorrect type: {account}",
            "fields": ["Id"],
        }
    ]
    assert results[4]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert results[5] == {"id": account, "success": True, "errors": []}
    assert [r["success"] for r in results] == [True, False, False, False, False, True]
    assert all("errorCode" not in e for r in results for e in r["errors"])
    assert sandbox.record("Lead", ok_lead) == {
        "Id": ok_lead,
        "LastName": "A",
        "Phone": None,
        "Lance_Status__c": "found",
    }
    assert "Lance_Status__c" not in sandbox.record("Lead", ruled)
    assert sandbox.record("Account", account)["Lance_Status__c"] == "found"


async def test_all_or_none_rolls_everything_back(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    first = sandbox.add_record("Lead", {"LastName": "A"})
    ruled = sandbox.add_record("Lead", {"LastName": "B"})
    last = sandbox.add_record("Lead", {"LastName": "C"})
    sandbox.add_validation_rule("Lead", ruled, "nope")
    body = {
        "allOrNone": True,
        "records": [lead(i, Lance_Status__c="found") for i in (first, ruled, last)],
    }
    status, results, _ = await api.call("PATCH", f"{V}/composite/sobjects", json=body)
    assert status == 200
    codes = [r["errors"][0]["statusCode"] for r in results]
    assert codes == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    ]
    assert results[0]["id"] == first
    assert results[0]["success"] is False
    assert all("Lance_Status__c" not in sandbox.record("Lead", i) for i in (first, ruled, last))


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{not json", "JSON_PARSER_ERROR"),
        (b'{"allOrNone": false}', "INVALID_INPUT"),
        (b'{"records": [{"id": "x"}]}', "INVALID_INPUT"),
        (b'{"records": [{"attributes": {"type": "Widget"}, "id": "x"}]}', "INVALID_TYPE"),
        (b'{"allOrNone": "yes", "records": []}', "JSON_PARSER_ERROR"),
    ],
)
async def test_malformed_collection_requests(api: Api, data: bytes, code: str) -> None:
    headers = {"Content-Type": "application/json"}
    status, body, _ = await api.call("PATCH", f"{V}/composite/sobjects", data=data, headers=headers)
    assert (status, body[0]["errorCode"]) == (400, code)


async def test_more_than_ten_type_chunks_is_refused(
    api: Api, sandbox: sf.SalesforceSandbox
) -> None:
    lead_id = sandbox.add_record("Lead", {"LastName": "A"})
    contact_id = sandbox.add_record("Contact", {"LastName": "B"})
    contact = {"attributes": {"type": "Contact"}, "id": contact_id, "Lance_Status__c": "x"}
    records = [lead(lead_id, Lance_Status__c="x"), contact] * 5 + [lead(lead_id)]
    status, body, _ = await api.call("PATCH", f"{V}/composite/sobjects", json={"records": records})
    assert status == 400
    assert "10 chunks" in body[0]["message"]
    status, _, _ = await api.call(
        "PATCH", f"{V}/composite/sobjects", json={"records": records[:10]}
    )
    assert status == 200


async def test_single_record_patch(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    lead_id = sandbox.add_record("Lead", {"LastName": "A", "Email": "a@example.com"})
    status, body, headers = await api.call(
        "PATCH",
        f"{V}/sobjects/Lead/{lead_id[:15]}",
        json={"Email": None, "lance_status__c": "found"},
    )
    assert (status, body) == (204, None)
    assert sf.LIMIT_HEADER in headers
    assert sandbox.record("Lead", lead_id) == {
        "Id": lead_id,
        "LastName": "A",
        "Email": None,
        "Lance_Status__c": "found",
    }
    status, body, _ = await api.call("PATCH", f"{V}/sobjects/Lead/{lead_id}", json={"Nope": 1})
    assert (status, body[0]["errorCode"]) == (400, "INVALID_FIELD")
    missing = sf.with_checksum("00Q000000000ZZZ")
    status, body, _ = await api.call("PATCH", f"{V}/sobjects/Lead/{missing}", json={})
    assert (status, body[0]["errorCode"]) == (404, "NOT_FOUND")


# --- Reads: SOQL, describe, retrieve ------------------------------------------------------


async def test_soql_id_in_query(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    a = sandbox.add_record("Contact", {"LastName": "A", "Email": "a@example.com"})
    b = sandbox.add_record("Contact", {"LastName": "B"})
    unknown = sf.with_checksum("003000000000ZZZ")
    soql = f"select Id, email, LastName from Contact where ID in ('{b}', '{unknown}','{a[:15]}')"
    status, body, _ = await api.call("GET", f"{V}/query", params={"q": soql})
    assert status == 200
    assert (body["totalSize"], body["done"]) == (2, True)
    assert body["records"] == [
        {
            "attributes": {"type": "Contact", "url": f"{V}/sobjects/Contact/{b}"},
            "Id": b,
            "Email": None,
            "LastName": "B",
        },
        {
            "attributes": {"type": "Contact", "url": f"{V}/sobjects/Contact/{a}"},
            "Id": a,
            "Email": "a@example.com",
            "LastName": "A",
        },
    ]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Contact", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE Id IN (003)", "MALFORMED_QUERY"),
        ("SELECT Nope__c FROM Contact WHERE Id IN ('003000000000001')", "INVALID_FIELD"),
        ("SELECT Id FROM Widget WHERE Id IN ('003000000000001')", "INVALID_TYPE"),
        ("SELECT Id FROM Contact WHERE Id IN ('bogus')", "INVALID_QUERY_FILTER_OPERATOR"),
    ],
)
async def test_bad_soql(api: Api, soql: str, code: str) -> None:
    status, body, _ = await api.call("GET", f"{V}/query", params={"q": soql})
    assert (status, body[0]["errorCode"]) == (400, code)


async def test_describe(api: Api) -> None:
    status, body, _ = await api.call("GET", f"{V}/sobjects/Account/describe")
    assert status == 200
    assert body["name"] == "Account"
    fields = {f["name"]: f for f in body["fields"]}
    assert set(fields) == set(sf.DEFAULT_SCHEMAS["Account"])
    assert fields["Id"]["updateable"] is False
    assert fields["Lance_Company_Id__c"]["updateable"] is True
    assert fields["Lance_Company_Id__c"]["custom"] is True
    status, body, _ = await api.call("GET", f"{V}/sobjects/Widget/describe")
    assert (status, body) == (
        404,
        [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}],
    )


async def test_collections_retrieve(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    a = sandbox.add_record("Lead", {"LastName": "A", "Company": "X"})
    b = sandbox.add_record("Lead", {"LastName": "B"})
    missing = sf.with_checksum("00Q000000000ZZZ")
    body = {"ids": [b, missing, a], "fields": ["Id", "Company"]}
    status, records, _ = await api.call("POST", f"{V}/composite/sobjects/Lead", json=body)
    assert status == 200
    assert records == [
        {"attributes": {"type": "Lead", "url": f"{V}/sobjects/Lead/{b}"}, "Id": b, "Company": None},
        None,
        {"attributes": {"type": "Lead", "url": f"{V}/sobjects/Lead/{a}"}, "Id": a, "Company": "X"},
    ]
    body = {"ids": [a] * 2001, "fields": ["Id"]}
    status, errors, _ = await api.call("POST", f"{V}/composite/sobjects/Lead", json=body)
    assert (status, errors[0]["errorCode"]) == (400, "EXCEEDED_ID_LIMIT")


# --- Faults, counters and the admin surface -----------------------------------------------


async def test_fail_next_on_one_route(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    sandbox.reset_counts()
    sandbox.fail_next(2, 503, route=COLLECTION_KEY)
    lead_id = sandbox.add_record("Lead", {"LastName": "A"})
    body = {"records": [lead(lead_id, Lance_Status__c="found")]}
    assert (await api.call("GET", f"{V}/sobjects/Lead/describe"))[0] == 200
    statuses = [
        (await api.call("PATCH", f"{V}/composite/sobjects", json=body))[0] for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    assert sandbox.counts[COLLECTION_KEY] == 3
    assert [r.status for r in sandbox.requests] == [200, 503, 503, 200]
    sandbox.fail_next(1, 500, body=[{"message": "boom", "errorCode": "UNKNOWN_EXCEPTION"}])
    status, errors, headers = await api.call("GET", f"{V}/sobjects/Lead/describe")
    assert (status, errors[0]["message"]) == (500, "boom")
    assert sf.LIMIT_HEADER in headers


async def test_admin_surface(api: Api, sandbox: sf.SalesforceSandbox) -> None:
    sandbox.reset_counts()
    async with api.http.post(f"{api.base}/_sim/records/Contact", json={"LastName": "Z"}) as resp:
        assert resp.status == 201
        contact_id = (await resp.json())["id"]
    assert re.fullmatch(r"003[A-Za-z0-9]{15}", contact_id)
    async with api.http.get(f"{api.base}/_sim/records/Contact/{contact_id}") as resp:
        assert await resp.json() == {"Id": contact_id, "LastName": "Z"}
    fault = {"count": 1, "status": 401, "route": "/services/data/v{version}/query"}
    async with api.http.post(f"{api.base}/_sim/faults", json=fault) as resp:
        assert resp.status == 200
    status, body, _ = await api.call("GET", f"{V}/query", params={"q": "x"})
    assert (status, body[0]["errorCode"]) == (401, "INVALID_SESSION_ID")
    async with api.http.get(f"{api.base}/_sim/counts") as resp:
        stats = await resp.json()
    assert stats["counts"] == {"GET /services/data/v{version}/query": 1}
    assert stats["records"]["Contact"] == 1
    async with api.http.post(f"{api.base}/_sim/expire-sessions") as resp:
        assert resp.status == 204
    assert (await api.call("GET", f"{V}/sobjects/Lead/describe"))[0] == 401


# --- Outbound Messages ---------------------------------------------------------------------


def test_outbound_message_envelope() -> None:
    envelope = sf.outbound_message(
        "00D000000000001EAA",
        [
            (
                "04l000000000001AAA",
                "Contact",
                {"Id": "003000000000001AAA", "Email": "a&b@<x>.com", "Phone": None},
            ),
            ("04l000000000002AAA", "Lead", {"Id": "00Q000000000001AAA"}),
        ],
    )
    assert envelope.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = SafeElementTree.fromstring(envelope, forbid_dtd=True)
    assert root.tag == f"{SOAP}Envelope"
    message = root.find(f"{SOAP}Body/{OM}notifications")
    assert message is not None
    assert message.findtext(f"{OM}OrganizationId") == "00D000000000001EAA"
    assert message.findtext(f"{OM}ActionId") == "04k000000000001AAA"
    session = message.find(f"{OM}SessionId")
    assert session is not None
    assert session.get(XSI_NIL) == "true"
    assert message.findtext(f"{OM}EnterpriseUrl", "").endswith(
        "/services/Soap/c/66.0/00D000000000001"
    )
    assert message.findtext(f"{OM}PartnerUrl", "").endswith("/services/Soap/u/66.0/00D000000000001")
    first, second = message.findall(f"{OM}Notification")
    assert first.findtext(f"{OM}Id") == "04l000000000001AAA"
    sobject = first.find(f"{OM}sObject")
    assert sobject is not None
    assert sobject.get(XSI_TYPE) == "sf:Contact"
    assert [(child.tag, child.text) for child in sobject] == [
        (f"{SF}Id", "003000000000001AAA"),
        (f"{SF}Email", "a&b@<x>.com"),
    ]
    assert second.findtext(f"{OM}sObject/{SF}Id") == "00Q000000000001AAA"
    assert b'xmlns:sf="urn:sobject.enterprise.soap.sforce.com"' in envelope


def test_outbound_message_with_session_id() -> None:
    envelope = sf.outbound_message(
        "00D000000000001EAA", [("04l1", "Lead", {"Id": "00Q1"})], session_id="00D!AQ8<x>"
    )
    root = SafeElementTree.fromstring(envelope)
    assert root.findtext(f"{SOAP}Body/{OM}notifications/{OM}SessionId") == "00D!AQ8<x>"


@pytest.mark.parametrize(
    "notifications",
    [
        [],
        [("04l", "Lead", {"Id": "00Q1"})] * 101,
        [("04l", "Lead", {"Email": "no id"})],
        [("04l", "Lead x", {"Id": "00Q1"})],
        [("04l", "Lead", {"Id": "00Q1", "Bad-Name": "x"})],
        [("04l", "Lead", {"Id": "00Q1", "Description": "bell\x07"})],
    ],
)
def test_outbound_message_refuses(notifications: list[tuple[str, str, dict[str, str]]]) -> None:
    with pytest.raises(ValueError):
        sf.outbound_message("00D000000000001EAA", notifications)


def test_outbound_message_accepts_100() -> None:
    envelope = sf.outbound_message("00D000000000001EAA", [("04l", "Lead", {"Id": "00Q1"})] * 100)
    assert envelope.count(b"<Notification>") == 100


@pytest.mark.parametrize(
    ("reply", "acked"),
    [
        (sf.ACK_RESPONSE, True),
        (sf.ACK_RESPONSE.replace(b">true<", b">false<"), False),
        (sf.ACK_RESPONSE.replace(b"2005/09/outbound", b"2005/09/other"), False),
        (b"OK", False),
        (b'{"ack": true}', False),
        (b"", False),
        (b"<Ack>true</Ack>", False),
        (sf.XML_BOMB, False),
        (sf.EXTERNAL_ENTITY, False),
    ],
)
def test_is_ack(reply: bytes, acked: bool) -> None:
    assert sf.is_ack(reply) is acked


def test_hostile_samples_are_refused_by_defusedxml() -> None:
    for sample in (sf.XML_BOMB, sf.EXTERNAL_ENTITY):
        with pytest.raises(DefusedXmlException):
            SafeElementTree.fromstring(sample)


async def test_send_outbound_message_retries_until_ack() -> None:
    replies = [
        web.Response(text="OK"),
        web.Response(status=500),
        web.Response(body=sf.ACK_RESPONSE),
    ]
    seen: list[tuple[str | None, str | None, bytes]] = []

    async def receiver(request: web.Request) -> web.Response:
        seen.append(
            (
                request.headers.get("Content-Type"),
                request.headers.get("SOAPAction"),
                await request.read(),
            )
        )
        return replies.pop(0)

    app = web.Application()
    app.router.add_post("/hooks/salesforce", receiver)
    runner = await _http.serve_app(app)
    envelope = sf.outbound_message("00D000000000001EAA", [("04l1", "Lead", {"Id": "00Q1"})])
    url = f"{_http.base_url(runner)}/hooks/salesforce"
    try:
        async with aiohttp.ClientSession() as http:
            assert await sf.send_outbound_message(http, url, envelope) is True
            replies.append(web.Response(status=500))
            assert await sf.send_outbound_message(http, url, envelope, max_attempts=1) is False
    finally:
        await runner.cleanup()
    assert len(seen) == 4
    assert seen[0] == ("text/xml; charset=UTF-8", '""', envelope)

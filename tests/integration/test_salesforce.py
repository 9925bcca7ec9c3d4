"""Salesforce both ways over loopback: Outbound Messages in → Lance simulator → collections out.

Envelopes are built by the bundled sandbox (``outbound_message``), records live in the Salesforce
sandbox served on loopback, and the bridge is the real app with a real SQLite ledger.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from defusedxml import ElementTree as SafeElementTree

from bridge import errors, runtime
from bridge.sim import lance as sim
from bridge.sim import salesforce as sf
from bridge.sim.lance.entities import fake_person
from connectors import salesforce as connector
from tests.conftest import BridgeFactory, Clock, auth, drain, jobs_of, make_settings

ORG_ID = "00D000000000001EAA"
FLOW_TOKEN = "flow-shared-secret-0123456789"
CLIENT_ID = "sandbox-consumer-key"
CLIENT_SECRET = "sandbox-consumer-secret"
JWT_USER = "integration@example.com"
HOOK = "/hooks/salesforce"
V = "/services/data/v{version}"
UPDATE = f"PATCH {V}/composite/sobjects"
RETRIEVE = f"POST {V}/composite/sobjects/{{sobject}}"
TRIGGER = "POST /api/v1/operations/enrichment/batch"
SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"

Client = TestClient[Any, Any]
_serial = itertools.count(1)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
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


@pytest.fixture
async def salesforce(
    clock: Clock, rsa_keys: tuple[bytes, bytes]
) -> AsyncIterator[tuple[sf.SalesforceSandbox, str]]:
    sandbox = sf.SalesforceSandbox(
        clock=clock, org_id=ORG_ID, jwt_public_key_pem=rsa_keys[1], daily_limit=100_000
    )
    runner = await sf.serve(sandbox)
    yield sandbox, sf.base_url(runner)
    await runner.cleanup()


def sf_table(salesforce_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "salesforce",
        "type": "salesforce",
        "login_url": salesforce_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "organization_id": ORG_ID,
        "flow_token": FLOW_TOKEN,
    } | extra


async def start(
    make_bridge: BridgeFactory, tmp_path: Path, lance_url: str, table: dict[str, Any]
) -> Client:
    """The bridge with one Salesforce connector (on the bridge's clock: the test clock)."""
    client = await make_bridge(make_settings(tmp_path, lance_url, connectors=[table]))
    assert client.app[runtime.BRIDGE].connectors[table["name"]].clock is clock_of(client)
    return client


def clock_of(client: Client) -> Any:
    return client.app[runtime.BRIDGE].clock


def the_connector(client: Client) -> connector.SalesforceConnector:
    item = client.app[runtime.BRIDGE].connectors["salesforce"]
    assert isinstance(item, connector.SalesforceConnector)
    return item


def people(
    sandbox: sf.SalesforceSandbox, n: int, sobject: str = "Contact", **fields: str
) -> list[str]:
    return [
        sandbox.add_record(
            sobject,
            {"LastName": f"P{i}", "Lance_Person_Id__c": str(uuid.uuid4()), **fields},
        )
        for i in range(n)
    ]


def notification_id() -> str:
    return f"04l{next(_serial):012d}AAA"


def envelope(
    sandbox: sf.SalesforceSandbox, records: list[tuple[str, str]], **options: Any
) -> bytes:
    """An Outbound Message about ``(sObject type, id)`` records, with their current fields."""
    notifications = []
    for sobject, record_id in records:
        fields = {k: str(v) for k, v in sandbox.record(sobject, record_id).items() if v}
        notifications.append((notification_id(), sobject, fields))
    return sf.outbound_message(options.pop("org_id", ORG_ID), notifications, **options)


async def post_soap(client: Client, body: bytes, **headers: str) -> Any:
    return await client.post(HOOK, data=body, headers=sf.OUTBOUND_HEADERS | headers)


async def send_all(
    client: Client, sandbox: sf.SalesforceSandbox, records: list[tuple[str, str]]
) -> None:
    for start_at in range(0, len(records), 100):
        response = await post_soap(client, envelope(sandbox, records[start_at : start_at + 100]))
        assert response.status == 200
        assert sf.is_ack(await response.read())


async def count(client: Client, sql: str) -> int:
    [(found,)] = await client.app[runtime.BRIDGE].ledger.fetch(sql)
    return int(found)


async def rows(client: Client, table: str) -> int:
    return await count(client, f"SELECT count(*) FROM {table}")


def lance_values(person_id: str, field: str) -> list[str]:
    """What the simulator's person holds for ``field`` once enriched."""
    found = fake_person(person_id, emails=True, phones=True)[field]
    assert isinstance(found, list)
    return [str(v) for v in found]


def assert_enriched(sandbox: sf.SalesforceSandbox, sobject: str, record_id: str) -> None:
    record = sandbox.record(sobject, record_id)
    emails = lance_values(record["Lance_Person_Id__c"], "emails")
    phones = lance_values(record["Lance_Person_Id__c"], "phones")
    assert record["Email"] == emails[0]
    assert record["Phone"] == phones[0]
    assert record.get("MobilePhone") == (phones[1] if len(phones) > 1 else None)


def fault_of(body: bytes) -> tuple[str, str]:
    root = SafeElementTree.fromstring(body, forbid_dtd=True)
    fault = root.find(f"{SOAP}Body/{SOAP}Fault")
    assert fault is not None, body
    return fault.findtext("faultcode", ""), fault.findtext("faultstring", "")


# -- inbound: Outbound Messages ----------------------------------------------------------------


@pytest.mark.parametrize("org_id", [ORG_ID, ORG_ID[:15]], ids=["18-char", "15-char"])
async def test_one_notification_is_acked_and_its_record_gets_the_values(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    org_id: str,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(
        make_bridge, tmp_path, simulator[1], sf_table(sf_url, organization_id=org_id)
    )
    [contact] = people(sandbox, 1)

    response = await post_soap(client, envelope(sandbox, [("Contact", contact)]))

    assert response.status == 200
    assert response.content_type == "text/xml"
    assert sf.is_ack(await response.read())
    await drain(client)
    assert_enriched(sandbox, "Contact", contact)
    targets = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT DISTINCT connector, object_type, object_id FROM targets"
    )
    assert [tuple(t) for t in targets] == [("salesforce", "Contact", contact)]


async def test_soap_12_content_type_is_taken_too(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    [lead] = people(sandbox, 1, "Lead", Company="Analytical")
    body = envelope(sandbox, [("Lead", lead)])

    response = await post_soap(client, body, **{"Content-Type": "application/soap+xml"})

    assert response.status == 200
    assert sf.is_ack(await response.read())
    assert await rows(client, "enrichments") == 2


async def test_500_records_in_envelopes_of_100_cost_3_collection_updates(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    leads = people(sandbox, 150, "Lead", Company="Analytical")
    contacts = people(sandbox, 350)
    records = [("Lead", i) for i in leads] + [("Contact", i) for i in contacts]

    await send_all(client, sandbox, records)
    await drain(client)

    for sobject, record_id in records:
        assert_enriched(sandbox, sobject, record_id)
    assert sandbox.counts[UPDATE] == math.ceil(500 / 200)
    # fill_if_empty reads the current values first: one retrieve per type in each request
    # (150 Leads + 50 Contacts, 200 Contacts, 100 Contacts).
    assert sandbox.counts[RETRIEVE] == 4
    assert sum(sandbox.token_requests.values()) == 1
    assert await count(client, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 1000


async def test_the_same_envelope_twice_triggers_once(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance_sim, lance_url = simulator
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, lance_url, sf_table(sf_url))
    body = envelope(sandbox, [("Contact", i) for i in people(sandbox, 3)])

    first = await post_soap(client, body)
    await drain(client)
    clock.advance(60)
    again = await post_soap(client, body)
    await drain(client)

    for response in (first, again):
        assert response.status == 200
        assert sf.is_ack(await response.read())
    assert await rows(client, "enrichments") == 6
    assert await rows(client, "inbound") == 3
    assert lance_sim.requests[TRIGGER] == 2  # one per field, never again
    assert max(lance_sim.charges.values()) == 1


async def test_unusable_notifications_are_acked_and_counted_as_skipped(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    without = sandbox.add_record("Contact", {"LastName": "No Id"})
    not_uuid = sandbox.add_record("Lead", {"LastName": "Bad", "Lance_Person_Id__c": "12345"})
    body = sf.outbound_message(
        ORG_ID,
        [
            (notification_id(), "Contact", {"Id": without, "LastName": "No Id"}),
            (notification_id(), "Lead", {"Id": not_uuid, "Lance_Person_Id__c": "12345"}),
            (notification_id(), "Opportunity", {"Id": "006000000000001AAA"}),
        ],
    )

    response = await post_soap(client, body)

    assert response.status == 200
    assert sf.is_ack(await response.read())
    assert await rows(client, "enrichments") == 0
    details = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT detail FROM inbound WHERE state = 'skipped' ORDER BY received_at, key"
    )
    assert sorted(str(d[0]) for d in details) == sorted(
        [
            f"no Lance_Person_Id__c on Contact {without}",
            "Lance_Person_Id__c '12345' is not a Lance id (UUID v4)",
            "sObject type Opportunity: not a Lead, Contact or Account",
        ]
    )


def _with_101(body: bytes) -> bytes:
    extra = sf.outbound_message(ORG_ID, [(notification_id(), "Lead", {"Id": "00Q000000000001AAA"})])
    one = extra[extra.index(b"<Notification>") : extra.index(b"</notifications>")]
    return body.replace(b"</notifications>", one + b"</notifications>")


def _hundred() -> bytes:
    return sf.outbound_message(
        ORG_ID, [(notification_id(), "Lead", {"Id": "00Q000000000001AAA"})] * 100
    )


SOAP_REFUSALS: dict[str, tuple[Any, dict[str, str], int, str]] = {
    # case: (body, extra headers, status, words in the faultstring)
    "malformed XML": (b"<soapenv:Envelope><unclosed>", {}, 400, "not well-formed"),
    "XML bomb": (sf.XML_BOMB, {}, 400, "DTD"),
    "external entity": (sf.EXTERNAL_ENTITY, {}, 400, "DTD"),
    "unknown encoding": (b'<?xml version="1.0" encoding="foo"?><a/>', {}, 400, "not well-formed"),
    "not a notifications envelope": (
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soapenv:Body><other/></soapenv:Body></soapenv:Envelope>",
        {},
        400,
        "not an Outbound Message",
    ),
    "101 notifications": (lambda: _with_101(_hundred()), {}, 400, "1 to 100"),
    "wrong organization": ("other-org", {}, 401, "OrganizationId"),
    "wrong content type": ("ok", {"Content-Type": "text/plain"}, 415, "text/plain"),
    "no content type": ("ok", {"Content-Type": ""}, 415, "Content-Type"),
}


@pytest.mark.parametrize("case", list(SOAP_REFUSALS))
async def test_a_refused_outbound_message_gets_a_soap_fault_and_stores_nothing(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    case: str,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    records = [("Contact", i) for i in people(sandbox, 2)]
    body, headers, status, words = SOAP_REFUSALS[case]
    if body == "ok":
        body = envelope(sandbox, records)
    elif body == "other-org":
        body = envelope(sandbox, records, org_id="00D000000000002EAA")
    elif callable(body):
        body = body()

    response = await post_soap(client, body, **headers)

    assert response.status == status
    assert response.content_type == "text/xml"
    code, text = fault_of(await response.read())
    assert code == ("soapenv:Client")
    assert words in text
    assert await rows(client, "enrichments") == 0
    assert await rows(client, "inbound") == 0


async def test_action_ids_limit_which_outbound_messages_are_taken(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    table = sf_table(sf_url, action_ids=["04k000000000001"])
    client = await start(make_bridge, tmp_path, simulator[1], table)
    [contact] = people(sandbox, 1)

    allowed = await post_soap(client, envelope(sandbox, [("Contact", contact)]))
    other = await post_soap(
        client, envelope(sandbox, [("Contact", contact)], action_id="04k000000000009AAA")
    )

    assert allowed.status == 200
    assert other.status == 401
    assert "ActionId" in fault_of(await other.read())[1]
    assert await rows(client, "inbound") == 1


async def test_a_company_summary_is_tracked_and_written_to_the_account_description(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    lance_sim, lance_url = simulator
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, lance_url, sf_table(sf_url))
    company_id = str(uuid.uuid4())
    lance_sim.start_enrichment(company_id, "summary", "company", outcome="found")
    account = sandbox.add_record("Account", {"Name": "Acme", "Lance_Company_Id__c": company_id})

    await post_soap(client, envelope(sandbox, [("Account", account)]))
    await drain(client)

    assert sandbox.record("Account", account)["Description"]
    assert lance_sim.requests[TRIGGER] == 0  # tracked, never triggered


# -- inbound: Flow HTTP Callouts ----------------------------------------------------------------


def flow_headers(token: str | None = FLOW_TOKEN) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def test_a_flow_callout_triggers_its_records_once(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    ids = people(sandbox, 2)
    body = json.dumps(
        [
            {
                "recordId": i[:15],  # Flows may send the 15-character form
                "objectType": "Contact",
                "lanceId": sandbox.record("Contact", i)["Lance_Person_Id__c"],
                "fields": ["phones"],
            }
            for i in ids
        ]
    ).encode()

    response = await client.post(HOOK, data=body, headers=flow_headers())
    again = await client.post(HOOK, data=body, headers=flow_headers())
    await drain(client)

    assert response.status == 200
    assert await response.json() == {
        "received": 2,
        "duplicates": 0,
        "skipped": 0,
        "lookups": 0,
        "enrichments": 2,
    }
    assert (await again.json())["duplicates"] == 2
    keys = await client.app[runtime.BRIDGE].ledger.fetch("SELECT key FROM inbound ORDER BY key")
    digest = hashlib.sha256(body).hexdigest()
    assert [k[0] for k in keys] == [f"flow:{digest}:0", f"flow:{digest}:1"]
    for contact in ids:
        record = sandbox.record("Contact", contact)
        assert record["Phone"] == lance_values(record["Lance_Person_Id__c"], "phones")[0]
        assert "Email" not in record


FLOW_REFUSALS: dict[str, tuple[bytes | None, dict[str, Any], str | None, int]] = {
    # case: (body or None for a valid one, connector settings, bearer token, status)
    "no token": (None, {}, None, 401),
    "wrong token": (None, {}, "not-the-flow-token", 401),
    "no flow_token configured": (None, {"flow_token": None}, FLOW_TOKEN, 401),
    "not JSON": (b"{", {}, FLOW_TOKEN, 400),
    "missing lanceId": (
        b'{"recordId": "003000000000001AAA", "objectType": "Contact"}',
        {},
        FLOW_TOKEN,
        400,
    ),
    "bad objectType": (
        b'{"recordId": "003000000000001AAA", "objectType": "Deal",'
        b' "lanceId": "3f6b6f2e-8a7c-4d8e-9b1a-2c3d4e5f6a7b"}',
        {},
        FLOW_TOKEN,
        400,
    ),
    "summary of a Contact": (
        b'{"recordId": "003000000000001AAA", "objectType": "Contact",'
        b' "lanceId": "3f6b6f2e-8a7c-4d8e-9b1a-2c3d4e5f6a7b", "fields": ["summary"]}',
        {},
        FLOW_TOKEN,
        400,
    ),
    "empty list": (b"[]", {}, FLOW_TOKEN, 400),
}


@pytest.mark.parametrize("case", list(FLOW_REFUSALS))
async def test_a_refused_flow_callout_gets_a_json_error_and_stores_nothing(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    case: str,
) -> None:
    sandbox, sf_url = salesforce
    body, settings, token, status = FLOW_REFUSALS[case]
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url, **settings))
    if body is None:
        [contact] = people(sandbox, 1)
        lance_id = sandbox.record("Contact", contact)["Lance_Person_Id__c"]
        body = json.dumps(
            {"recordId": contact, "objectType": "Contact", "lanceId": lance_id}
        ).encode()

    response = await client.post(HOOK, data=body, headers=flow_headers(token))

    assert response.status == status
    error = (await response.json())["error"]
    assert error["code"] == ("unauthorized" if status == 401 else error["code"])
    assert error["message"]
    assert await rows(client, "enrichments") == 0
    assert await rows(client, "inbound") == 0


# -- outbound: write policies ------------------------------------------------------------------


async def test_write_policies_fill_overwrite_and_never(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    mapping = {
        "fields": {
            "Phone": {"from": "phones[0]", "policy": "overwrite"},
            "MobilePhone": {"from": "phones[1]", "policy": "never"},
            "Lance_Status__c": {"from": "state", "policy": "overwrite"},
            "Lance_Last_Enriched__c": {"from": "enriched_at", "policy": "overwrite"},
        }
    }
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url, contact=mapping))
    [contact] = people(
        sandbox, 1, Email="kept@example.com", Phone="+1 555 0100", MobilePhone="+1 555 0199"
    )

    await post_soap(client, envelope(sandbox, [("Contact", contact)]))
    await drain(client)

    record = sandbox.record("Contact", contact)
    assert record["Email"] == "kept@example.com"  # fill_if_empty: already filled
    assert record["Phone"] == lance_values(record["Lance_Person_Id__c"], "phones")[0]
    assert record["MobilePhone"] == "+1 555 0199"  # never
    assert record["Lance_Status__c"] == "finished"
    assert record["Lance_Last_Enriched__c"].endswith("Z")


@pytest.mark.parametrize("sim_config", [{"outcomes": {"not_found": 1.0}}], indirect=True)
async def test_an_empty_result_changes_nothing_and_costs_no_request(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    mapping = {"fields": {"Phone": {"from": "phones[0]", "policy": "overwrite"}}}
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url, contact=mapping))
    [contact] = people(sandbox, 1, Phone="+1 555 0100")

    await post_soap(client, envelope(sandbox, [("Contact", contact)]))
    await drain(client)

    assert sandbox.record("Contact", contact)["Phone"] == "+1 555 0100"
    assert sandbox.counts[UPDATE] == sandbox.counts[RETRIEVE] == 0
    assert await count(client, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 2


# -- outbound: faults ---------------------------------------------------------------------------


async def deliveries_pending(client: Client, clock: Clock) -> None:
    """Run trigger, poll and fetch until the deliveries wait; the dispatcher not yet."""
    jobs = jobs_of(client)
    for _ in range(4):
        await jobs.triggerer.run_once()
        await jobs.poller.run_once()
        await jobs.fetcher.run_once()
        clock.advance(2)


async def test_an_expired_session_gets_exactly_one_new_token_and_loses_nothing(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    first = people(sandbox, 3)
    await send_all(client, sandbox, [("Contact", i) for i in first])
    await drain(client)
    assert sandbox.token_requests["client_credentials"] == 1
    sandbox.expire_sessions()
    second = people(sandbox, 3)

    await send_all(client, sandbox, [("Contact", i) for i in second])
    await drain(client)

    assert sandbox.token_requests["client_credentials"] == 2
    assert [r.status for r in sandbox.requests].count(401) == 1
    for contact in first + second:
        assert_enriched(sandbox, "Contact", contact)


@pytest.mark.parametrize("how", ["daily limit", "injected 403"])
async def test_request_limit_exceeded_is_throttling_not_an_auth_failure(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    clock: Clock,
    how: str,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    ids = people(sandbox, 3)
    await the_connector(client).call("GET", "/sobjects/Contact/describe")  # logs in
    await send_all(client, sandbox, [("Contact", i) for i in ids])
    await deliveries_pending(client, clock)
    if how == "daily limit":
        sandbox.set_usage(sandbox.daily_limit)
    else:
        sandbox.fail_next(1, 403, route=RETRIEVE)
    now = clock()

    report = await jobs_of(client).dispatcher.run_once()
    [(next_attempt_at, error)] = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT DISTINCT next_attempt_at, last_error FROM deliveries WHERE state = 'pending'"
    )
    sandbox.set_usage(0)
    await drain(client, rounds=40, step_s=60)

    assert report.retrying == 6
    assert next_attempt_at - now >= 60
    assert "REQUEST_LIMIT_EXCEEDED" in error
    assert sandbox.token_requests["client_credentials"] == 1  # never logged in again
    for contact in ids:
        assert_enriched(sandbox, "Contact", contact)


async def test_past_slow_down_at_deliveries_wait_instead_of_spending_the_cap(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    item = the_connector(client)
    ids = people(sandbox, 2)
    sandbox.set_usage(int(sandbox.daily_limit * 0.95))
    await item.check()  # any answer reports the usage
    await send_all(client, sandbox, [("Contact", i) for i in ids])
    await deliveries_pending(client, clock)
    sandbox.reset_counts()

    report = await jobs_of(client).dispatcher.run_once()
    [(error,)] = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT DISTINCT last_error FROM deliveries WHERE state = 'pending'"
    )

    assert report.retrying == 4
    assert sandbox.counts == {}  # not one request spent
    assert "api-usage 95003/100000" in error
    assert item.limits["api-usage"] == (95_003, 100_000)
    sandbox.set_usage(0)  # the rolling 24 hours moved on
    await drain(client, rounds=40, step_s=120)
    for contact in ids:
        assert_enriched(sandbox, "Contact", contact)


async def test_one_record_failing_validation_in_200_is_the_only_dead_one(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    table = sf_table(sf_url, contact={"enrich": ["phones"]})
    client = await start(make_bridge, tmp_path, simulator[1], table)
    ids = people(sandbox, 200)
    sandbox.add_validation_rule("Contact", ids[57], "Phone must be in E.164 format")

    await send_all(client, sandbox, [("Contact", i) for i in ids])
    await drain(client)

    found = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT object_id, state, last_error FROM deliveries ORDER BY id"
    )
    dead = [r for r in found if r[1] == "dead"]
    assert sum(r[1] == "delivered" for r in found) == 199
    assert [r[0] for r in dead] == [ids[57]]
    assert dead[0][2] == "FIELD_CUSTOM_VALIDATION_EXCEPTION: Phone must be in E.164 format"
    assert sandbox.counts[UPDATE] == 1


def _persons(n_one_phone: int, n_two_phones: int) -> list[str]:
    """Lance person ids whose simulated person has one phone, then ones with two."""
    one: list[str] = []
    two: list[str] = []
    while len(one) < n_one_phone or len(two) < n_two_phones:
        candidate = str(uuid.uuid4())
        bucket = one if len(lance_values(candidate, "phones")) == 1 else two
        if len(bucket) < (n_one_phone if bucket is one else n_two_phones):
            bucket.append(candidate)
    return one + two


async def test_a_whole_request_refused_for_a_field_kills_only_the_records_with_it(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, sf_url = salesforce
    table = sf_table(sf_url, contact={"enrich": ["phones"]})
    client = await start(make_bridge, tmp_path, simulator[1], table)
    ids = [
        sandbox.add_record("Contact", {"LastName": "P", "Lance_Person_Id__c": person})
        for person in _persons(3, 2)
    ]
    await send_all(client, sandbox, [("Contact", i) for i in ids])
    await deliveries_pending(client, clock)
    column = "No such column 'MobilePhone' on sobject of type Contact"
    sandbox.fail_next(
        1, 400, body=[{"message": column, "errorCode": "INVALID_FIELD"}], route=UPDATE
    )

    await drain(client)

    found = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT object_id, state, last_error FROM deliveries ORDER BY id"
    )
    assert [r[1] for r in found] == ["delivered"] * 3 + ["dead"] * 2
    assert [r[0] for r in found if r[1] == "dead"] == ids[3:]
    assert found[-1][2] == f"HTTP 400 INVALID_FIELD: {column}"
    assert sandbox.counts[UPDATE] == 2  # the refused request, then the records without it


async def test_a_retired_api_version_is_dead_with_a_config_message(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    table = sf_table(sf_url, api_version="30.0")
    client = await start(make_bridge, tmp_path, simulator[1], table)
    [contact] = people(sandbox, 1)

    await post_soap(client, envelope(sandbox, [("Contact", contact)]))
    await drain(client)

    errors_ = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT DISTINCT state, last_error FROM deliveries"
    )
    assert len(errors_) == 1
    assert errors_[0][0] == "dead"
    assert "api_version" in errors_[0][1]
    assert "30.0" in errors_[0][1]
    with pytest.raises(errors.ConnectorError, match="api_version"):
        await the_connector(client).check()


async def test_a_deleted_record_is_dead_with_salesforces_reason(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    ids = people(sandbox, 3)
    await send_all(client, sandbox, [("Contact", i) for i in ids])
    del sandbox.records["Contact"][ids[1]]

    await drain(client)

    dead = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT DISTINCT object_id, last_error FROM deliveries WHERE state = 'dead'"
    )
    assert [tuple(d) for d in dead] == [(ids[1], "ENTITY_IS_DELETED: entity is deleted")]


# -- auth ----------------------------------------------------------------------------------------


async def test_jwt_bearer_signs_an_assertion_with_the_key_file(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    rsa_keys: tuple[bytes, bytes],
) -> None:
    sandbox, sf_url = salesforce
    key_file = tmp_path / "salesforce.key"
    key_file.write_bytes(rsa_keys[0])
    table = sf_table(
        sf_url,
        auth="jwt_bearer",
        client_secret=None,
        username=JWT_USER,
        private_key_file=str(key_file),
    )
    client = await start(make_bridge, tmp_path, simulator[1], table)
    [lead] = people(sandbox, 1, "Lead", Company="Analytical")

    await post_soap(client, envelope(sandbox, [("Lead", lead)]))
    await drain(client)

    assert_enriched(sandbox, "Lead", lead)
    assert dict(sandbox.token_requests) == {sf.JWT_GRANT: 1}
    [token_request] = [r for r in sandbox.requests if r.path == sf.TOKEN_PATH]
    assert token_request.body["assertion"] == "***"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"client_secret": "wrong"}, ["invalid_client", "check client_id"]),
        (
            {"auth": "jwt_bearer", "username": "someone@example.com"},
            ["invalid assertion", "private_key_file"],
        ),
        ({"auth": "jwt_bearer", "audience": "https://evil.example.com"}, ["audience is invalid"]),
        (
            {"client_secret": None},
            ["client_secret is not set", "LANCE_BRIDGE_CONNECTORS__SALESFORCE__CLIENT_SECRET"],
        ),
    ],
)
async def test_a_refused_token_request_says_why_and_what_to_do(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    rsa_keys: tuple[bytes, bytes],
    settings: dict[str, Any],
    words: list[str],
) -> None:
    _, sf_url = salesforce
    key_file = tmp_path / "salesforce.key"
    key_file.write_bytes(rsa_keys[0])
    jwt = {"username": JWT_USER, "private_key_file": str(key_file)}
    table = sf_table(sf_url, **(jwt | settings if settings.get("auth") else settings))
    client = await start(make_bridge, tmp_path, simulator[1], table)

    with pytest.raises(errors.ConnectorError) as caught:
        await the_connector(client).check()

    for word in words:
        assert word in caught.value.message
    assert CLIENT_SECRET not in caught.value.message


# -- check-config --online -----------------------------------------------------------------------


async def test_check_passes_and_names_missing_fields(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(sf_url))
    item = the_connector(client)

    await item.check()
    sandbox.schemas["Contact"] -= {"MobilePhone", "Lance_Person_Id__c"}
    with pytest.raises(errors.ConnectorError) as caught:
        await item.check()

    assert "Contact has no field Lance_Person_Id__c, MobilePhone" in caught.value.message


def test_secrets_never_show_in_the_config_repr(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, "http://lance", connectors=[sf_table("https://acme.my.salesforce.com")]
    )

    text = repr(settings) + str(settings.connectors)

    assert CLIENT_SECRET not in text
    assert FLOW_TOKEN not in text


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"client_id": ""}, "client_id"),
        ({"auth": "jwt_bearer"}, "username and private_key_file"),
        ({"login_url": "login.salesforce.com"}, "login_url"),
        ({"login_url": "http://acme.my.salesforce.com"}, "https://"),
        ({"login_url": "https://acme.my.salesforce.com/services/oauth2/token"}, "host only"),
        ({"login_url": "https://login.salesforce.com"}, "My Domain"),
        ({"client_secret": ""}, "must not be empty"),
        ({"flow_token": " "}, "must not be empty"),
        ({"api_version": "latest"}, "api_version"),
        ({"organization_id": "00Dshort"}, "organization_id"),
        ({"contact": {"fields": {"Phone Number": "phones[0]"}}}, "Phone Number"),
        ({"slow_down_at": 1.5}, "slow_down_at"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(
    tmp_path: Path, settings: dict[str, Any], words: str
) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        make_settings(
            tmp_path,
            "http://lance",
            connectors=[sf_table("https://acme.my.salesforce.com", **settings)],
        )

    assert words in caught.value.message
    assert "\n" not in caught.value.message


def test_limit_info_is_parsed_leniently() -> None:
    assert connector.parse_limit_info(
        "api-usage=10018/100000; per-app-api-usage=17/250(appName=sample-connected-app)"
    ) == {"api-usage": (10018, 100000), "per-app-api-usage": (17, 250)}
    assert connector.parse_limit_info("api-usage=1/750;api-bursts=2/30") == {
        "api-usage": (1, 750),
        "api-bursts": (2, 30),
    }
    assert connector.parse_limit_info("garbage; api-usage=x/y") == {}
    assert connector.parse_limit_info(None) == {}


def test_ids_get_their_18_character_form() -> None:
    assert connector.id18("003000000000001") == sf.with_checksum("003000000000001")
    assert connector.id18("a0B5g00000AbCdE") == sf.with_checksum("a0B5g00000AbCdE")
    assert connector.id18("003000000000001AAA") == "003000000000001AAA"
    assert connector.id18("003-bad") is None


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ({"objectType": "Contact", "objectId": "not-an-id"}, "MALFORMED_ID"),
        ({"objectType": "Opportunity", "objectId": "006000000000001AAA"}, "Lead, Contact"),
    ],
)
async def test_a_trigger_target_salesforce_cannot_hold_is_422(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    salesforce: tuple[sf.SalesforceSandbox, str],
    tmp_path: Path,
    target: dict[str, str],
    problem: str,
) -> None:
    client = await start(make_bridge, tmp_path, simulator[1], sf_table(salesforce[1]))
    task = {
        "entityId": str(uuid.uuid4()),
        "field": "emails",
        "targets": [{"connector": "salesforce", **target}],
    }

    response = await client.post("/v1/triggers", json={"tasks": [task]}, headers=auth())

    assert response.status == 422
    assert problem in (await response.json())["error"]["message"]

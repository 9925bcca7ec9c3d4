"""Requests no well-behaved client sends: header bytes that are not text.

Header bytes are written on a raw socket (aiohttp's client refuses to send them) to the real app
on loopback with a real SQLite ledger. Every request must get a precise 4xx, leave the ledger as
it was, and log one line at most: no traceback, nothing at ERROR.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from defusedxml import ElementTree as SafeElementTree

from bridge import app as app_mod
from bridge.sim import salesforce as sf
from tests.conftest import API_TOKEN, BridgeFactory, Clock, make_settings

Client = TestClient[Any, Any]

NOWHERE = "http://127.0.0.1:9"  # no job runs here, so no remote is ever called
HUBSPOT_SECRET = "hubspot-app-client-secret"
FLOW_TOKEN = "flow-shared-secret-0123456789"
ORG_ID = "00D000000000001EAA"
OTHER_ORG_ID = "00D000000000002EAA"
SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
NOT_TEXT = b"\xff\xfe\x80"  # not UTF-8, and not what any token or signature is made of


def connectors(**hubspot: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "hubspot",
            "type": "hubspot",
            "base_url": NOWHERE,
            "access_token": "pat-unused",
            "client_secret": HUBSPOT_SECRET,
            "legacy_signatures": True,  # so the v1/v2 header is read too
            "rate_limit_requests": 0,
        }
        | hubspot,
        {
            "name": "salesforce",
            "type": "salesforce",
            "login_url": NOWHERE,
            "client_id": "unused",
            "client_secret": "unused",
            "organization_id": ORG_ID,
            "flow_token": FLOW_TOKEN,
        },
    ]


@pytest.fixture
async def client(make_bridge: BridgeFactory, tmp_path: Path) -> Client:
    settings = make_settings(
        tmp_path, NOWHERE, connectors=connectors(), server={"api_tokens": [API_TOKEN]}
    )
    return await make_bridge(settings)


async def send_raw(client: Client, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Write one request exactly as given; the answer's status, header block and body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        length = b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        writer.write(head + length + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    header_block, _, payload = answer.partition(b"\r\n\r\n")
    return int(header_block.split(b" ", 2)[1]), header_block, payload


async def stored(client: Client) -> tuple[int, ...]:
    """Row counts of every table a request could write."""
    [row] = await client.app[app_mod.BRIDGE].ledger.fetch(
        "SELECT (SELECT count(*) FROM enrichments), (SELECT count(*) FROM targets),"
        " (SELECT count(*) FROM deliveries), (SELECT count(*) FROM inbound)"
    )
    return tuple(row)


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the bridge and aiohttp's server logged (the test server's access log aside)."""
    return [r for r in caplog.records if r.name != "aiohttp.access"]


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    records = logged(caplog)
    assert len(records) <= 1, [r.getMessage() for r in records]
    for record in records:
        assert record.levelno < logging.ERROR, record.getMessage()
        assert record.exc_info is None, record.getMessage()


def json_error(payload: bytes) -> dict[str, Any]:
    body = json.loads(payload)
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    return error


def soap_fault(payload: bytes) -> tuple[str, str]:
    root = SafeElementTree.fromstring(payload, forbid_dtd=True)
    fault = root.find(f"{SOAP}Body/{SOAP}Fault")
    assert fault is not None, payload
    return fault.findtext("faultcode", ""), fault.findtext("faultstring", "")


def trigger_body() -> bytes:
    return json.dumps({"tasks": [{"entityId": str(uuid.uuid4()), "field": "emails"}]}).encode()


def flow_body() -> bytes:
    record = {"recordId": "003000000000001AAA", "objectType": "Contact", "lanceId": lance_id()}
    return json.dumps(record).encode()


def lance_id() -> str:
    return str(uuid.uuid4())


def envelope(org_id: str) -> bytes:
    fields = {"Id": "003000000000001AAA", "Lance_Person_Id__c": lance_id()}
    return sf.outbound_message(org_id, [("04l000000000001AAA", "Contact", fields)])


# -- header bytes that are not text ------------------------------------------------------------

NOW_MS = b"%d" % int(Clock()() * 1000)  # the test clock's "now", as HubSpot stamps it

# id: (request line and headers without the framing ones, body, status, answer shape)
HEADER_CASES: dict[str, tuple[bytes, bytes, int, str]] = {
    "v1 bearer token": (
        b"POST /v1/triggers HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + NOT_TEXT + b"\r\n",
        trigger_body(),
        401,
        "json",
    ),
    "v1 valid token then bytes": (
        b"GET /v1/enrichments HTTP/1.1\r\nHost: bridge\r\n"
        b"Authorization: Bearer " + API_TOKEN.encode() + NOT_TEXT + b"\r\n",
        b"",
        401,
        "json",
    ),
    "v1 scheme": (
        b"GET /v1/deliveries HTTP/1.1\r\nHost: bridge\r\n"
        b"Authorization: " + NOT_TEXT + b" " + API_TOKEN.encode() + b"\r\n",
        b"",
        401,
        "json",
    ),
    "hubspot v3 signature": (
        b"POST /hooks/hubspot HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"X-HubSpot-Request-Timestamp: " + NOW_MS + b"\r\n"
        b"X-HubSpot-Signature-v3: " + NOT_TEXT + b"\r\n",
        b"[]",
        401,
        "json",
    ),
    "hubspot timestamp": (
        b"POST /hooks/hubspot HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"X-HubSpot-Request-Timestamp: " + NOT_TEXT + b"\r\n"
        b"X-HubSpot-Signature-v3: c2lnbmF0dXJl\r\n",
        b"[]",
        401,
        "json",
    ),
    "hubspot host the v3 signature covers": (
        b"POST /hooks/hubspot HTTP/1.1\r\nHost: bridge" + NOT_TEXT + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"X-HubSpot-Request-Timestamp: " + NOW_MS + b"\r\n"
        b"X-HubSpot-Signature-v3: c2lnbmF0dXJl\r\n",
        b"[]",
        401,
        "json",
    ),
    "hubspot legacy signature": (
        b"POST /hooks/hubspot HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"X-HubSpot-Signature-Version: v1\r\nX-HubSpot-Signature: " + NOT_TEXT + b"\r\n",
        b"[]",
        401,
        "json",
    ),
    "hubspot legacy host the v2 signature covers": (
        b"POST /hooks/hubspot HTTP/1.1\r\nHost: bridge" + NOT_TEXT + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"X-HubSpot-Signature-Version: v2\r\nX-HubSpot-Signature: 00ff\r\n",
        b"[]",
        401,
        "json",
    ),
    "hubspot signature version": (
        b"POST /hooks/hubspot HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"X-HubSpot-Signature-Version: " + NOT_TEXT + b"\r\nX-HubSpot-Signature: 00ff\r\n",
        b"[]",
        401,
        "json",
    ),
    "salesforce flow bearer token": (
        b"POST /hooks/salesforce HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + NOT_TEXT + b"\r\n",
        flow_body(),
        401,
        "json",
    ),
    "salesforce flow valid token then bytes": (
        b"POST /hooks/salesforce HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + FLOW_TOKEN.encode() + NOT_TEXT + b"\r\n",
        flow_body(),
        401,
        "json",
    ),
    "salesforce soap content type": (
        b"POST /hooks/salesforce HTTP/1.1\r\nHost: bridge\r\n"
        b"Content-Type: text/xml" + NOT_TEXT + b'\r\nSOAPAction: ""\r\n',
        envelope(ORG_ID),
        415,
        "soap",
    ),
    "salesforce soap other headers, another org": (
        b"POST /hooks/salesforce HTTP/1.1\r\nHost: bridge" + NOT_TEXT + b"\r\n"
        b"Content-Type: text/xml; charset=UTF-8\r\nSOAPAction: " + NOT_TEXT + b"\r\n"
        b"Authorization: Bearer " + NOT_TEXT + b"\r\n",
        envelope(OTHER_ORG_ID),
        401,
        "soap",
    ),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
async def test_header_bytes_that_are_not_text_are_refused_quietly(
    client: Client, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    head, body, status, shape = HEADER_CASES[case]
    before = await stored(client)
    caplog.set_level(logging.INFO)

    answer, _, payload = await send_raw(client, head, body)

    assert answer == status, payload
    if shape == "json":
        error = json_error(payload)
        assert error["code"] == ("unauthorized" if status == 401 else error["code"])
        assert error["message"]
    else:
        code, text = soap_fault(payload)
        assert code == "soapenv:Client"
        assert text
    assert await stored(client) == before
    assert_quiet(caplog)


async def test_a_correct_credential_still_passes_beside_bytes_that_are_not_text(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the bytes compared decide: a stray non-text header elsewhere changes nothing."""
    head = (
        b"POST /v1/triggers HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"User-Agent: agent" + NOT_TEXT + b"\r\nAuthorization: Bearer " + API_TOKEN.encode()
    )

    answer, _, payload = await send_raw(client, head + b"\r\n", trigger_body())

    assert answer == 202, payload
    assert (await stored(client))[0] == 1

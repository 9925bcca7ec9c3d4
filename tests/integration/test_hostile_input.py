"""Requests no well-behaved client sends: header bytes that are not text, JSON nested deep
enough to blow a parser's stack.

Header bytes are written on a raw socket (aiohttp's client refuses to send them) to the real app
on loopback with a real SQLite ledger. Every request must get a precise 4xx, leave the ledger as
it was, and log one line at most: no traceback, nothing at ERROR. (A client that leaves
mid-body needs the server as ``serve`` runs it: ``tests/acceptance/test_misbehaving_clients.py``.)
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
from hubspot.utils.signature import Signature

from bridge import runtime
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


async def start(make_bridge: BridgeFactory, tmp_path: Path, **server: Any) -> Client:
    settings = make_settings(
        tmp_path, NOWHERE, connectors=connectors(), server={"api_tokens": [API_TOKEN], **server}
    )
    return await make_bridge(settings)


@pytest.fixture
async def client(make_bridge: BridgeFactory, tmp_path: Path) -> Client:
    return await start(make_bridge, tmp_path)


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
    [row] = await client.app[runtime.BRIDGE].ledger.fetch(
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


# -- JSON nested deeper than server.max_json_depth ---------------------------------------------


def hubspot_headers(client: Client, body: bytes) -> dict[str, str]:
    """Headers of a request HubSpot signed (v3, with HubSpot's own SDK)."""
    now_ms = str(int(client.app[runtime.BRIDGE].clock() * 1000))
    url = str(client.make_url("/hooks/hubspot"))
    signature = Signature.get_signature(
        HUBSPOT_SECRET, body.decode(), "v3", http_uri=url, http_method="POST", timestamp=now_ms
    )
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": now_ms,
        "X-HubSpot-Signature-v3": signature,
    }


async def post_json(client: Client, route: str, body: bytes) -> Any:
    """``body`` to ``route`` with the credentials it needs: bearer token or HubSpot signature."""
    if route == "/hooks/hubspot":
        headers = hubspot_headers(client, body)
    else:
        token = FLOW_TOKEN if route == "/hooks/salesforce" else API_TOKEN
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return await client.post(route, data=body, headers=headers)


JSON_ROUTES = ["/v1/triggers", "/v1/enrichments/query", "/hooks/hubspot", "/hooks/salesforce"]
DEEP_BODIES = {
    "200,000 [ unclosed": b"[" * 200_000,
    "2,000 levels balanced": b"[" * 2000 + b"]" * 2000,
    "65 levels, below orjson's 1024": b'{"a": ' * 64 + b"[]" + b"}" * 64,
    "65 levels inside strings and escapes": b'["[{\\"", ' * 64 + b"[]" + b', "]}"]' * 64,
}


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("deep", list(DEEP_BODIES))
async def test_json_nested_deeper_than_the_limit_is_400_on_every_route(
    client: Client, caplog: pytest.LogCaptureFixture, route: str, deep: str
) -> None:
    before = await stored(client)
    caplog.set_level(logging.INFO)

    response = await post_json(client, route, DEEP_BODIES[deep])

    assert response.status == 400, await response.text()
    error = json_error(await response.read())
    assert error["code"] == "invalid_json"
    assert error["message"] == ("request body nests deeper than 64 levels (server.max_json_depth)")
    assert await stored(client) == before
    assert_quiet(caplog)


def workflow_call(depth: int) -> bytes:
    """A legacy workflow call for contact 1 nesting ``depth`` levels (3 or 4)."""
    value: dict[str, Any] = {"value": lance_id()} | ({"versions": []} if depth == 4 else {})
    return json.dumps({"objectId": 1, "properties": {"lance_person_id": value}}).encode()


def flow_records(depth: int) -> bytes:
    """A Flow callout of one record nesting ``depth`` levels (3 or 4)."""
    record = json.loads(flow_body()) | {"fields": ["phones"]}
    return json.dumps([record] if depth == 3 else [[record]]).encode()


def triggers(depth: int) -> bytes:
    """A trigger of one task nesting ``depth`` levels (3 or 4)."""
    task: dict[str, Any] = {"entityId": lance_id(), "field": "emails"}
    if depth == 4:
        task["targets"] = []
    return json.dumps({"tasks": [task]}).encode()


AT_THE_LIMIT = {
    "/v1/triggers": (triggers, 202),
    "/hooks/hubspot": (workflow_call, 200),
    "/hooks/salesforce": (flow_records, 200),
}


@pytest.mark.parametrize("route", list(AT_THE_LIMIT))
async def test_a_body_exactly_at_the_limit_is_taken_and_one_level_more_is_not(
    make_bridge: BridgeFactory, tmp_path: Path, route: str
) -> None:
    client = await start(make_bridge, tmp_path, max_json_depth=3)
    build, status = AT_THE_LIMIT[route]

    deeper = await post_json(client, route, build(4))
    before = await stored(client)
    at_limit = await post_json(client, route, build(3))

    assert deeper.status == 400, await deeper.text()
    assert json_error(await deeper.read())["message"] == (
        "request body nests deeper than 3 levels (server.max_json_depth)"
    )
    assert before == (0, 0, 0, 0)
    assert at_limit.status == status, await at_limit.text()
    assert (await stored(client))[0] > 0

"""HubSpot both ways over loopback: signed webhooks in → Lance simulator → batch updates out.

Inbound requests are signed with HubSpot's official SDK helper (``hubspot-api-client``), so
the verifier is held to HubSpot's own code; records live in the bundled HubSpot sandbox.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hubspot.utils.signature import Signature

from bridge import runtime
from bridge.sim import hubspot as hs
from bridge.sim import lance as sim
from bridge.sim.lance.entities import fake_person
from connectors import hubspot as connector
from tests.conftest import BridgeFactory, Clock, auth, drain, jobs_of, make_settings

CLIENT_SECRET = "hubspot-app-client-secret"
HOOK = "/hooks/hubspot"
UPDATE = "POST /crm/v3/objects/{objectType}/batch/update"
READ = "POST /crm/v3/objects/{objectType}/batch/read"
TRIGGER = "POST /api/v1/operations/enrichment/batch"

Client = TestClient[Any, Any]


@pytest.fixture
async def hubspot(clock: Clock) -> AsyncIterator[tuple[hs.HubSpotSandbox, str]]:
    sandbox = hs.HubSpotSandbox(clock=clock, client_secret=CLIENT_SECRET, rate_limit=0)
    runner = await hs.serve(sandbox)
    yield sandbox, hs.base_url(runner)
    await runner.cleanup()


def hubspot_settings(tmp_path: Path, lance_url: str, hubspot_url: str, **extra: Any) -> Any:
    table = {
        "name": "hubspot",
        "type": "hubspot",
        "base_url": hubspot_url,
        "access_token": "pat-sandbox",
        "client_secret": CLIENT_SECRET,
        "rate_limit_requests": 0,
    } | extra
    return make_settings(tmp_path, lance_url, connectors=[table])


def signed(
    body: bytes,
    url: str,
    now_ms: int,
    *,
    secret: str = CLIENT_SECRET,
    version: str = "v3",
    with_v3: bool = True,
) -> dict[str, str]:
    """Headers of a request HubSpot signed, computed with HubSpot's own SDK.

    ``version`` v1 (app webhooks) or v2 (workflows) adds that legacy signature; HubSpot sends
    the v3 one on every request besides, unless ``with_v3`` is false.
    """
    text = body.decode()
    headers = {"Content-Type": "application/json"}
    if version == "v3" or with_v3:
        headers["X-HubSpot-Request-Timestamp"] = str(now_ms)
        headers["X-HubSpot-Signature-v3"] = Signature.get_signature(
            secret, text, "v3", http_uri=url, http_method="POST", timestamp=str(now_ms)
        )
    if version != "v3":
        headers["X-HubSpot-Signature-Version"] = version
        headers["X-HubSpot-Signature"] = Signature.get_signature(
            secret, text, version, http_uri=url, http_method="POST"
        )
    return headers


async def post_events(
    client: Client, events: list[dict[str, Any]], clock: Clock, *, path: str = HOOK
) -> Any:
    body = json.dumps(events).encode()
    url = str(client.make_url(path))
    return await client.post(path, data=body, headers=signed(body, url, int(clock() * 1000)))


async def ledger_rows(client: Client, table: str = "enrichments") -> int:
    [(count,)] = await client.app[runtime.BRIDGE].ledger.fetch(f"SELECT count(*) FROM {table}")
    return int(count)


def contacts_with_lance_ids(sandbox: hs.HubSpotSandbox, n: int, **props: str) -> list[str]:
    return [
        sandbox.add_record("contacts", {"lance_person_id": str(uuid.uuid4()), **props})
        for _ in range(n)
    ]


def lance_values(person_id: str, field: str) -> list[str]:
    """What the simulator's person holds for ``field`` once enriched."""
    found = fake_person(person_id, emails=True, phones=True)[field]
    assert isinstance(found, list)
    return [str(v) for v in found]


def changes(sandbox: hs.HubSpotSandbox, ids: list[str], clock: Clock) -> list[dict[str, Any]]:
    return [
        hs.property_change(
            int(i),
            "lance_person_id",
            sandbox.record("contacts", i)["lance_person_id"],
            clock=clock,
        )
        for i in ids
    ]


# -- signatures ------------------------------------------------------------------------------


async def test_a_v3_signed_batch_is_accepted_and_triggers_each_configured_field(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)

    response = await post_events(client, changes(sandbox, [contact], clock), clock)

    assert response.status == 200
    assert await response.json() == {
        "received": 1,
        "duplicates": 0,
        "skipped": 0,
        "lookups": 0,
        "enrichments": 2,
    }
    rows = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT e.field, e.entity_id, t.connector, t.object_type, t.object_id"
        " FROM enrichments e JOIN targets t ON t.enrichment_id = e.id ORDER BY e.field"
    )
    lance_id = sandbox.record("contacts", contact)["lance_person_id"]
    assert [tuple(r) for r in rows] == [
        ("emails", lance_id, "hubspot", "contacts", contact),
        ("phones", lance_id, "hubspot", "contacts", contact),
    ]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_legacy_signatures_are_accepted_when_switched_on(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
    version: str,
) -> None:
    sandbox, hubspot_url = hubspot
    settings = hubspot_settings(tmp_path, simulator[1], hubspot_url, legacy_signatures=True)
    client = await make_bridge(settings)
    [contact] = contacts_with_lance_ids(sandbox, 1)
    body = json.dumps(changes(sandbox, [contact], clock)).encode()
    url = str(client.make_url(HOOK))

    headers = signed(body, url, 0, version=version, with_v3=False)
    response = await client.post(HOOK, data=body, headers=headers)

    assert response.status == 200
    assert await ledger_rows(client) == 2


def _tamper(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"CRM_UI", b"CRM_XX"), headers


def _drop(name: str) -> Any:
    return lambda body, headers: (body, {k: v for k, v in headers.items() if k != name})


REFUSALS = {
    "tampered body": (_tamper, {}),
    "wrong secret": (lambda b, h: (b, h), {"secret": "another-apps-secret"}),
    "stale timestamp": (lambda b, h: (b, h), {"age_ms": 301_000}),
    "future timestamp": (lambda b, h: (b, h), {"age_ms": -301_000}),
    "no signature": (_drop("X-HubSpot-Signature-v3"), {}),
    "no timestamp": (_drop("X-HubSpot-Request-Timestamp"), {}),
    "huge timestamp": (
        lambda b, h: (b, h | {"X-HubSpot-Request-Timestamp": "9" * 5000}),
        {},
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_bad_or_stale_signature_is_401_and_stores_nothing(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
    case: str,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)
    change, options = REFUSALS[case]
    body = json.dumps(changes(sandbox, [contact], clock)).encode()
    now_ms = int(clock() * 1000) - options.get("age_ms", 0)
    url = str(client.make_url(HOOK))
    headers = signed(body, url, now_ms, secret=options.get("secret", CLIENT_SECRET))
    body, headers = change(body, headers)

    response = await client.post(HOOK, data=body, headers=headers)

    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"
    assert await ledger_rows(client) == 0
    assert await ledger_rows(client, "inbound") == 0


async def test_legacy_signatures_are_refused_by_default(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    # v1 covers neither the URL nor a timestamp: a captured request could be replayed forever.
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)
    body = json.dumps(changes(sandbox, [contact], clock)).encode()

    url = str(client.make_url(HOOK))
    response = await client.post(
        HOOK, data=body, headers=signed(body, url, 0, version="v1", with_v3=False)
    )

    assert response.status == 401
    assert await ledger_rows(client) == 0


async def test_behind_a_proxy_the_signature_covers_the_public_url(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    public = "https://bridge.example.com/crm"
    settings = hubspot_settings(tmp_path, simulator[1], hubspot_url)
    proxied = settings.model_copy(
        update={"server": settings.server.model_copy(update={"public_url": public})}
    )
    client = await make_bridge(proxied)
    [contact] = contacts_with_lance_ids(sandbox, 1)
    body = json.dumps(changes(sandbox, [contact], clock)).encode()
    # HubSpot signs the URL it called, with the escapes of v3 decoded.
    path = "/hooks/hubspot?source=crm%3Aapp"
    signed_url = f"{public}/hooks/hubspot?source=crm:app"
    now_ms = int(clock() * 1000)

    accepted = await client.post(path, data=body, headers=signed(body, signed_url, now_ms))
    internal = str(client.make_url(path))
    refused = await client.post(path, data=body, headers=signed(body, internal, now_ms))

    assert accepted.status == 200
    assert refused.status == 401
    assert "server.public_url" in (await refused.json())["error"]["message"]


def test_the_verifier_matches_the_documented_vectors() -> None:
    secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
    body = (
        b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
        b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
    )
    uri = "https://www.example.com/webhook_uri"
    assert connector.signature_v1(secret, body) == (
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    )
    assert connector.signature_v2(secret, "POST", uri, b'{"example_field":"example_value"}') == (
        "9569219f8ba981ffa6f6f16aa0f48637d35d728c7e4d93d0d52efaa512af7900"
    )
    assert connector.signature_v2(secret, "GET", uri, b"") == (
        "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    )
    v3 = connector.signature_v3(
        secret, "POST", uri, b"{'example_field':'example_value'}", "1693657560000"
    )
    assert v3 == "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="


# -- inbound events --------------------------------------------------------------------------


async def test_a_retried_or_duplicated_batch_triggers_once(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance_sim, lance_url = simulator
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, lance_url, hubspot_url))
    ids = contacts_with_lance_ids(sandbox, 3)
    events = changes(sandbox, ids, clock)

    first = await post_events(client, events, clock)
    await drain(client)  # the enrichments finish and are delivered
    retried = [event | {"attemptNumber": 1} for event in events]
    clock.advance(60)
    second = await post_events(client, retried, clock)
    third = await post_events(client, events, clock)
    await drain(client)

    assert (await first.json())["enrichments"] == 6
    for answer in (second, third):
        assert answer.status == 200
        assert (await answer.json())["duplicates"] == 3
    assert await ledger_rows(client) == 6
    assert lance_sim.requests[TRIGGER] == 2  # one per field, never again
    assert max(lance_sim.charges.values()) == 1


async def test_unusable_events_are_acknowledged_and_counted_as_skipped(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)
    events = [
        hs.property_change(int(contact), "firstname", "Ada", clock=clock),
        hs.property_change(int(contact), "lance_person_id", "not-a-uuid", clock=clock),
        hs.property_change(int(contact), "lance_person_id", "", clock=clock),
        hs.property_change(int(contact), "dealstage", "won", object_type="deal", clock=clock),
    ]

    response = await post_events(client, events, clock)

    assert response.status == 200
    assert (await response.json())["skipped"] == 4
    assert await ledger_rows(client) == 0
    assert await ledger_rows(client, "inbound") == 4


BAD_BODIES = {
    "not json": b"[{",
    "a string": b'"hello"',
    "empty array": b"[]",
    "101 events": json.dumps(
        [hs.property_change(i + 1, "lance_person_id", str(uuid.uuid4())) for i in range(101)]
    ).encode(),
    "event not an object": b"[1]",
    "workflow without properties": b'{"objectId": 5}',
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_a_malformed_body_is_400_and_stores_nothing(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
    case: str,
) -> None:
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot[1]))
    body = BAD_BODIES[case]
    headers = signed(body, str(client.make_url(HOOK)), int(clock() * 1000))

    response = await client.post(HOOK, data=body, headers=headers)

    assert response.status == 400
    assert await ledger_rows(client, "inbound") == 0


async def test_an_event_of_another_shape_is_skipped_not_the_batch(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)
    association = {
        "subscriptionType": "contact.associationChange",
        "fromObjectId": 1,
        "toObjectId": 2,
        "eventId": 7,
        "portalId": hs.DEFAULT_PORTAL_ID,
    }

    response = await post_events(client, [association, *changes(sandbox, [contact], clock)], clock)

    assert response.status == 200
    assert await response.json() == {
        "received": 2,
        "duplicates": 0,
        "skipped": 1,
        "lookups": 0,
        "enrichments": 2,
    }


async def test_connectors_sharing_an_app_each_take_their_own_portals_events(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    common = {
        "type": "hubspot",
        "base_url": hubspot_url,
        "access_token": "pat-sandbox",
        "client_secret": CLIENT_SECRET,
        "rate_limit_requests": 0,
    }
    settings = make_settings(
        tmp_path,
        simulator[1],
        connectors=[
            common | {"name": "portal-a", "portal_id": 1},
            common | {"name": "portal-b", "portal_id": sandbox.portal_id},
            common | {"name": "portal-c", "portal_id": 3},
        ],
    )
    client = await make_bridge(settings)
    [contact] = contacts_with_lance_ids(sandbox, 1)

    response = await post_events(client, changes(sandbox, [contact], clock), clock)
    stranger = [event | {"portalId": 99} for event in changes(sandbox, [contact], clock)]
    refused = await post_events(client, stranger, clock)

    assert response.status == 200
    rows = await client.app[runtime.BRIDGE].ledger.fetch("SELECT DISTINCT connector FROM targets")
    assert [r[0] for r in rows] == ["portal-b"]
    assert refused.status == 401
    assert "portal 99" in (await refused.json())["error"]["message"]


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ({"objectType": "contacts", "objectId": "ada@example.com"}, "record ids are numbers"),
        ({"objectType": "deals", "objectId": "12"}, "contacts or companies"),
    ],
)
async def test_a_trigger_target_hubspot_cannot_hold_is_422(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    target: dict[str, str],
    problem: str,
) -> None:
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot[1]))
    task = {
        "entityId": str(uuid.uuid4()),
        "field": "emails",
        "targets": [{"connector": "hubspot", **target}],
    }

    response = await client.post("/v1/triggers", json={"tasks": [task]}, headers=auth())

    assert response.status == 422
    assert problem in (await response.json())["error"]["message"]
    assert await ledger_rows(client) == 0


@pytest.mark.parametrize("key", ["access_token", "client_secret"])
def test_an_empty_secret_is_a_config_error_not_an_open_door(tmp_path: Path, key: str) -> None:
    with pytest.raises(Exception, match=f"{key}: .*must not be empty"):
        hubspot_settings(tmp_path, "http://lance", "http://hubspot", **{key: ""})


async def test_a_path_no_connector_serves_is_404(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
) -> None:
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot[1]))

    for path in ("/hooks/pipedrive", "/hooks/hubspot/other-name"):
        response = await client.post(path, data=b"[]")
        assert response.status == 404, path


async def test_created_records_are_read_in_batches_for_their_lance_id(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    with_id = contacts_with_lance_ids(sandbox, 150)
    without = sandbox.add_record("contacts", {"firstname": "Grace"})
    ids = [*with_id, without]
    batches = [ids[i : i + 100] for i in range(0, len(ids), 100)]

    for batch in batches:
        events = [hs.creation(int(i), clock=clock) for i in batch]
        response = await post_events(client, events, clock)
        assert (await response.json())["lookups"] == len(batch)
    report = await jobs_of(client).resolver.run_once()

    assert report.accepted == 300  # emails + phones of each of the 150
    assert report.skipped == 1
    assert sandbox.counts[READ] == math.ceil(151 / 100)
    [(reason,)] = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT detail FROM inbound WHERE state = 'skipped'"
    )
    assert reason == f"no lance_person_id on contacts {without}"


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "legacy"])
async def test_a_workflow_call_triggers_its_record(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
    legacy: bool,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)
    properties = sandbox.record("contacts", contact)
    payload = (
        hs.legacy_contact_payload(int(contact), properties)
        if legacy
        else hs.workflow_payload(int(contact), properties)
    )
    body = json.dumps(payload).encode()
    url = str(client.make_url(HOOK))

    response = await client.post(
        HOOK, data=body, headers=signed(body, url, int(clock() * 1000), version="v2")
    )
    again = await client.post(
        HOOK, data=body, headers=signed(body, url, int(clock() * 1000), version="v2")
    )

    assert response.status == 200
    assert (await response.json())["enrichments"] == 2
    assert (await again.json())["duplicates"] == 1
    assert await ledger_rows(client) == 2


async def post_workflow(client: Client, payload: Any, clock: Clock, *, path: str = HOOK) -> Any:
    """A workflow "Send a webhook" call, signed as HubSpot signs them (v2 plus v3)."""
    body = json.dumps(payload).encode()
    url = str(client.make_url(path))
    headers = signed(body, url, int(clock() * 1000), version="v2")
    return await client.post(path, data=body, headers=headers)


async def stored_targets(client: Client) -> set[tuple[str, str, str, str]]:
    """(entity type, entity id, object type, object id) of every stored enrichment target."""
    rows = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT e.entity_type, e.entity_id, t.object_type, t.object_id"
        " FROM enrichments e JOIN targets t ON t.enrichment_id = e.id"
    )
    return {(str(a), str(b), str(c), str(d)) for a, b, c, d in rows}


PERSON = "5d0c5ee0-5c4e-4b8e-9a8e-1f8f7f6a3b21"
COMPANY = "0b9f3a52-6f4c-4d0e-8c2a-2d7b1e9c4f10"
# Each body HubSpot's "Send a webhook" action sends, with the path it is sent to.
WORKFLOW_SHAPES: dict[str, tuple[str, dict[str, Any], tuple[str, str, str, str]]] = {
    "all properties, plain values": (
        HOOK,
        {"objectId": 801, "objectType": "CONTACT", "properties": {"lance_person_id": PERSON}},
        ("person", PERSON, "contacts", "801"),
    ),
    "all properties, legacy contact": (
        HOOK,
        {
            "vid": 802,
            "portal-id": 62515,
            "properties": {"lance_person_id": {"value": PERSON, "versions": []}},
        },
        ("person", PERSON, "contacts", "802"),
    ),
    "all properties, id only among the properties": (
        HOOK,
        {"properties": {"hs_object_id": "803", "lance_person_id": PERSON}},
        ("person", PERSON, "contacts", "803"),
    ),
    "customised, string values": (
        HOOK,
        {"hs_object_id": "804", "lance_person_id": PERSON, "email": "ada@example.com"},
        ("person", PERSON, "contacts", "804"),
    ),
    "customised, numeric id": (
        HOOK,
        {"hs_object_id": 805, "lance_person_id": PERSON},
        ("person", PERSON, "contacts", "805"),
    ),
    "customised, company by query": (
        HOOK + "?objectType=companies",
        {"hs_object_id": "806", "lance_company_id": COMPANY, "domain": "example.com"},
        ("company", COMPANY, "companies", "806"),
    ),
}


@pytest.mark.parametrize("shape", list(WORKFLOW_SHAPES))
async def test_each_workflow_body_hubspot_sends_triggers_its_record(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
    shape: str,
) -> None:
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot[1]))
    path, payload, target = WORKFLOW_SHAPES[shape]

    response = await post_workflow(client, payload, clock, path=path)

    assert response.status == 200, await response.text()
    assert await stored_targets(client) == {target}


BAD_WORKFLOW_CALLS: dict[str, tuple[str, dict[str, Any], str]] = {
    "customised, no record id": (
        HOOK,
        {"lance_person_id": PERSON},
        "needs the record id (a number): objectId, vid or hs_object_id",
    ),
    "all properties, no record id": (
        HOOK,
        {"properties": {"lance_person_id": PERSON}},
        "needs the record id (a number): objectId, vid or hs_object_id",
    ),
    "record id not a number": (
        HOOK,
        {"hs_object_id": "ada@example.com", "lance_person_id": PERSON},
        "needs the record id",
    ),
    "customised, no Lance id key": (
        HOOK,
        {"hs_object_id": "807", "email": "ada@example.com"},
        "needs lance_person_id in the body",
    ),
    "company key on a contact workflow": (
        HOOK,
        {"hs_object_id": "808", "lance_company_id": COMPANY},
        "for contacts needs lance_person_id",
    ),
    "properties not an object": (
        HOOK,
        {"objectId": 809, "properties": ["lance_person_id"]},
        "properties of a workflow call must be an object",
    ),
    "unknown object type": (
        HOOK + "?objectType=deals",
        {"hs_object_id": "810", "lance_person_id": PERSON},
        "contacts or companies",
    ),
}


@pytest.mark.parametrize("case", list(BAD_WORKFLOW_CALLS))
async def test_a_workflow_call_missing_what_it_needs_is_400_naming_it_and_stores_nothing(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
    case: str,
) -> None:
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot[1]))
    path, payload, message = BAD_WORKFLOW_CALLS[case]

    response = await post_workflow(client, payload, clock, path=path)

    assert response.status == 400
    assert message in (await response.json())["error"]["message"]
    assert await ledger_rows(client, "inbound") == 0
    assert await ledger_rows(client) == 0


# -- outbound --------------------------------------------------------------------------------


async def test_250_records_cost_3_batch_updates_and_get_the_mapped_values(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    ids = contacts_with_lance_ids(sandbox, 250)
    events = changes(sandbox, ids, clock)

    for start in range(0, 250, 100):
        assert (await post_events(client, events[start : start + 100], clock)).status == 200
    await drain(client)

    assert sandbox.counts[UPDATE] == 3
    assert sandbox.counts[READ] == 3  # fill_if_empty reads the current values first
    for contact in ids:
        record = sandbox.record("contacts", contact)
        emails = lance_values(record["lance_person_id"], "emails")
        phones = lance_values(record["lance_person_id"], "phones")
        assert record["email"] == emails[0]
        assert record.get("hs_additional_emails", "") == ";".join(emails[1:])
        assert record["phone"] == phones[0]
        assert record.get("mobilephone", "") == (phones[1] if len(phones) > 1 else "")
    [(delivered,)] = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT count(*) FROM deliveries WHERE state = 'delivered' AND connector = 'hubspot'"
    )
    assert delivered == 500
    metrics = await (await client.get("/metrics")).text()
    update = 'endpoint="POST /crm/v3/objects/contacts/batch/update"'
    assert f'lance_bridge_crm_requests_total{{connector="hubspot",{update},status="200"}} 3.0' in (
        metrics
    )
    assert 'lance_bridge_inbound_events{connector="hubspot",state="accepted"} 250.0' in metrics


async def test_a_partial_batch_lingers_for_more_results_then_goes_in_one_request(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    settings = hubspot_settings(tmp_path, simulator[1], hubspot_url)
    lingering = settings.model_copy(
        update={"delivery": settings.delivery.model_copy(update={"linger_seconds": 30.0})}
    )
    client = await make_bridge(lingering)
    jobs = jobs_of(client)
    ids = contacts_with_lance_ids(sandbox, 4)
    for half in (ids[:2], ids[2:]):  # results of two contacts, then of two more
        await post_events(client, changes(sandbox, half, clock), clock)
        for _ in range(3):
            await jobs.triggerer.run_once()
            await jobs.poller.run_once()
            await jobs.fetcher.run_once()
            clock.advance(2.0)
        held = await jobs.dispatcher.run_once()
        assert held.attempted == 0

    clock.advance(30.0)
    sent = await jobs.dispatcher.run_once()

    assert sent.delivered == 8
    assert sandbox.counts[UPDATE] == 1


async def test_a_records_results_wait_for_its_other_enrichments_and_go_in_one_write(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance_sim, lance_url = simulator
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, lance_url, hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)
    person = sandbox.record("contacts", contact)["lance_person_id"]
    target = [{"connector": "hubspot", "objectType": "contacts", "objectId": contact}]
    tasks = [
        {"entityId": person, "field": "emails", "targets": target},
        # Followed, not triggered: Lance has no record of it until started below.
        {"entityId": person, "field": "phones", "mode": "track", "targets": target},
    ]
    await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    jobs = jobs_of(client)
    for _ in range(5):
        await jobs.run_all_once()
        clock.advance(2)
    assert sandbox.counts[UPDATE] == 0  # emails is done, but phones is still in flight

    lance_sim.start_enrichment(person, "phones", outcome="found", completion_s=0)
    await drain(client)

    record = sandbox.record("contacts", contact)
    assert sandbox.counts[UPDATE] == 1
    assert record["email"] == lance_values(person, "emails")[0]
    assert record["phone"] == lance_values(person, "phones")[0]


async def test_a_records_result_waits_for_its_siblings_no_longer_than_merge_wait(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    [contact] = contacts_with_lance_ids(sandbox, 1)
    person = sandbox.record("contacts", contact)["lance_person_id"]
    target = [{"connector": "hubspot", "objectType": "contacts", "objectId": contact}]
    tasks = [
        {"entityId": person, "field": "emails", "targets": target},
        {"entityId": person, "field": "phones", "mode": "track", "targets": target},
    ]
    await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    jobs = jobs_of(client)
    for _ in range(25):  # 50 s: past the 30 s merge wait, before phones is called lost
        await jobs.run_all_once()
        clock.advance(2)

    assert sandbox.counts[UPDATE] == 1
    assert sandbox.record("contacts", contact)["email"] == lance_values(person, "emails")[0]


async def test_write_policies_fill_overwrite_and_never_clear(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    mapping = {
        "properties": {
            "phone": {"from": "phones[0]", "policy": "overwrite"},
            "mobilephone": {"from": "phones[1]", "policy": "never"},
            "lance_enrichment_status": {"from": "state", "policy": "overwrite"},
        }
    }
    settings = hubspot_settings(tmp_path, simulator[1], hubspot_url, contacts=mapping)
    client = await make_bridge(settings)
    [contact] = contacts_with_lance_ids(
        sandbox, 1, email="kept@example.com", phone="+1 555 0100", mobilephone="+1 555 0199"
    )

    await post_events(client, changes(sandbox, [contact], clock), clock)
    await drain(client)

    record = sandbox.record("contacts", contact)
    assert record["email"] == "kept@example.com"  # fill_if_empty: already filled
    assert record["phone"] == lance_values(record["lance_person_id"], "phones")[0]
    assert record["mobilephone"] == "+1 555 0199"  # never
    assert record["lance_enrichment_status"] == "finished"


@pytest.mark.parametrize("sim_config", [{"outcomes": {"not_found": 1.0}}], indirect=True)
async def test_an_empty_result_never_clears_a_property(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    mapping = {"properties": {"phone": {"from": "phones[0]", "policy": "overwrite"}}}
    settings = hubspot_settings(tmp_path, simulator[1], hubspot_url, contacts=mapping)
    client = await make_bridge(settings)
    [contact] = contacts_with_lance_ids(sandbox, 1, phone="+1 555 0100")

    await post_events(client, changes(sandbox, [contact], clock), clock)
    await drain(client)

    assert sandbox.record("contacts", contact)["phone"] == "+1 555 0100"
    assert sandbox.counts[UPDATE] == 0  # nothing to write, no request
    [(delivered,)] = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
    )
    assert delivered == 2


async def test_a_company_summary_is_tracked_and_written_to_its_description(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    lance_sim, lance_url = simulator
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, lance_url, hubspot_url))
    company_id = str(uuid.uuid4())
    lance_sim.start_enrichment(company_id, "summary", "company", outcome="found")
    company = sandbox.add_record("companies", {"lance_company_id": company_id})
    event = hs.property_change(
        int(company), "lance_company_id", company_id, object_type="company", clock=clock
    )

    await post_events(client, [event], clock)
    await drain(client)

    description = sandbox.record("companies", company)["description"]
    assert description
    assert lance_sim.requests[TRIGGER] == 0  # tracked, never triggered


# -- faults ----------------------------------------------------------------------------------


def _persons(n_one_phone: int, n_two_phones: int) -> list[str]:
    """Lance person ids whose simulated person has one phone, then ones with two."""
    one: list[str] = []
    two: list[str] = []
    while len(one) < n_one_phone or len(two) < n_two_phones:
        candidate = str(uuid.uuid4())
        bucket = one if len(lance_values(candidate, "phones")) == 1 else two
        limit = n_one_phone if bucket is one else n_two_phones
        if len(bucket) < limit:
            bucket.append(candidate)
    return one + two


async def test_one_invalid_property_in_a_batch_of_100_kills_only_its_record(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    sandbox.schemas["contacts"].discard("mobilephone")  # only a second phone writes it
    mapping = {
        "properties": {
            "email": {"from": "emails[0]", "policy": "never"},
            "hs_additional_emails": {"from": "emails[1:]", "policy": "never"},
        }
    }
    settings = hubspot_settings(
        tmp_path, simulator[1], hubspot_url, contacts=mapping | {"enrich": ["phones"]}
    )
    client = await make_bridge(settings)
    ids = [sandbox.add_record("contacts", {"lance_person_id": p}) for p in _persons(99, 1)]

    await post_events(client, changes(sandbox, ids, clock), clock)
    await drain(client)

    rows = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT object_id, state, last_error FROM deliveries ORDER BY id"
    )
    dead = [r for r in rows if r[1] == "dead"]
    assert sum(r[1] == "delivered" for r in rows) == 99
    assert [r[0] for r in dead] == [ids[-1]]
    assert "mobilephone" in dead[0][2]
    assert "VALIDATION_ERROR" in dead[0][2]
    assert sandbox.counts[UPDATE] == 1


async def test_a_deleted_record_is_dead_with_hubspots_reason(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    ids = contacts_with_lance_ids(sandbox, 5)
    await post_events(client, changes(sandbox, ids, clock), clock)
    del sandbox.objects["contacts"][ids[2]]

    await drain(client)

    rows = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT object_id, state, last_error FROM deliveries WHERE state = 'dead'"
    )
    assert {r[0] for r in rows} == {ids[2]}
    assert all("no contacts record" in r[2] for r in rows)


async def test_an_expired_oauth_token_is_refreshed_once_and_nothing_is_lost(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    oauth = {
        "access_token": None,
        "refresh_token": "refresh-sandbox",
        "client_id": sandbox.client_id,
    }
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url, **oauth))
    first = contacts_with_lance_ids(sandbox, 2)
    await post_events(client, changes(sandbox, first, clock), clock)
    await drain(client)
    assert sandbox.token_requests == 1
    sandbox.expire_tokens()
    second = contacts_with_lance_ids(sandbox, 2)

    await post_events(client, changes(sandbox, second, clock), clock)
    await drain(client)

    assert sandbox.token_requests == 2
    assert all(sandbox.record("contacts", i).get("email") for i in first + second)
    expired = [r for r in sandbox.requests if r.status == 401]
    assert len(expired) == 1


async def test_a_token_past_its_lifetime_on_the_bridge_clock_is_renewed_before_use(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    # The connector reads token expiry from the bridge clock it was given, so a token whose
    # lifetime has run out (on that clock) is renewed before a request, never after a 401.
    sandbox, hubspot_url = hubspot
    oauth = {
        "access_token": None,
        "refresh_token": "refresh-sandbox",
        "client_id": sandbox.client_id,
    }
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url, **oauth))
    first = contacts_with_lance_ids(sandbox, 1)
    await post_events(client, changes(sandbox, first, clock), clock)
    await drain(client)
    assert sandbox.token_requests == 1
    clock.advance(sandbox.token_lifetime_s + 1)
    second = contacts_with_lance_ids(sandbox, 1)

    await post_events(client, changes(sandbox, second, clock), clock)
    await drain(client)

    assert sandbox.token_requests == 2
    assert all(sandbox.record("contacts", i).get("email") for i in first + second)
    assert [r for r in sandbox.requests if r.status == 401] == []


async def test_a_refused_refresh_token_says_so_on_the_delivery(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    sandbox, hubspot_url = hubspot
    oauth = {"access_token": None, "refresh_token": "revoked", "client_id": sandbox.client_id}
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url, **oauth))
    ids = contacts_with_lance_ids(sandbox, 2)
    await post_events(client, changes(sandbox, ids, clock), clock)
    jobs = jobs_of(client)
    for _ in range(4):
        await jobs.run_all_once()
        clock.advance(2)

    rows = await client.app[runtime.BRIDGE].ledger.fetch(
        "SELECT DISTINCT state, last_error FROM deliveries"
    )
    [(state, error)] = rows
    assert state == "pending"
    assert "HubSpot refused the refresh token" in error
    assert "authorise the app again" in error


# -- check-config --online -------------------------------------------------------------------


async def test_check_passes_with_a_good_token_and_names_missing_properties(
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    hubspot: tuple[hs.HubSpotSandbox, str],
    tmp_path: Path,
) -> None:
    sandbox, hubspot_url = hubspot
    client = await make_bridge(hubspot_settings(tmp_path, simulator[1], hubspot_url))
    item = client.app[runtime.BRIDGE].connectors["hubspot"]

    await item.check()
    sandbox.schemas["contacts"].discard("lance_person_id")
    with pytest.raises(Exception, match="lance_person_id"):
        await item.check()


def test_secrets_never_show_in_the_config_repr(tmp_path: Path) -> None:
    settings = hubspot_settings(tmp_path, "http://lance", "http://hubspot")

    text = repr(settings) + str(settings.connectors)

    assert "pat-sandbox" not in text
    assert CLIENT_SECRET not in text

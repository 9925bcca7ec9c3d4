"""The dashboard at /ui/ over loopback: login, sessions, CSRF, escaping, filters, retry."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge import ledger, model, runtime
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.conftest import (
    API_TOKEN,
    BridgeFactory,
    Clock,
    LedgerFactory,
    auth,
    drain,
    make_settings,
    tasks_for,
)

Client = TestClient[web.Request, web.Application]
HOSTILE = "<script>window.pwned=1</script>"


async def _login(client: Client, token: str = API_TOKEN) -> str:
    """Log in; returns the CSRF token of the session."""
    response = await client.post("/ui/login", data={"token": token}, allow_redirects=False)
    assert response.status == 303, await response.text()
    page = await (await client.get("/ui/")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


async def _bridge(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any, **sections: Any
) -> Client:
    return await make_bridge(make_settings(tmp_path, simulator[1], sink[1], **sections))


async def test_pages_need_a_login_and_the_cookie_is_locked_down(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    for path in ("/ui/", "/ui/enrichments", "/ui/deliveries", "/ui/fragments/counts"):
        response = await client.get(path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/ui/login"), path

    wrong = await client.post("/ui/login", data={"token": "nope"}, allow_redirects=False)
    assert wrong.status == 401
    assert "not accepted" in await wrong.text()

    response = await client.post("/ui/login", data={"token": API_TOKEN}, allow_redirects=False)
    assert response.status == 303
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=28800" in cookie
    assert API_TOKEN not in cookie
    page = await (await client.get("/ui/")).text()
    assert API_TOKEN not in page
    assert "sim-token" not in page


async def test_an_expired_or_forged_session_gets_the_login_page(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any, clock: Clock
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink, ui={"session_seconds": 60})
    await _login(client)
    assert (await client.get("/ui/", allow_redirects=False)).status == 200
    clock.advance(61)
    response = await client.get("/ui/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/ui/login")

    client.session.cookie_jar.clear()
    forged = await client.get(
        "/ui/", cookies={"lance_bridge_session": "eyJjc3JmIjoieCJ9.x.y"}, allow_redirects=False
    )
    assert forged.status == 303


async def test_every_post_needs_the_csrf_token(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    csrf = await _login(client)
    for path in ("/ui/logout", "/ui/deliveries/1/retry"):
        for data in ({}, {"csrf": "wrong"}):
            response = await client.post(path, data=data, allow_redirects=False)
            assert response.status == 403, (path, data)
            assert "CSRF" in await response.text()
    # Still logged in: the refused logout changed nothing.
    assert (await client.get("/ui/", allow_redirects=False)).status == 200

    out = await client.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert (out.status, out.headers["Location"]) == (303, "/ui/login")
    assert (await client.get("/ui/", allow_redirects=False)).status == 303


async def test_hostile_query_strings_get_400_and_unknown_ids_404(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    await _login(client)
    for query in (
        "/ui/enrichments?state=%3Cscript%3E",
        "/ui/enrichments?field=age",
        "/ui/enrichments?cursor=-1",
        "/ui/enrichments?cursor=%C2%B2",
        "/ui/enrichments?entity_id=" + "a" * 201,
        "/ui/enrichments?entity_id=a%00b",
        "/ui/deliveries?state=gone",
        "/ui/deliveries?connector=unknown",
    ):
        response = await client.get(query)
        assert response.status == 400, query
        assert response.content_type == "text/html"
        assert " must be " in await response.text()
    for path in ("/ui/enrichments/999", "/ui/enrichments/x", "/ui/deliveries/999"):
        response = await client.get(path)
        assert response.status == 404, path
        assert "There is no" in await response.text()


async def test_lance_strings_are_text_and_filters_narrow_the_lists(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any, clock: Clock
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    tasks = [*tasks_for(3, "emails"), *tasks_for(2, "phones")]
    answer = await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    hostile_id = (await answer.json())["enrichments"][0]["id"]
    # Lance's own words end up on the page: a failure message with markup in it.
    store = client.app[runtime.BRIDGE].ledger
    record = {"entityId": tasks[0]["entityId"], "entityType": "person", "field": "emails"}
    record |= {"status": "failed", "error": HOSTILE, "dataFound": False}
    change = ledger.Change(hostile_id, "failed", record, error=HOSTILE, from_queue=True)
    await store.apply([change], clock())
    await drain(client)
    await _login(client)

    detail = await (await client.get(f"/ui/enrichments/{hostile_id}")).text()
    assert HOSTILE not in detail
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in detail
    assert f'href="/v1/enrichments/{hostile_id}"' in detail
    phones = await (await client.get("/ui/enrichments?field=phones")).text()
    assert phones.count('<tr data-id="') == 2
    one = tasks[1]["entityId"]
    only = await (await client.get(f"/ui/enrichments?entity_id={one}")).text()
    assert only.count('<tr data-id="') == 1
    failed = await (await client.get("/ui/enrichments?state=failed")).text()
    assert re.findall(r'<tr data-id="(\d+)"', failed) == [str(hostile_id)]


async def test_keyset_pages_follow_the_next_link(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    tasks = tasks_for(60, "emails") + tasks_for(60, "phones")
    assert (await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())).status == 202
    await _login(client)
    seen: list[str] = []
    url: str | None = "/ui/enrichments?field=phones"
    while url:
        page = await (await client.get(url)).text()
        seen += re.findall(r'<tr data-id="(\d+)"', page)
        nxt = re.search(r'rel="next" href="([^"]+)"', page)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert len(seen) == len(set(seen)) == 60


async def test_retry_replays_a_dead_delivery_and_refuses_a_delivered_one(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
) -> None:
    receiver, _ = sink
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    receiver.fail_always(410)
    body = {"tasks": tasks_for(1, "emails")}
    assert (await client.post("/v1/triggers", json=body, headers=auth())).status == 202
    await drain(client)
    csrf = await _login(client)
    dead = await (await client.get("/ui/deliveries?state=dead")).text()
    [delivery_id] = re.findall(r'<tr data-id="(\d+)"', dead)

    receiver.fail_always(None)
    response = await client.post(
        f"/ui/deliveries/{delivery_id}/retry", data={"csrf": csrf}, allow_redirects=False
    )
    assert (response.status, response.headers["Location"]) == (
        303,
        f"/ui/deliveries/{delivery_id}",
    )
    await drain(client)
    detail = await (await client.get(f"/ui/deliveries/{delivery_id}")).text()
    assert 'data-testid="state">delivered<' in detail

    again = await client.post(f"/ui/deliveries/{delivery_id}/retry", data={"csrf": csrf})
    assert again.status == 409
    assert "only dead deliveries can be retried" in await again.text()
    assert len(receiver.received) == 1


async def test_the_dashboard_can_be_turned_off(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink, ui={"enabled": False})
    assert (await client.get("/ui/login")).status == 404


async def test_the_ledger_reads_the_pages_need(open_ledger: LedgerFactory, tmp_path: Path) -> None:
    """list_inbound pages newest first; field and record filters; errors and minutes (both
    backends)."""
    store = await open_ledger(tmp_path / "ledger.db")
    now = 1_800_000_000.0
    try:
        target = model.Target("hubspot", "contacts", "501")
        tasks = [
            model.Task("person", str(uuid.uuid4()), "emails", targets=(target,)),
            model.Task("person", str(uuid.uuid4()), "phones"),
        ]
        [with_record, phone] = await store.accept(tasks, now)
        by_field = await store.list_enrichments(state=None, after=0, limit=10, field="phones")
        assert [r["id"] for r in by_field] == [phone.id]
        by_record = await store.list_enrichments(state=None, after=0, limit=10, record_id="501")
        assert [r["id"] for r in by_record] == [with_record.id]
        assert await store.list_enrichments(state=None, after=0, limit=10, record_id="5") == []

        events = [
            model.Inbound(f"k{i}", skipped="no Lance id on the record", record=("contacts", f"{i}"))
            for i in range(5)
        ]
        for i, event in enumerate(events):
            await store.receive("hubspot", [event], now + i)
        first = await store.list_inbound(limit=3)
        assert [r["key"] for r in first] == ["k4", "k3", "k2"]
        assert first[0]["detail"] == "no Lance id on the record"
        last = first[-1]
        cursor = (last["receivedAtSeconds"], last["source"], last["key"])
        assert [r["key"] for r in await store.list_inbound(before=cursor, limit=3)] == ["k1", "k0"]
        assert await store.list_inbound(state="accepted") == []
        assert await store.list_inbound(source="salesforce") == []

        await store.apply([ledger.Change(phone.id, "failed", None, error="x")], now + 120)
        minutes = await store.per_minute(now)
        assert minutes["enrichments"] == {int((now + 120) // 60): 1}
        assert await store.last_errors(["hubspot"]) == {}
    finally:
        await store.close()

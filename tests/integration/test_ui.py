"""The dashboard at /ui/ over loopback: login, sessions, CSRF, escaping, filters, retry."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from bridge import ledger, model, runtime
from bridge import settings as settings_mod
from bridge.ledger import postgres_db, sqlite_reads
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests import pg
from tests.conftest import (
    API_TOKEN,
    SECRET,
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
PAGE_SIZE = 50  # rows per dashboard page


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


async def _enrich(client: Client, count: int) -> None:
    """Trigger ``count`` email enrichments, then run the jobs until all is settled."""
    body = {"tasks": tasks_for(count, "emails")}
    assert (await client.post("/v1/triggers", json=body, headers=auth())).status == 202
    await drain(client)


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
    for path in ("/ui/", "/ui/inbound", "/ui/connectors", "/ui/jump?id=1"):
        response = await client.get(path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/ui/login"), path
    # A form sent after the session expired changes nothing and leads to the login page.
    for path in ("/ui/deliveries/1/retry", "/ui/deliveries/retry-dead"):
        response = await client.post(path, data={"csrf": "x"}, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/ui/login"), path

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
        "/ui/deliveries?from=noon",
        "/ui/deliveries?to=2026-02-30T00:00",
        "/ui/deliveries/retry-dead?connector=unknown",
        "/ui/deliveries/retry-dead?from=%00",
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
    await _enrich(client, 1)
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


async def test_the_ledger_reads_the_pages_need(
    open_ledger: LedgerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """recent_inbound pages newest first; field and record filters; errors and minutes (both
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
        # A creation-time range read through its index (narrow) or along the ids (wide).
        for probe in (0, 20_000):
            monkeypatch.setattr(sqlite_reads, "CREATED_PROBE_ROWS", probe)
            found = await store.list_enrichments(state=None, after=0, limit=10, created_after=now)
            assert [r["id"] for r in found] == [with_record.id, phone.id]
            later = await store.list_enrichments(
                state=None, after=0, limit=10, created_after=now + 1, created_before=now + 9
            )
            assert later == []

        events = [
            model.Inbound(f"k{i}", skipped="no Lance id on the record", record=("contacts", f"{i}"))
            for i in range(5)
        ]
        for i, event in enumerate(events):
            await store.receive("hubspot", [event], now + i)
        first = await store.recent_inbound(limit=3)
        assert [r["key"] for r in first] == ["k4", "k3", "k2"]
        assert first[0]["reason"] == "no Lance id on the record"
        last = first[-1]
        cursor = tuple(last["cursor"])
        older = await store.recent_inbound(before=cursor, limit=3)
        assert [r["key"] for r in older] == ["k1", "k0"]
        assert await store.recent_inbound(state="accepted") == []
        assert await store.recent_inbound(source="salesforce") == []

        await store.apply([ledger.Change(phone.id, "failed", None, error="x")], now + 120)
        minutes = await store.per_minute(now)
        assert minutes["enrichments"] == {int((now + 120) // 60): 1}
        assert await store.last_errors(["hubspot"]) == {}
        assert await store.count_matching_deliveries(state="dead", connector="hubspot") == 0
        assert await store.delivery_ids(state="dead", updated_after=now) == []
    finally:
        await store.close()


async def _page(client: Client, path: str, status: int = 200) -> str:
    response = await client.get(path, allow_redirects=False)
    text = await response.text()
    assert response.status == status, (path, text[:500])
    return text


async def test_every_page_carries_the_csp_and_no_inline_script(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    await _enrich(client, 1)
    await _login(client)
    paths = [
        "/ui/login",
        "/ui/",
        "/ui/fragments/counts",
        "/ui/enrichments",
        "/ui/enrichments/1",
        "/ui/deliveries",
        "/ui/deliveries/1",
        "/ui/deliveries/retry-dead",
        "/ui/inbound",
        "/ui/connectors",
        "/ui/enrichments/999",
    ]
    for path in paths:
        response = await client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp, path
        assert "default-src 'none'" in csp, path
        assert "'unsafe-inline'" not in csp
        page = await response.text()
        # Scripts only from files; no inline style either (style-src 'self').
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == [], path
        assert "<style" not in page, path
        assert " style=" not in page, path
        for control in re.findall(
            r'<(?:input|select)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', page
        ):
            assert f'for="{control}"' in page, (path, control)
    for asset in ("dashboard.css", "local-times.js", "htmx.min.js"):
        assert (await client.get(f"/ui/static/{asset}")).status == 200


async def test_overview_charts_the_last_hour_and_jump_goes_to_an_id(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    await _enrich(client, 3)
    await _login(client)
    page = await _page(client, "/ui/")
    throughput = re.search(r'data-testid="throughput">(.*?)</figure>', page, re.S)
    assert throughput
    assert "enrichments ended: 3" in throughput.group(1)
    assert "deliveries acknowledged: 3" in throughput.group(1)
    bars = re.findall(
        r"<title>\d\d:\d\d UTC: ([\d,]+) (enrichments ended|deliveries acknowl)", page
    )
    assert sum(int(n) for n, kind in bars if kind == "enrichments ended") == 3
    lance = re.search(r'data-testid="lance-requests">(.*?)</figure>', page, re.S)
    assert lance
    requests = re.search(r"requests: ([\d,]+)\)", lance.group(1))
    assert requests
    assert int(requests.group(1)) >= 2

    jumped = await client.get("/ui/jump?kind=delivery&id=1", allow_redirects=False)
    assert jumped.headers["Location"] == "/ui/deliveries/1"
    jumped = await client.get("/ui/jump?id=%232", allow_redirects=False)
    assert jumped.headers["Location"] == "/ui/enrichments/2"
    for bad in ("/ui/jump?id=x", "/ui/jump?id=0", "/ui/jump?kind=user&id=1"):
        assert " must be " in await _page(client, bad, 400)
    assert "There is no delivery 77" in await _page(client, "/ui/deliveries/77", 404)


async def test_enrichment_filters_by_crm_record_and_time(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any, clock: Clock
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    target = {"connector": "hook"}
    early = tasks_for(2, "emails", targets=[target])
    assert (await client.post("/v1/triggers", json={"tasks": early}, headers=auth())).status == 202
    clock.advance(3600)
    late = tasks_for(1, "phones")
    answer = await client.post("/v1/triggers", json={"tasks": late}, headers=auth())
    late_id = (await answer.json())["enrichments"][0]["id"]
    store = client.app[runtime.BRIDGE].ledger
    crm = model.Task(
        "person", str(uuid.uuid4()), "emails", targets=(model.Target("hook", "contacts", "9001"),)
    )
    [with_record] = await store.accept([crm], clock())
    await _login(client)

    cut = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(clock() - 60))
    page = await _page(client, f"/ui/enrichments?from={cut}")
    assert re.findall(r'<tr data-id="(\d+)"', page) == [str(late_id), str(with_record.id)]
    page = await _page(client, f"/ui/enrichments?to={cut}Z")
    assert len(re.findall(r'<tr data-id="(\d+)"', page)) == 2
    page = await _page(client, "/ui/enrichments?record_id=9001")
    assert re.findall(r'<tr data-id="(\d+)"', page) == [str(with_record.id)]
    assert "hook contacts 9001" in page
    for bad in ("from=yesterday", "to=2026-13-01T00:00", "record_id=" + "9" * 201):
        assert " must be " in await _page(client, f"/ui/enrichments?{bad}", 400)


async def test_retry_every_dead_delivery_of_a_filter_after_a_confirmation(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    clock: Clock,
) -> None:
    receiver, _ = sink
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    receiver.fail_always(410)
    await _enrich(client, 4)
    csrf = await _login(client)
    store = client.app[runtime.BRIDGE].ledger
    assert await store.count_deliveries(model.DeliveryState.DEAD) == 4

    # A filter in the future selects none: nothing to retry, no button.
    later = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(clock() + 3600))
    none = await _page(client, f"/ui/deliveries/retry-dead?connector=hook&from={later}")
    assert "nothing to retry" in none
    assert '<button type="submit">Retry' not in none
    confirm = await _page(client, "/ui/deliveries/retry-dead?connector=hook")
    assert "4 dead deliveries will be made pending" in confirm
    action = re.search(r'<form method="post" action="([^"]+)"', confirm)
    assert action
    url = action.group(1).replace("&amp;", "&")

    # Without the CSRF token nothing changes.
    refused = await client.post(url, data={}, allow_redirects=False)
    assert refused.status == 403
    assert await store.count_deliveries(model.DeliveryState.DEAD) == 4
    bad = await client.post("/ui/deliveries/retry-dead?connector=nope", data={"csrf": csrf})
    assert bad.status == 400
    assert await store.count_deliveries(model.DeliveryState.DEAD) == 4

    receiver.fail_always(None)
    done = await client.post(url, data={"csrf": csrf}, allow_redirects=False)
    assert done.status == 303
    listing = await _page(client, done.headers["Location"])
    assert "4 dead deliveries are pending again." in listing
    assert len(re.findall(r'<tr data-id="', listing)) == 4
    await drain(client)
    assert await store.count_deliveries(model.DeliveryState.DELIVERED) == 4
    assert len(receiver.received) == 4
    # A second confirmation finds none; a replay of a delivered event is refused.
    assert "nothing to retry" in await _page(client, "/ui/deliveries/retry-dead")
    again = await client.post("/ui/deliveries/1/retry", data={"csrf": csrf})
    assert again.status == 409
    assert "only dead deliveries can be retried" in await again.text()


async def test_inbound_events_show_their_state_and_reason_as_text(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any, clock: Clock
) -> None:
    client = await _bridge(make_bridge, tmp_path, simulator, sink)
    store = client.app[runtime.BRIDGE].ledger
    task = model.Task("person", str(uuid.uuid4()), "emails")
    events = [
        model.Inbound("evt-accepted", tasks=(task,), record=("contacts", "11")),
        model.Inbound("evt-skipped", skipped=f"no Lance id: {HOSTILE}", record=("contacts", "12")),
    ]
    await store.receive("hook", events, clock())
    for i in range(PAGE_SIZE + 2):
        await store.receive("hook", [model.Inbound(f"old-{i}", skipped="old")], clock() - 60 - i)
    await _login(client)

    page = await _page(client, "/ui/inbound")
    assert HOSTILE not in page
    assert "no Lance id: &lt;script&gt;" in page
    assert re.findall(r'<tr data-key="([^"]+)"', page)[:2] in (
        ["evt-accepted", "evt-skipped"],
        ["evt-skipped", "evt-accepted"],
    )
    nxt = re.search(r'rel="next" href="([^"]+)"', page)
    assert nxt
    rest = await _page(client, nxt.group(1).replace("&amp;", "&"))
    seen = re.findall(r'<tr data-key="([^"]+)"', page) + re.findall(r'<tr data-key="([^"]+)"', rest)
    assert len(seen) == len(set(seen)) == PAGE_SIZE + 4
    accepted = await _page(client, "/ui/inbound?state=accepted")
    assert re.findall(r'<tr data-key="([^"]+)"', accepted) == ["evt-accepted"]
    # A state the match feature writes is offered and filters to nothing yet.
    assert "no inbound events match" in await _page(client, "/ui/inbound?state=ambiguous")
    for bad in ("state=%3Cb%3E", "source=elsewhere", "before=x", "before=%5B1%2C2%5D"):
        assert " must be " in await _page(client, f"/ui/inbound?{bad}", 400)


async def test_connectors_show_success_rate_last_error_and_budget(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
) -> None:
    receiver, sink_url = sink
    hubspot = {
        "name": "crm",
        "type": "hubspot",
        "base_url": "http://127.0.0.1:9",
        "access_token": "pat-secret-token",
        "client_secret": "hs-secret",
    }
    hook = {"name": "hook", "type": "webhook", "url": f"{sink_url}/hook", "secret": SECRET}
    client = await make_bridge(
        make_settings(tmp_path, simulator[1], None, connectors=[hook, hubspot])
    )
    await _enrich(client, 3)
    receiver.fail_always(410)
    await _enrich(client, 1)
    await _login(client)

    page = await _page(client, "/ui/connectors")
    hook_part = page.split('data-connector="hook"')[1].split("</section>")[0]
    assert "75.0 % (3 delivered, 1 dead)" in hook_part
    assert "HTTP 410" in hook_part
    crm_part = page.split('data-connector="crm"')[1].split("</section>")[0]
    assert "no delivery settled yet" in crm_part
    assert "0 of 100 requests used in the last 10 s" in crm_part
    assert "pat-secret-token" not in page
    assert "hs-secret" not in page
    assert SECRET not in page
    assert "none: every job may call Lance" in page


async def test_bench_ui_times_every_page_logged_in(tmp_path: Path) -> None:
    """A small ``bench ui``: every page answers 200 (the bench fails on a login page)."""
    from bridge.bench import ui as bench_ui  # noqa: PLC0415 - pulls in the bench's parts

    result = await bench_ui.bench_ui(2_000, tmp_path, rounds=2)
    assert result.scenario == "ui"
    assert result.figures["rows"] == 2_000
    timed = [key for key in result.figures if key.endswith("p50/p99 ms")]
    assert len(timed) == len(result.bars) == 20
    assert "inbound p50/p99 ms" in timed
    assert "retry-dead confirmation p50/p99 ms" in timed


async def test_the_pages_on_postgresql_list_the_replicas(
    make_bridge: BridgeFactory, tmp_path: Path, simulator: Any, sink: Any, clock: Clock
) -> None:
    """Every page on a PostgreSQL ledger shared by two replicas; the overview lists both."""
    async with pg.schema() as url:
        config = settings_mod.LedgerSettings(url=SecretStr(url), replica_id="ui-b")
        await postgres_db.migrate(config)
        other = await ledger.open(config)
        try:
            await other.heartbeat(clock())
            ledger_section = {"url": url, "replica_id": "ui-a"}
            client = await _bridge(make_bridge, tmp_path, simulator, sink, ledger=ledger_section)
            await client.app[runtime.BRIDGE].ledger.heartbeat(clock())
            await _enrich(client, 2)
            await client.app[runtime.BRIDGE].ledger.receive(
                "hook", [model.Inbound("pg-1", skipped="no Lance id")], clock()
            )
            await _login(client)
            overview = await _page(client, "/ui/")
            replicas = re.search(r'data-testid="replicas">(.*?)</table>', overview, re.S)
            assert replicas
            assert "ui-a" in replicas.group(1)
            assert "ui-b" in replicas.group(1)
            assert "enrichments ended: 2" in overview
            cut = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(clock() - 600))
            for path in (
                "/ui/enrichments?field=emails&from=" + cut,
                "/ui/enrichments/1",
                "/ui/deliveries?connector=hook&from=" + cut,
                "/ui/deliveries/retry-dead",
                "/ui/inbound?state=skipped",
                "/ui/connectors",
            ):
                await _page(client, path)
            assert "no Lance id" in await _page(client, "/ui/inbound")
        finally:
            await other.close()

"""The dashboard in a real browser: Debian's chromium driven by Playwright, over loopback.

The bridge, the Lance simulator and the webhook sink all run for real; jobs run through
``run_once()`` (``drain``). Screenshots of each page land in ``tests/artifacts/``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, async_playwright, expect

from bridge import ledger, model, runtime
from bridge.sim import lance as sim
from bridge.sim import sink as sink_mod
from tests.conftest import API_TOKEN, BridgeFactory, Clock, auth, drain, make_settings, tasks_for

# The overview polls every 2 s and its figures may be 2 s old: a count can take two polls and a
# read to move, longer on a busy 2-core machine than expect()'s default 5 s.
expect.set_options(timeout=15_000)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
HOSTILE = "<script>window.pwned=1</script>"
Client = TestClient[web.Request, web.Application]


def _need_chromium() -> None:
    """Skip without the system's chromium, with one line; in CI, fail instead."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    _need_chromium()
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


async def _open(browser: Browser, client: Client) -> tuple[str, Page]:
    """The bridge's base URL, and a fresh desktop-sized page of ``browser``."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(10_000)
    return str(client.make_url("")).rstrip("/"), page


async def _log_in(page: Page) -> None:
    """Log in on the login page shown; the overview follows."""
    await page.get_by_label("API token").fill(API_TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


async def test_an_operator_follows_work_through_the_dashboard(
    browser: Browser,
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, simulator[1], sink_url))
    base, page = await _open(browser, client)

    await page.goto(f"{base}/ui/")
    await expect(page).to_have_url(f"{base}/ui/login")
    await _shot(page, "login")
    await _log_in(page)
    queued = page.locator('.card[data-state="queued"] strong')
    await expect(queued).to_have_text("0")

    # Work arrives through the API; the overview's htmx poll shows it without a reload.
    tasks = [*tasks_for(3, "emails"), *tasks_for(2, "phones")]
    answer = await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())
    first = (await answer.json())["enrichments"][0]["id"]
    await expect(queued).to_have_text("5")

    # One row fails with markup in Lance's message; the webhook receiver refuses for good.
    store = client.app[runtime.BRIDGE].ledger
    record = {"entityId": tasks[0]["entityId"], "entityType": "person", "field": "emails"}
    record |= {"status": "failed", "error": HOSTILE, "dataFound": False}
    await store.apply([ledger.Change(first, "failed", record, None, HOSTILE, True)], clock())
    receiver.fail_always(410)
    await drain(client)
    await expect(queued).to_have_text("0")
    await expect(page.locator('.card[data-state="finished"] strong')).to_have_text("4")
    await expect(page.locator('tr[data-connector="hook"] td[data-state="dead"]')).to_have_text("5")
    await _shot(page, "overview")

    await page.get_by_role("link", name="Enrichments", exact=True).click()
    await page.get_by_label("Field").select_option("phones")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tbody tr[data-id]")).to_have_count(2)
    await _shot(page, "enrichments")

    await page.goto(f"{base}/ui/enrichments/{first}")
    await expect(page.get_by_text(HOSTILE).first).to_be_visible()
    assert await page.evaluate("window.pwned") is None
    shown = page.locator("time[datetime]").first
    assert await shown.get_attribute("title") == await shown.get_attribute("datetime")
    await _shot(page, "enrichment")

    await page.goto(f"{base}/ui/deliveries")
    await page.get_by_label("State").select_option("dead")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tbody tr[data-id]")).to_have_count(5)
    await _shot(page, "deliveries")
    await page.locator("tbody tr[data-id] a").first.click()
    await expect(page.get_by_test_id("state")).to_have_text("dead")

    receiver.fail_always(None)
    await page.get_by_role("button", name="Retry delivery").click()
    await expect(page.get_by_test_id("state")).to_have_text("pending")
    await drain(client)
    await page.reload()
    await expect(page.get_by_test_id("state")).to_have_text("delivered")
    await expect(page.get_by_role("button", name="Retry delivery")).to_be_disabled()
    await _shot(page, "delivery")
    assert len(receiver.received) == 1

    # A POST without the session's CSRF token is refused, even with the session cookie.
    refused = await page.request.post(f"{base}/ui/logout", form={"csrf": "forged"})
    assert refused.status == 403
    await page.reload()
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()

    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{base}/ui/login")
    await page.goto(f"{base}/ui/deliveries")
    await expect(page).to_have_url(f"{base}/ui/login")


def test_without_chromium_the_browser_tests_skip_and_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium"):
        _need_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="is missing"):
        _need_chromium()


async def test_inbound_connectors_filters_retry_all_and_jump_in_the_browser(
    browser: Browser,
    make_bridge: BridgeFactory,
    simulator: tuple[sim.LanceSimulator, str],
    sink: tuple[sink_mod.WebhookSink, str],
    tmp_path: Path,
    clock: Clock,
) -> None:
    receiver, sink_url = sink
    client = await make_bridge(make_settings(tmp_path, simulator[1], sink_url))
    base, page = await _open(browser, client)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)

    receiver.fail_always(410)
    tasks = tasks_for(3, "emails")
    assert (await client.post("/v1/triggers", json={"tasks": tasks}, headers=auth())).status == 202
    await drain(client)
    store = client.app[runtime.BRIDGE].ledger
    task = model.Task("person", tasks[0]["entityId"], "phones")
    events = [
        model.Inbound("evt-1", tasks=(task,), record=("contacts", "101")),
        model.Inbound("evt-2", skipped=f"no Lance id {HOSTILE}", record=("contacts", "102")),
    ]
    await store.receive("hook", events, clock())

    response = await page.goto(f"{base}/ui/login")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    await _log_in(page)
    await expect(page.get_by_test_id("throughput").locator("svg rect").first).to_be_visible()
    await _shot(page, "overview-charts")
    # Keyboard: the first Tab reaches the navigation, and Enter follows it.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Overview"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Enrichments")).to_be_visible()

    await page.get_by_role("link", name="Inbound", exact=True).click()
    await expect(page.get_by_role("heading", name="Inbound events")).to_be_visible()
    await expect(page.get_by_text(f"no Lance id {HOSTILE}")).to_be_visible()
    assert await page.evaluate("window.pwned") is None
    await page.get_by_label("State").select_option("skipped")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tbody tr[data-key]")).to_have_count(1)
    await _shot(page, "inbound")

    await page.get_by_role("link", name="Connectors", exact=True).click()
    hook = page.locator('section[data-connector="hook"]')
    await expect(hook.get_by_test_id("rate")).to_contain_text("0.0 % (0 delivered, 3 dead)")
    await expect(hook.get_by_test_id("last-error")).to_contain_text("HTTP 410")
    await _shot(page, "connectors")

    # Filter the deliveries, then retry every dead one of the filter after the confirmation.
    await page.get_by_role("link", name="Deliveries", exact=True).click()
    await page.get_by_label("Connector").select_option("hook")
    await page.get_by_label("Changed from (UTC)").fill("2020-01-01T00:00:00")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("tbody tr[data-id]")).to_have_count(3)
    receiver.fail_always(None)
    await page.get_by_role("link", name="Retry every dead delivery of this filter").click()
    await expect(page.get_by_test_id("count")).to_contain_text("3 dead deliveries will be made")
    await _shot(page, "retry-dead")
    await page.get_by_role("button", name="Retry 3 dead deliveries").click()
    await expect(page.get_by_role("status")).to_have_text("3 dead deliveries are pending again.")
    await drain(client)
    # The three replayed, and the enrichment the accepted inbound event started.
    assert await store.count_deliveries(model.DeliveryState.DELIVERED) == 4
    assert len(receiver.received) == 4

    # Jump to an id from the header; an unknown one is the 404 page.
    await page.get_by_label("Go to", exact=True).select_option("delivery")
    await page.get_by_label("id", exact=True).fill("2")
    await page.get_by_role("button", name="Go").click()
    await expect(page.get_by_role("heading", name="Delivery 2")).to_be_visible()
    await expect(page.get_by_test_id("state")).to_have_text("delivered")
    await page.get_by_label("id", exact=True).fill("999")
    await page.get_by_role("button", name="Go").click()
    await expect(page.get_by_text("There is no enrichment 999.")).to_be_visible()
    assert refused == []

    # Readable on a phone: nothing wider than the screen but the scrolling tables.
    phone = await browser.new_context(viewport={"width": 390, "height": 844})
    await phone.add_cookies(await page.context.cookies())
    small = await phone.new_page()
    await small.goto(f"{base}/ui/")
    await expect(small.get_by_role("heading", name="Overview")).to_be_visible()
    assert await small.evaluate("document.documentElement.scrollWidth") <= 390
    await small.screenshot(path=ARTIFACTS / "overview-phone.png", full_page=True)
    await phone.close()
    # Without JavaScript every page still reads (htmx only refreshes the overview).
    plain = await browser.new_context(java_script_enabled=False)
    await plain.add_cookies(await page.context.cookies())
    bare = await plain.new_page()
    await bare.goto(f"{base}/ui/deliveries?state=delivered")
    await expect(bare.locator("tbody tr[data-id]")).to_have_count(4)
    await bare.goto(f"{base}/ui/inbound")
    await expect(bare.locator("tbody tr[data-key]")).to_have_count(2)
    await plain.close()

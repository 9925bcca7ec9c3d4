"""The Standard Webhooks sink over real loopback HTTP: verification, dedupe, injected failures."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from bridge.sim import sink as sink_module
from bridge.sim.sink import WebhookSink

# The test vector shared by the Standard Webhooks reference libraries.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"

Client = TestClient[Any, Any]


def signed(
    body: bytes, msg_id: str = "msg_1", ts: float | None = None, secret: str = SECRET
) -> dict[str, str]:
    when = time.time() if ts is None else ts
    stamp = datetime.fromtimestamp(when, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when)),
        "webhook-signature": Webhook(secret).sign(msg_id, stamp, body.decode()),
        "content-type": "application/json",
    }


def payload(n: int = 1) -> bytes:
    return json.dumps({"type": "enrichment.finished", "data": {"n": n}}).encode()


@pytest.fixture
def sink() -> WebhookSink:
    return WebhookSink(SECRET)


@pytest.fixture
async def client(aiohttp_client: Any, sink: WebhookSink) -> Client:
    return await aiohttp_client(sink.app)  # type: ignore[no-any-return]


async def post(client: Client, body: bytes, headers: dict[str, str], path: str = "/hooks") -> Any:
    async with client.post(path, data=body, headers=headers) as resp:
        await resp.read()
        return resp


async def test_verified_delivery_is_recorded(client: Client, sink: WebhookSink) -> None:
    resp = await post(client, payload(), signed(payload()), "/any/deep/path")
    assert resp.status == 204
    await sink.wait_for(1)
    assert sink.received == {"msg_1": {"type": "enrichment.finished", "data": {"n": 1}}}
    assert (sink.attempts, sink.rejected) == ({"msg_1": 1}, 0)


def _tampered_signature() -> dict[str, str]:
    return {**signed(payload()), "webhook-signature": signed(payload(2))["webhook-signature"]}


REJECTED_CASES = {
    "no headers": {"content-type": "application/json"},
    "wrong secret": signed(payload(), secret=OTHER_SECRET),
    "signature of another body": _tampered_signature(),
    "not a signature": {**signed(payload()), "webhook-signature": "garbage"},
    "not base64": {**signed(payload()), "webhook-signature": "v1,@@@"},
    "only unknown versions": {**signed(payload()), "webhook-signature": "v1a,AAAA"},
    "too old": signed(payload(), ts=time.time() - 3600),
    "too new": signed(payload(), ts=time.time() + 3600),
    "bad timestamp": {**signed(payload()), "webhook-timestamp": "yesterday"},
}


@pytest.mark.parametrize("headers", REJECTED_CASES.values(), ids=REJECTED_CASES.keys())
async def test_bad_signatures_are_401_and_counted(
    client: Client, sink: WebhookSink, headers: dict[str, str]
) -> None:
    resp = await post(client, payload(), headers)
    assert resp.status == 401
    assert (sink.rejected, sink.received) == (1, {})


async def test_duplicate_webhook_id_is_recorded_once(client: Client, sink: WebhookSink) -> None:
    first = await post(client, payload(1), signed(payload(1), "msg_dup"))
    retry = await post(client, payload(2), signed(payload(2), "msg_dup"))
    assert (first.status, retry.status) == (204, 204)
    assert sink.received == {"msg_dup": {"type": "enrichment.finished", "data": {"n": 1}}}
    assert sink.attempts["msg_dup"] == 2


async def test_fail_next_then_success(client: Client, sink: WebhookSink) -> None:
    sink.fail_next(2, 503, retry_after=7)
    statuses = []
    for _ in range(3):
        resp = await post(client, payload(), signed(payload(), "msg_retry"))
        statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert statuses == [(503, "7"), (503, "7"), (204, None)]
    assert sink.attempts["msg_retry"] == 3
    assert list(sink.received) == ["msg_retry"]


async def test_fail_always_until_turned_off(client: Client, sink: WebhookSink) -> None:
    sink.fail_always(410)
    assert (await post(client, payload(), signed(payload()))).status == 410
    assert (await post(client, payload(), signed(payload()))).status == 410
    assert sink.received == {}
    sink.fail_always(None)
    assert (await post(client, payload(), signed(payload()))).status == 204


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]"])
async def test_signed_body_that_is_not_a_json_object_is_400(
    client: Client, sink: WebhookSink, body: bytes
) -> None:
    resp = await post(client, body, signed(body))
    assert resp.status == 400
    assert (sink.received, sink.rejected) == ({}, 0)


async def test_injected_clock_accepts_the_reference_test_vector(aiohttp_client: Any) -> None:
    sink = WebhookSink(SECRET, clock=lambda: VECTOR_TS + 60)
    client = await aiohttp_client(sink.app)
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": f"v1,bm90IGl0 {VECTOR_SIGNATURE}",  # a rotated-out key first
    }
    assert (await post(client, VECTOR_BODY, headers)).status == 204
    assert sink.received == {VECTOR_ID: {"test": 2432232314}}


async def test_injected_clock_rejects_stale_timestamps(aiohttp_client: Any) -> None:
    sink = WebhookSink(SECRET, clock=lambda: VECTOR_TS + 301)
    client = await aiohttp_client(sink.app)
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert (await post(client, VECTOR_BODY, headers)).status == 401
    assert sink.rejected == 1


async def test_wait_for_wakes_on_delivery(client: Client, sink: WebhookSink) -> None:
    waiter = asyncio.create_task(sink.wait_for(2, timeout_s=5))
    for n in (1, 2):
        await post(client, payload(n), signed(payload(n), f"msg_{n}"))
    await waiter
    assert set(sink.received) == {"msg_1", "msg_2"}


async def test_wait_for_times_out_with_a_count(sink: WebhookSink) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await sink.wait_for(1, timeout_s=0.01)


async def test_only_post_is_accepted(client: Client) -> None:
    async with client.get("/hooks") as resp:
        assert resp.status == 405


async def test_serve_on_a_free_loopback_port(sink: WebhookSink) -> None:
    runner = await sink_module.serve(sink, "127.0.0.1", 0)
    try:
        url = f"{sink_module.base_url(runner)}/hooks"
        assert sink_module.bound_port(runner) > 0
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=payload(), headers=signed(payload())) as resp,
        ):
            assert resp.status == 204
        await sink.wait_for(1)
    finally:
        await runner.cleanup()

"""Benchmark of the delivery path: a backlog of signed webhooks drained to a verifying sink."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from bridge import classify, dispatcher, ledger, model, outbox
from bridge import settings as settings_mod
from bridge.bench import Result, peak_rss_mb, procs
from connectors import webhook

FILL_CHUNK = 10_000
CONNECTOR = "bench-webhook"
CONCURRENCY = 64
CEILING_REQUESTS = 20_000
DEADLINE_S = 900.0


class _Timed(webhook.WebhookConnector):
    """The webhook connector, noting when each acknowledgement arrived."""

    acked_at: list[float]

    async def _send(self, chunk: Sequence[model.Delivery]) -> list[classify.Outcome]:
        outcomes = await super()._send(chunk)
        now = time.perf_counter()
        self.acked_at += [now for o in outcomes if o.kind == "delivered"]
        return outcomes


async def _fill(store: ledger.Ledger, count: int, now: float) -> None:
    """``count`` pending webhook events, through the ledger's own verbs: accept, then end."""
    for start in range(0, count, FILL_CHUNK):
        tasks = [
            model.Task("person", str(uuid.uuid4()), "emails")
            for _ in range(min(FILL_CHUNK, count - start))
        ]
        accepted = await store.accept(tasks, now)
        ended = [ledger.Change(a.id, "failed", error="bench", from_queue=True) for a in accepted]
        await store.apply(ended, now)


async def bench_deliver(count: int, folder: Path) -> Result:
    """Drain ``count`` due webhook events to the sink, then the bare client → server loop."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    process, conn = procs.spawn(procs.receivers_process, secret)
    sink_url, bare_url = await procs.ask(conn)
    router = outbox.Router([outbox.Route(CONNECTOR, False, frozenset(model.EVENT_TYPES))])
    store = await ledger.open(folder / "deliver.db", router=router)
    try:
        await _fill(store, count, time.time())
        [sample] = await store.due_deliveries(time.time(), 1)
        drained = await _drain(store, f"{sink_url}/hook", secret, count)
        remote = await procs.ask(conn, "stats")
        ceiling = await bare_ceiling(
            f"{bare_url}/hook", len(sample.body), min(count, CEILING_REQUESTS)
        )
        receiver = await bare_ceiling(
            f"{sink_url}/hook", len(sample.body), min(count, CEILING_REQUESTS), secret
        )
        # A ceiling that counted refusals would measure nothing: each must have been verified.
        verified = (await procs.ask(conn, "stats"))["received"] - remote["received"]
    finally:
        await store.close()
        conn.send("stop")
        process.join(10)
    elapsed, acked = drained
    rate = count / elapsed
    p99_ms = acked[int(len(acked) * 0.99) - 1] * 1000 if acked else 0.0
    figures: dict[str, float | int | str] = {
        "events": count,
        "body_bytes": len(sample.body),
        "concurrency": CONCURRENCY,
        "seconds": round(elapsed, 2),
        "events_per_s": round(rate),
        "p99_due_to_acknowledged_ms": round(p99_ms, 1),
        "verified_by_receiver": remote["received"],
        "rejected_by_receiver": remote["rejected"],
        "ceiling_bare_client_server_per_s": round(ceiling),
        "share_of_ceiling": f"{rate / ceiling:.0%}",
        "receiver_ceiling_bare_signed_client_per_s": round(receiver),
        "share_of_receiver_ceiling": f"{rate / receiver:.0%}",
        "receiver_ceiling_requests_verified": verified,
        "peak_rss_mb": peak_rss_mb(),
    }
    bars = {
        "all delivered and verified": remote["received"] == count and not remote["rejected"],
        "≥ 50 % of the bare ceiling": rate >= 0.5 * ceiling,
    }
    return Result("deliver", figures, bars)


async def _drain(
    store: ledger.Ledger, url: str, secret: str, count: int
) -> tuple[float, list[float]]:
    """Run the delivery job until every event is acknowledged.

    Returns:
        Seconds it took, and for each acknowledged event the seconds from due (the start: all
        are due then) to its acknowledgement, sorted.
    """
    config = webhook.WebhookConfig(
        name=CONNECTOR, url=url, secret=secret, max_concurrency=CONCURRENCY
    )
    tcp = aiohttp.TCPConnector(limit=CONCURRENCY + 16)
    async with aiohttp.ClientSession(connector=tcp) as session:
        target = _Timed(config, session)
        target.acked_at = []
        job = dispatcher.Dispatcher(
            store, {CONNECTOR: target}, settings_mod.DeliverySettings(), clock=time.time
        )
        started = time.perf_counter()
        delivered = 0
        while delivered < count:
            if time.perf_counter() - started > DEADLINE_S:
                raise TimeoutError("deliver benchmark did not finish in time")
            delivered += (await job.run_once()).delivered
        elapsed = time.perf_counter() - started
    return elapsed, sorted(t - started for t in target.acked_at)


async def bare_ceiling(url: str, body_size: int, requests: int, secret: str | None = None) -> float:
    """Requests/s of a bare aiohttp client POSTing ``body_size`` bytes to a bare handler,
    ``CONCURRENCY`` at once over reused connections: what this machine allows the path.

    With ``secret``, each request is a signed event of its own (a JSON object that size) and
    ``url`` the verifying receiver: what the receiver allows, on a machine whose cores the
    sender and the receiver share.
    """
    body = b'{"x":"' + b"x" * max(0, body_size - 8) + b'"}'
    signer = webhook.Signer(secret) if secret is not None else None
    plain = {"content-type": "application/json"}
    left = iter(range(requests))
    tcp = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=tcp) as session:

        def headers(number: int) -> dict[str, str]:
            if signer is None:
                return plain
            message_id, stamp = f"msg_ceiling_{number}", int(time.time())
            signature = signer.sign(message_id, stamp, body)
            signed = {"webhook-timestamp": str(stamp), "webhook-signature": signature}
            return plain | {"webhook-id": message_id} | signed

        async def worker() -> None:
            for number in left:
                async with session.post(url, data=body, headers=headers(number)) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return requests / (time.perf_counter() - started)

"""A local webhook receiver that verifies Standard Webhooks signatures, to test senders.

Every ``POST`` on any path is checked with the ``standardwebhooks`` reference library
(``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` over the raw body, ±5 minutes).
A verified delivery is answered 204 and its JSON payload kept under its ``webhook-id``, once:
redeliveries of the same id are acknowledged but not recorded again. Failures can be injected to
exercise the sender's retries.

Example::

    sink = WebhookSink("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    runner = await serve(sink)
    url = f"http://127.0.0.1:{bound_port(runner)}/hooks"
    sink.fail_next(2, 503, retry_after=1)  # the sender must retry twice
    ...
    await sink.wait_for(1)
    await runner.cleanup()
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.sim import _http

bound_port = _http.bound_port
base_url = _http.base_url

TOLERANCE_S = 300  # the reference libraries' window, in both directions


class _ClockedWebhook(Webhook):
    """The reference verifier with its timestamp check read from an injected clock.

    It overrides the library's private ``__verify_timestamp`` hook; if a release renames it, the
    library's own wall-clock check applies again and clocked tests fail loudly, not silently.
    """

    def __init__(self, secret: str, clock: Callable[[], float]) -> None:
        super().__init__(secret)
        self._clock = clock

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        try:
            timestamp = datetime.fromtimestamp(float(timestamp_header), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise WebhookVerificationError("Invalid Signature Headers") from exc
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        if abs(now - timestamp) > timedelta(seconds=TOLERANCE_S):
            raise WebhookVerificationError("Message timestamp outside the tolerance")
        return timestamp


class WebhookSink:
    """A webhook endpoint that verifies, dedupes and records deliveries.

    Args:
        secret: The ``whsec_…`` signing secret shared with the sender.
        clock: Unix-seconds clock for the timestamp tolerance; ``None`` uses the library's
            wall-clock check unchanged.

    Attributes:
        app: The aiohttp application (``POST`` on any path).
        received: Decoded payload of the first verified delivery, per ``webhook-id``.
        attempts: Requests seen per ``webhook-id`` (``""`` when the header is missing), failed
            and duplicate ones included.
        rejected: Requests answered 401 for a missing or bad signature.
    """

    def __init__(self, secret: str, *, clock: Callable[[], float] | None = None) -> None:
        self._webhook = Webhook(secret) if clock is None else _ClockedWebhook(secret, clock)
        self.received: dict[str, dict[str, Any]] = {}
        self.attempts: Counter[str] = Counter()
        self.rejected = 0
        self._fail_next: list[tuple[int, int | None]] = []
        self._fail_always: tuple[int, int | None] | None = None
        self._changed = asyncio.Condition()
        self.app = self.create_app()

    def create_app(self) -> web.Application:
        """Build the aiohttp application accepting ``POST`` on any path."""
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        return app

    def fail_next(self, n: int, status: int = 500, *, retry_after: int | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After``), unrecorded."""
        self._fail_next = [(status, retry_after)] * n

    def fail_always(self, status: int | None, *, retry_after: int | None = None) -> None:
        """Answer every request with ``status`` until called with ``None``."""
        self._fail_always = None if status is None else (status, retry_after)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        """Wait until at least ``count`` distinct deliveries were recorded.

        Raises:
            TimeoutError: Fewer arrived within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: len(self.received) >= count)
        except TimeoutError as exc:
            got = len(self.received)
            raise TimeoutError(
                f"sink received {got} of {count} deliveries in {timeout_s} s"
            ) from exc

    def _injected_failure(self) -> web.Response | None:
        failure = self._fail_next.pop() if self._fail_next else self._fail_always
        if failure is None:
            return None
        status, retry_after = failure
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return _http.json_response({"error": "injected failure"}, status, headers)

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        try:
            self._webhook.verify(body, dict(headers), json_parse=False)
        except (WebhookVerificationError, ValueError):
            # ValueError: the library raises it on malformed signatures or a non-UTF-8 body.
            return False
        return True

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        self.attempts[msg_id] += 1
        failure = self._injected_failure()
        if failure is not None:
            return failure
        if not self._verify(body, request.headers):
            self.rejected += 1
            return _http.json_response({"error": "invalid signature"}, 401)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _http.json_response({"error": "payload must be a JSON object"}, 400)
        if msg_id not in self.received:
            await self._record(msg_id, payload)
        return web.Response(status=204)

    async def _record(self, msg_id: str, payload: dict[str, Any]) -> None:
        async with self._changed:
            self.received[msg_id] = payload
            self._changed.notify_all()


async def serve(sink: WebhookSink, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve ``sink`` on ``host:port`` (0 picks a free port; see :func:`bound_port`).

    Returns:
        The started runner; the caller owns it and must ``await runner.cleanup()``.
    """
    return await _http.serve_app(sink.app, host, port)

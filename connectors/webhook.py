"""Signed webhooks per Standard Webhooks: one event per POST, ``webhook-id`` stable on retries.

Config (``type = "webhook"``): ``url``, ``secret`` (``whsec_`` + base64 of 24-64 random bytes),
``events`` (default: all), ``headers`` (extra request headers), ``timeout_seconds``,
``max_concurrency``. Redirects are not followed: only a 2xx answer counts as delivered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

import aiohttp
import pydantic
from pydantic import SecretStr

from bridge import classify, connector, model

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = (24, 64)


class WebhookConfig(connector.ConnectorConfig):
    """Settings of a webhook connector."""

    type: str = "webhook"
    url: pydantic.AnyHttpUrl
    secret: SecretStr
    # Values are secrets: extra headers usually carry the receiver's credentials.
    headers: dict[str, SecretStr] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("secret")
    @classmethod
    def _valid_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        key = raw.removeprefix(SECRET_PREFIX)
        try:
            size = len(base64.b64decode(key + "=" * (-len(key) % 4), validate=True))
        except binascii.Error:
            size = 0
        if not raw.startswith(SECRET_PREFIX) or not SECRET_BYTES[0] <= size <= SECRET_BYTES[1]:
            raise ValueError(
                f"must be a Standard Webhooks secret: {SECRET_PREFIX} followed by base64 of"
                f" {SECRET_BYTES[0]}-{SECRET_BYTES[1]} random bytes"
            )
        return value


class Signer:
    """Standard Webhooks ``v1`` signatures with one HMAC key set up for the connector's life.

    ``standardwebhooks.Webhook.sign`` takes the body as text and builds a new HMAC (its key
    schedule included) per event; this copies a keyed HMAC and signs the body's bytes as they
    go out. The output is byte-identical (the receiver verifies with the reference library).
    """

    def __init__(self, secret: str) -> None:
        key = secret.removeprefix(SECRET_PREFIX)
        self._keyed = hmac.new(base64.b64decode(key + "=" * (-len(key) % 4)), None, hashlib.sha256)

    def __repr__(self) -> str:
        return "<Signer>"  # never the key

    def sign(self, message_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
        mac = self._keyed.copy()
        mac.update(f"{message_id}.{timestamp}.".encode())
        mac.update(body)
        return "v1," + base64.b64encode(mac.digest()).decode()


class WebhookConnector(connector.Connector):
    """POSTs each event, signed, to one HTTPS endpoint."""

    Config = WebhookConfig
    max_batch = 1

    def __init__(
        self,
        config: connector.ConnectorConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, session, clock=clock)
        assert isinstance(config, WebhookConfig)
        self.settings = config
        self._signer = Signer(config.secret.get_secret_value())
        # Extra headers are the same for every event: unwrapped once, not per request.
        self._headers = {
            name: value.get_secret_value() for name, value in config.headers.items()
        } | {"content-type": "application/json"}
        self._url = str(config.url)

    async def check(self) -> None:
        """Webhook endpoints have no credential to verify; nothing to check."""

    async def _send(self, chunk: Sequence[model.Delivery]) -> list[classify.Outcome]:
        return [await self._post(event) for event in chunk]

    async def _post(self, event: model.Delivery) -> classify.Outcome:
        timestamp = int(time.time())
        headers = {
            **self._headers,
            "webhook-id": event.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self._signer.sign(event.message_id, timestamp, event.body),
        }
        # The URL's path may carry the receiver's credential: it is no metrics label.
        reply = await self.request(
            "POST",
            self._url,
            endpoint="POST",
            excerpt_only=True,
            data=event.body,
            headers=headers,
        )
        return classify.classify(
            reply.status,
            body=reply.raw.decode("utf-8", "replace"),
            retry_after=reply.headers.get("Retry-After"),
        )

"""Signed webhooks per Standard Webhooks: one event per POST, ``webhook-id`` stable on retries.

Config (``type = "webhook"``): ``url``, ``secret`` (``whsec_`` + base64 of 24-64 random bytes),
``events`` (default: all), ``headers`` (extra request headers), ``timeout_seconds``,
``max_concurrency``. Redirects are not followed: only a 2xx answer counts as delivered.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import aiohttp
import pydantic
from pydantic import SecretStr
from standardwebhooks import webhooks

from bridge import connector


class WebhookConfig(connector.ConnectorConfig):
    """Settings of a webhook connector."""

    type: str = "webhook"
    url: pydantic.AnyHttpUrl
    secret: SecretStr
    headers: dict[str, str] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("secret")
    @classmethod
    def _valid_secret(cls, value: SecretStr) -> SecretStr:
        try:
            webhooks.Webhook(value.get_secret_value())
        except Exception:
            raise ValueError(
                "must be a Standard Webhooks secret: whsec_ followed by base64"
            ) from None
        return value


class WebhookConnector(connector.Connector):
    """POSTs each event, signed, to one HTTPS endpoint."""

    Config = WebhookConfig
    max_batch = 1

    def __init__(self, config: connector.ConnectorConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        assert isinstance(config, WebhookConfig)
        self.settings = config
        self._signer = webhooks.Webhook(config.secret.get_secret_value())
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)

    async def check(self) -> None:
        """Webhook endpoints have no credential to verify; nothing to check."""

    async def _send(self, chunk: Sequence[connector.Event]) -> list[connector.Outcome]:
        return [await self._post(event) for event in chunk]

    async def _post(self, event: connector.Event) -> connector.Outcome:
        now = datetime.datetime.now(tz=datetime.UTC)
        body = event.body.decode()
        headers = {
            **self.settings.headers,
            "content-type": "application/json",
            "webhook-id": event.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(event.message_id, now, body),
        }
        async with self.session.post(
            str(self.settings.url),
            data=event.body,
            headers=headers,
            timeout=self._timeout,
            allow_redirects=False,
        ) as response:
            return await connector.classify_response(response)

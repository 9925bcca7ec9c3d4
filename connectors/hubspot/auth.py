"""HubSpot auth, both directions: webhook signatures in; tokens, budget and calls out."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from bridge import classify, connector, errors, ratelimit
from bridge.classify import Outcome
from bridge.connector import HookError, HookRequest
from connectors import crm
from connectors.hubspot.config import HubSpotConfig

logger = logging.getLogger(__name__)

LOCKED_MIN_DELAY_S = 2.0  # 423: "the lock lasts 2 s"
DAILY_LIMIT_DELAY_S = 3600.0  # 429 DAILY: the budget comes back at midnight in the portal's zone

# v3 signing decodes exactly these escapes in the URI, and no others.
_V3_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_V3_ESCAPES = re.compile("|".join(_V3_DECODED), re.IGNORECASE)
UUID4 = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE
)


def v3_uri(uri: str) -> str:
    """The URI as HubSpot's v3 signature covers it: only the documented escapes decoded."""
    return _V3_ESCAPES.sub(lambda m: _V3_DECODED[m.group(0).upper()], uri)


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of method + URI + body + timestamp."""
    # The URI holds the Host header and path as received, bytes that are not text included.
    message = method.encode() + connector.wire_bytes(v3_uri(uri)) + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature_v1(secret: str, body: bytes) -> str:
    """``X-HubSpot-Signature`` v1: SHA-256 hex of secret + body (app webhooks)."""
    return hashlib.sha256(secret.encode() + body).hexdigest()


def signature_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    """``X-HubSpot-Signature`` v2: SHA-256 hex of secret + method + URI + body (workflows)."""
    signed = secret.encode() + method.encode() + connector.wire_bytes(uri) + body
    return hashlib.sha256(signed).hexdigest()


def _same(given: str, expected: str) -> bool:
    return connector.same_secret(given.strip(), expected)


def bad_signature(version: str, request: HookRequest) -> str:
    """Why a signature was refused, with the URL it was checked against."""
    return (
        f"{version} signature does not match (checked against {request.url};"
        " behind a proxy set server.public_url to the URL HubSpot calls)"
    )


@dataclasses.dataclass(slots=True)
class Answer(crm.Answer):
    """A HubSpot response, read whole: status, decoded JSON body (or ``None``), headers."""

    def message(self) -> str:
        """HubSpot's own words: ``CATEGORY: message`` when the body has them."""
        if isinstance(self.body, dict):
            category = self.body.get("category") or self.body.get("policyName") or ""
            text = str(self.body.get("message") or "")[: classify.ERROR_EXCERPT_CHARS]
            if text:
                return f"{category}: {text}" if category else text
        return ""


class Api(crm.CrmConnector[HubSpotConfig, str, Answer]):
    """HubSpot's side shared by both directions: signatures, tokens, the request budget.

    Every request (reads, writes, lookups, token refreshes) goes through one rolling budget.
    """

    Config = HubSpotConfig

    def __init__(
        self,
        config: connector.ConnectorConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, session, clock=clock)
        settings = self.settings
        self.budget = ratelimit.RollingWindow(
            settings.rate_limit_requests, settings.rate_limit_window_seconds
        )
        self._token: str | None = (
            settings.access_token.get_secret_value() if settings.access_token else None
        )
        # A private-app token never expires; an OAuth one is fetched before the first request.
        self._token_expires_at = float("inf") if self._token else float("-inf")
        self._refresh_lock = asyncio.Lock()

    def verify_hook(self, request: HookRequest) -> None:
        """Check the v3 signature (or v1/v2 when allowed) against the app's client secret."""
        if self.settings.client_secret is None:
            raise HookError(
                401, "unauthorized", f"connector {self.name} has no client_secret to verify with"
            )
        secret = self.settings.client_secret.get_secret_value()
        headers = request.headers
        v3 = headers.get("X-HubSpot-Signature-v3")
        if v3 is not None:
            stamp = headers.get("X-HubSpot-Request-Timestamp", "").strip()
            if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 16):
                raise HookError(
                    401, "unauthorized", "missing or invalid X-HubSpot-Request-Timestamp"
                )
            skew_s = abs(request.now * 1000 - int(stamp)) / 1000
            if skew_s > self.settings.signature_max_age_seconds:
                raise HookError(
                    401,
                    "unauthorized",
                    f"X-HubSpot-Request-Timestamp is {skew_s:.0f} s from now"
                    f" (at most {self.settings.signature_max_age_seconds:.0f} s allowed)",
                )
            expected = signature_v3(secret, request.method, request.url, request.body, stamp)
            if not _same(v3, expected):
                raise HookError(401, "unauthorized", bad_signature("v3", request))
            self._verify_portal(request)
            return
        legacy = headers.get("X-HubSpot-Signature")
        if legacy is None or not self.settings.legacy_signatures:
            raise HookError(401, "unauthorized", "missing X-HubSpot-Signature-v3 header")
        version = headers.get("X-HubSpot-Signature-Version", "v1").strip().lower()
        if version == "v1":
            expected = signature_v1(secret, request.body)
        elif version == "v2":
            expected = signature_v2(secret, request.method, request.url, request.body)
        else:
            raise HookError(401, "unauthorized", f"unknown signature version {version[:10]!r}")
        if not _same(legacy.lower(), expected):
            raise HookError(401, "unauthorized", bad_signature(version, request))
        self._verify_portal(request)

    def _verify_portal(self, request: HookRequest) -> None:
        """With ``portal_id`` set, the events must be that account's.

        Several connectors (one per HubSpot account) can share one public app, and so its
        secret and its webhook URL: a batch of another account is refused here, so the next
        connector can take it, instead of being acknowledged and dropped.
        """
        wanted = self.settings.portal_id
        if wanted is None:
            return
        try:
            payload = request.json()
        except HookError:
            return  # parse_hook answers malformed bodies
        events = payload if isinstance(payload, list) else [payload]
        portals = {e.get("portalId", e.get("portal-id")) for e in events if isinstance(e, dict)}
        portals.discard(None)
        if portals - {wanted}:
            others = ", ".join(sorted(str(p) for p in portals - {wanted}))
            raise HookError(401, "unauthorized", f"events of portal {others}, not {wanted}")

    async def _read(
        self, object_type: str, ids: Sequence[str], properties: Sequence[str]
    ) -> dict[str, dict[str, Any]] | Outcome:
        """Current properties of up to 100 records; missing records are left out."""
        answer = await self.call(
            "POST",
            f"/crm/v3/objects/{object_type}/batch/read",
            {"properties": list(properties), "inputs": [{"id": i} for i in ids]},
        )
        if answer.status not in (200, 207) or not isinstance(answer.body, dict):
            return self.failure(answer)
        found = {}
        for result in answer.body.get("results") or []:
            if isinstance(result, dict) and "id" in result:
                found[str(result["id"])] = result.get("properties") or {}
        return found

    async def call(self, method: str, path: str, body: Any = None) -> Answer:
        """One request within the budget, authorised; a 401 refreshes an OAuth token once.

        Raises:
            aiohttp.ClientError, TimeoutError: the request did not complete.
        """
        answer = await super().call(method, path, body)
        if answer.status == 429:
            self._throttled(answer)
        return answer

    async def login(self) -> str:
        """The access token, refreshed first when an OAuth one is about to expire."""
        return await self._access_token()

    async def log_in_again(self, stale: str) -> str:
        """A fresh OAuth access token after HubSpot refused ``stale``."""
        await self._refresh(stale=True)
        return await self._access_token()

    def login_stale(self, answer: Answer) -> bool:
        """A 401 with OAuth set up: the token was revoked or expired early."""
        return answer.status == 401 and self.settings.refresh_token is not None

    async def send_call(self, method: str, path: str, body: Any, login: str) -> Answer:
        """One request within the budget (the slot is held until the answer is read)."""
        async with self.budget.slot():  # see ratelimit
            reply = await self.request(
                method,
                self.settings.base_url + path,
                endpoint=f"{method} {path}",
                json=body,
                headers={"Authorization": f"Bearer {login}"},
            )
        return Answer.of(reply)

    def rule_for(self, answer: Answer, reason: str) -> classify.Rule | None:
        """HubSpot's 401 (the token), 423 (a record lock), daily 429 and 477 (migrating)."""
        status = answer.status
        if status == 401:
            return classify.Rule(
                error=f"HubSpot rejected the token: {reason}",
                fixed_s=classify.THROTTLE_MIN_DELAY_S,
            )
        if status == 423:
            return classify.Rule(floor_s=LOCKED_MIN_DELAY_S)
        daily = isinstance(answer.body, dict) and answer.body.get("policyName") == "DAILY"
        if status == 429 and daily:
            return classify.Rule(fixed_s=DAILY_LIMIT_DELAY_S)
        if status == 477:
            return classify.Rule(default_s=classify.THROTTLE_MIN_DELAY_S)
        return super().rule_for(answer, reason)

    def _throttled(self, answer: Answer) -> None:
        """Hold every request of this connector for one window.

        A longer ``Retry-After`` is honoured by rescheduling the deliveries concerned, not by
        sleeping here: a delivery run must not stall for minutes inside one connector.
        """
        self.budget.pause(self.settings.rate_limit_window_seconds)
        logger.warning(
            "HubSpot rate limit reached: %s",
            answer.message() or "429",
            extra={"event": "hubspot.throttled", "connector": self.name},
        )

    async def _access_token(self) -> str:
        if self._token is None or self.clock() >= self._token_expires_at:
            await self._refresh(stale=False)
        assert self._token is not None
        return self._token

    async def _refresh(self, *, stale: bool) -> None:
        """Get a new OAuth access token (once, however many requests wait for it)."""
        settings = self.settings
        if settings.refresh_token is None or settings.client_secret is None:
            return
        seen = self._token
        async with self._refresh_lock:
            if self._token != seen or (not stale and self.clock() < self._token_expires_at):
                return  # another caller refreshed meanwhile
            form = {
                "grant_type": "refresh_token",
                "refresh_token": settings.refresh_token.get_secret_value(),
                "client_id": settings.client_id,
                "client_secret": settings.client_secret.get_secret_value(),
            }
            try:
                async with self.budget.slot():
                    reply = await self.request(
                        "POST",
                        settings.base_url + "/oauth/v1/token",
                        endpoint="POST /oauth/v1/token",
                        data=form,
                        allow_redirects=True,
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise errors.ConnectorError(
                    f"connector {self.name}: HubSpot's token endpoint failed: {exc!r}"
                ) from exc
            raw, status = reply.raw, reply.status
            text = raw.decode("utf-8", "replace")[: classify.ERROR_EXCERPT_CHARS]
            if 400 <= status < 500:
                raise errors.ConnectorError(
                    f"connector {self.name}: HubSpot refused the refresh token"
                    f" (HTTP {status}: {text}); authorise the app again"
                )
            try:
                granted: Any = crm.decode(raw) if status == 200 else None
                token = str(granted["access_token"])
                lifetime = float(granted.get("expires_in", 1800))
            except (ValueError, TypeError, KeyError):
                raise errors.ConnectorError(
                    f"connector {self.name}: HubSpot's token endpoint answered HTTP {status}"
                    f" without a token: {text}"
                ) from None
            self._token = token
            self._token_expires_at = self.clock() + max(
                lifetime - settings.token_refresh_margin_seconds, lifetime / 2
            )

    # -- check-config --online ------------------------------------------------------------

    async def check(self) -> None:
        """The token works and every mapped property (the Lance-id one and, for contacts, the
        ones matching reads) exists."""
        for object_type, settings in self.settings.objects().items():
            answer = await self.call("GET", f"/crm/v3/properties/{object_type}")
            if answer.status != 200 or not isinstance(answer.body, dict):
                raise errors.ConnectorError(
                    f"reading {object_type} properties: HTTP {answer.status} {answer.message()}"
                )
            names = {p.get("name") for p in answer.body.get("results") or [] if isinstance(p, dict)}
            mapped = [settings.lance_id_property, *settings.writable()]
            if object_type == "contacts":
                # The properties a contact without a Lance id is matched by must exist too.
                mapped += self.settings.contacts.match_properties()
            missing = [name for name in mapped if name not in names]
            if missing:
                raise errors.ConnectorError(
                    f"{object_type}: HubSpot has no propert{'y' if len(missing) == 1 else 'ies'}"
                    f" {', '.join(missing)}; create {'it' if len(missing) == 1 else 'them'}"
                    " (Settings → Properties) or change the mapping"
                )

"""Salesforce auth and API usage: the login, authorised REST calls, the daily cap.

OAuth 2.0 client credentials or JWT bearer; the token is cached with its ``instance_url`` and
fetched again once on ``INVALID_SESSION_ID``. ``Sforce-Limit-Info`` is tracked, and
Salesforce's refusals are classified here (:meth:`Api.rule_for`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from bridge import classify, connector, errors
from bridge.classify import Outcome
from connectors import crm
from connectors.salesforce.config import SalesforceConfig

logger = logging.getLogger(__name__)

JWT_LIFETIME_S = 180  # Salesforce refuses an "exp" more than 3 minutes ahead
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a path, not a secret
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LIMIT_HEADER = "Sforce-Limit-Info"
# The Sforce-Limit-Info segments that count toward a cap Salesforce enforces with 403s.
DAILY_CAPS = ("api-usage", "per-app-api-usage")

# Token endpoint error descriptions and what the administrator should do about them.
_TOKEN_HINTS = (
    (
        "hasn't approved this consumer",
        "pre-authorise the integration user: in the app's OAuth policies choose 'Admin approved"
        " users are pre-authorized' and add the user's profile or permission set",
    ),
    (
        "audience is invalid",
        "set audience to https://login.salesforce.com (production) or"
        " https://test.salesforce.com (sandbox)",
    ),
    (
        "invalid assertion",
        "check client_id (the consumer key), username, and that private_key_file matches the"
        " certificate uploaded to the app",
    ),
    ("expired authorization code", "the JWT had expired on arrival: check this machine's clock"),
    (
        "invalid client credentials",
        "check client_id (the consumer key) and client_secret (the consumer secret)",
    ),
    ("client identifier invalid", "check client_id: the consumer key of the app"),
    (
        "not supported on this domain",
        "client credentials need login_url set to the org's My Domain URL"
        " (https://<domain>.my.salesforce.com)",
    ),
    (
        "no client credentials user enabled",
        "choose a Run As user in the app's client credentials flow settings",
    ),
    ("grant type not supported", "enable this OAuth flow in the app's settings"),
)
_LIMIT_SEGMENT = re.compile(r"^\s*([A-Za-z][\w.-]*)\s*=\s*(\d+)\s*/\s*(\d+)")


def parse_limit_info(value: str | None) -> dict[str, tuple[int, int]]:
    """``Sforce-Limit-Info`` as ``{segment: (used, limit)}``; unreadable segments are skipped.

    ``"api-usage=10018/100000; per-app-api-usage=17/250(appName=app)"`` gives
    ``{"api-usage": (10018, 100000), "per-app-api-usage": (17, 250)}``.
    """
    found: dict[str, tuple[int, int]] = {}
    for segment in re.split(r"[;,]", value or ""):
        match = _LIMIT_SEGMENT.match(segment)
        if match:
            found[match[1].lower()] = (int(match[2]), int(match[3]))
    return found


class AuthError(errors.ConnectorError):
    """No access token: credentials missing, refused, or the token endpoint failed."""


@dataclasses.dataclass(slots=True)
class Answer(crm.Answer):
    """A Salesforce REST response, read whole: status, decoded JSON body, headers."""

    def error_code(self) -> str:
        """``errorCode`` of the first element of an error array, else ``""``."""
        first = self.body[0] if isinstance(self.body, list) and self.body else None
        return str(first.get("errorCode") or "") if isinstance(first, dict) else ""

    def message(self) -> str:
        """Salesforce's own words: ``errorCode: message`` of the first error."""
        first = self.body[0] if isinstance(self.body, list) and self.body else None
        if not isinstance(first, dict):
            return ""
        text = str(first.get("message") or "")[: classify.ERROR_EXCERPT_CHARS]
        code = self.error_code()
        return f"{code}: {text}" if code and text else code or text


class Api(crm.CrmConnector[SalesforceConfig, tuple[str, str], Answer]):
    """Salesforce's side shared by both directions: the login, REST calls, the daily cap.

    Attributes:
        limits: The last ``Sforce-Limit-Info`` values, ``{segment: (used, limit)}``.
        requests: REST requests sent; ``token_requests``: token requests sent.
    """

    Config = SalesforceConfig

    def __init__(
        self,
        config: connector.ConnectorConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, session, clock=clock)
        self.limits: dict[str, tuple[int, int]] = {}
        self.requests = 0
        self.token_requests = 0
        self._limits_seen_at = float("-inf")
        self._slowing = False
        self._login: tuple[str, str] | None = None  # (access token, instance_url)
        self._login_lock = asyncio.Lock()
        self._private_key: bytes | None = None

    def rule_for(self, answer: Answer, reason: str) -> classify.Rule | None:
        """Salesforce's 410 (a retired API version), 403 throttling and 401 after a new login."""
        status = answer.status
        if status == 410:
            return classify.Rule("dead", error=self._retired())
        if status == 403 and answer.error_code() == "REQUEST_LIMIT_EXCEEDED":
            return classify.Rule(
                error=f"{reason} ({self.usage()}); throttled",
                floor_s=classify.THROTTLE_MIN_DELAY_S,
            )
        if status == 401:
            return classify.Rule(
                error=f"Salesforce refused a fresh session too: {reason}",
                fixed_s=classify.THROTTLE_MIN_DELAY_S,
            )
        return super().rule_for(answer, reason)

    def _retired(self) -> str:
        return (
            f"Salesforce retired API version {self.settings.api_version} (HTTP 410);"
            f" set api_version of connector {self.name} to a supported one, e.g. 66.0"
        )

    # -- API usage ------------------------------------------------------------------------

    def usage(self) -> str:
        """The last daily API usage Salesforce reported, e.g. ``api-usage 950/1000``."""
        shown = [
            f"{name} {used}/{cap}"
            for name, (used, cap) in self.limits.items()
            if name in DAILY_CAPS
        ]
        return ", ".join(shown) or "API usage not reported yet"

    def _observe(self, header: str | None) -> None:
        found = parse_limit_info(header)
        if found:
            self.limits.update(found)
            self._limits_seen_at = self.clock()

    def _slow_down(self) -> Outcome | None:
        """A deferral while the last reported usage is past ``slow_down_at`` of a daily cap.

        The reading is trusted for ``slow_down_delay_seconds``; after that one request goes
        through to refresh it, so a cap that has cleared is noticed.
        """
        settings = self.settings
        used = max(
            (u / cap for name, (u, cap) in self.limits.items() if name in DAILY_CAPS and cap > 0),
            default=0.0,
        )
        fresh = self.clock() - self._limits_seen_at < settings.slow_down_delay_seconds
        if used < settings.slow_down_at or not fresh:
            self._slowing = False
            return None
        if not self._slowing:  # once per episode, not once per deferred chunk
            self._slowing = True
            logger.warning(
                "Salesforce %s is past slow_down_at: deliveries wait",
                self.usage(),
                extra={"event": "salesforce.slow_down", "connector": self.name},
            )
        return Outcome(
            "retry",
            None,
            f"Salesforce {self.usage()} is past slow_down_at ({settings.slow_down_at:.0%});"
            " deliveries wait so the rest of the daily cap stays for other integrations",
            max(settings.slow_down_delay_seconds, classify.THROTTLE_MIN_DELAY_S),
        )

    # -- HTTP -----------------------------------------------------------------------------

    async def login(self) -> tuple[str, str]:
        """The access token and instance URL, logging in first when there is none.

        Raises:
            AuthError: no token could be obtained.
        """
        login = self._login
        return login if login is not None else await self._log_in(stale=None)

    async def log_in_again(self, stale: tuple[str, str]) -> tuple[str, str]:
        """A new login after Salesforce refused ``stale``."""
        return await self._log_in(stale=stale)

    def login_stale(self, answer: Answer) -> bool:
        """Only ``INVALID_SESSION_ID`` logs in again.

        A 403 ``REQUEST_LIMIT_EXCEEDED`` is throttling and is answered as it is.
        """
        return answer.status == 401 and answer.error_code() == "INVALID_SESSION_ID"

    async def send_call(self, method: str, path: str, body: Any, login: tuple[str, str]) -> Answer:
        """One REST request under ``/services/data/v{api_version}``."""
        token, instance_url = login
        self.requests += 1
        reply = await self.request(
            method,
            f"{instance_url}/services/data/v{self.settings.api_version}{path}",
            endpoint=f"{method} {path}",
            json=body,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        self._observe(reply.headers.get(LIMIT_HEADER))
        return Answer.of(reply)

    async def _log_in(self, *, stale: tuple[str, str] | None) -> tuple[str, str]:
        """A new access token and instance URL (once, however many requests wait for it)."""
        async with self._login_lock:
            if self._login is not None and self._login != stale:
                return self._login  # another request logged in meanwhile
            self._login = await self._grant()
            logger.info(
                "Salesforce access token obtained",
                extra={"event": "salesforce.login", "connector": self.name},
            )
            return self._login

    async def _grant(self) -> tuple[str, str]:
        form = self._grant_form()
        self.token_requests += 1
        reply = await self.request(
            "POST", self.settings.login_url + TOKEN_PATH, endpoint="POST " + TOKEN_PATH, data=form
        )
        status, body = reply.status, crm.decode(reply.raw)
        if status == 200 and isinstance(body, dict):
            token, instance_url = body.get("access_token"), body.get("instance_url")
            usable = isinstance(instance_url, str) and re.match(r"^https?://[^/\s]+", instance_url)
            if isinstance(token, str) and token and usable:
                return token, str(instance_url).rstrip("/")
        raise AuthError(self._refusal(status, body))

    def _grant_form(self) -> dict[str, str]:
        settings = self.settings
        if settings.auth == "jwt_bearer":
            return {"grant_type": JWT_GRANT, "assertion": self._assertion()}
        if settings.client_secret is None:
            variable = (
                f"LANCE_BRIDGE_CONNECTORS__{self.name.upper().replace('-', '_')}__CLIENT_SECRET"
            )
            raise AuthError(f"connector {self.name}: client_secret is not set; set {variable}")
        return {
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret.get_secret_value(),
        }

    def _assertion(self) -> str:
        """A JWT bearer assertion signed with the private key (RS256), valid for 3 minutes."""
        settings = self.settings
        path = settings.private_key_file
        assert path is not None  # the config requires it for jwt_bearer
        if self._private_key is None:
            try:
                self._private_key = path.read_bytes()
            except OSError as exc:
                raise AuthError(f"private_key_file {path}: cannot read: {exc.strerror}") from None
        claims = {
            "iss": settings.client_id,
            "sub": settings.username,
            "aud": settings.audience or _audience(settings.login_url),
            "exp": int(self.clock()) + JWT_LIFETIME_S,
        }
        try:
            return jwt.encode(claims, self._private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            self._private_key = None
            raise AuthError(
                f"private_key_file {path}: not an RSA private key in PEM format"
            ) from None

    def _refusal(self, status: int, body: Any) -> str:
        """What went wrong at the token endpoint, in Salesforce's words, with a hint."""
        error = description = ""
        if isinstance(body, dict):
            error = str(body.get("error") or "")
            description = str(body.get("error_description") or "")[: classify.ERROR_EXCERPT_CHARS]
        said = ": ".join(part for part in (error, description) if part) or "no error given"
        hint = next((h for text, h in _TOKEN_HINTS if text in description.lower()), "")
        return (
            f"connector {self.name}: Salesforce refused the {self.settings.auth} token request"
            f" at {self.settings.login_url} (HTTP {status} {said})" + (f"; {hint}" if hint else "")
        )


def _audience(login_url: str) -> str:
    """The JWT ``aud`` Salesforce expects: the login host, never a My Domain URL.

    Sandbox orgs (``test.salesforce.com``, ``*.sandbox.my.salesforce.com``) use the test host.
    """
    host = urllib.parse.urlsplit(login_url).hostname or ""
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return "https://test.salesforce.com"
    return "https://login.salesforce.com"

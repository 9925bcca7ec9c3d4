"""Who may call a HubSpot account, and how often: OAuth tokens and the rolling rate limit."""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from collections.abc import Callable, Mapping

from bridge.sim.hubspot.errors import NO_CREDENTIALS, ApiError, oauth_error, rate_limit_body
from bridge.sim.hubspot.schema import iso


class Access:
    """The access side of :class:`~bridge.sim.hubspot.state.HubSpotSandbox`, which sets these
    attributes (see its docstring)."""

    clock: Callable[[], float]
    client_id: str
    token_lifetime_s: float
    rate_limit: int
    rate_window_s: float
    _private_tokens: frozenset[str]
    _client_secret: str
    _refresh_tokens: frozenset[str]
    _access_tokens: dict[str, float]
    _windows: dict[str, deque[float]]

    def expire_tokens(self) -> int:
        """Make every issued OAuth access token expired now; returns how many there are."""
        now = self.clock()
        for token, expires_at in self._access_tokens.items():
            self._access_tokens[token] = min(expires_at, now)
        return len(self._access_tokens)

    def _authenticate(self, token: str | None) -> None:
        if token in self._private_tokens:
            return
        expires_at = None if token is None else self._access_tokens.get(token)
        if expires_at is None:
            raise ApiError(401, "INVALID_AUTHENTICATION", NO_CREDENTIALS)
        now = self.clock()
        if now >= expires_at:
            ago = int(now - expires_at)
            raise ApiError(
                401,
                "EXPIRED_AUTHENTICATION",
                f"The OAuth token used to make this call expired {ago} second(s) ago.",
                context={"expire time": [iso(expires_at)]},
            )

    def _rate_headers(self, remaining: int) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.rate_window_s * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.rate_limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
        }

    def _admit(self, token: str) -> dict[str, str]:
        """Count one arriving request in its window; returns the rate-limit headers.

        HubSpot's burst limit is per private app and, for OAuth, per installing account: a
        refreshed access token does not start a new window. A request arriving at ``now`` is
        refused while ``rate_limit`` others arrived in ``(now - rate_window_s, now]``.

        Raises:
            ApiError: 429 once the window is full; refused requests do not fill it.
        """
        if self.rate_limit <= 0:
            return {}
        now = self.clock()
        account = token if token in self._private_tokens else "oauth"
        window = self._windows.setdefault(account, deque())
        while window and window[0] <= now - self.rate_window_s:
            window.popleft()
        if len(window) >= self.rate_limit:
            raise ApiError(
                429, "RATE_LIMIT", "", headers=self._rate_headers(0), raw=rate_limit_body()
            )
        window.append(now)
        return self._rate_headers(self.rate_limit - len(window))

    def _refresh(self, form: Mapping[str, str]) -> dict[str, object]:
        secret = form.get("client_secret", "").encode()
        if form.get("client_id") != self.client_id or not hmac.compare_digest(
            secret, self._client_secret.encode()
        ):
            raise oauth_error("BAD_CLIENT_ID", "missing or unknown client id or client secret")
        if form.get("grant_type") != "refresh_token":
            raise oauth_error("BAD_GRANT_TYPE", "grant_type must be refresh_token")
        refresh = form.get("refresh_token", "")
        if refresh not in self._refresh_tokens:
            raise oauth_error("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        access = secrets.token_urlsafe(75)  # 100 characters, like HubSpot's
        self._access_tokens[access] = self.clock() + self.token_lifetime_s
        return {
            "token_type": "bearer",
            "refresh_token": refresh,
            "access_token": access,
            "expires_in": int(self.token_lifetime_s),
        }

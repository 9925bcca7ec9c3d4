"""The org's OAuth side: the token grants, session checks and token signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from bridge.sim import _http
from bridge.sim.salesforce.errors import OAuthError, RestError

JWT_MAX_AHEAD_S = 180  # "exp" at most 3 minutes ahead
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


def token_signature(client_secret: str, identity_url: str, issued_at: str) -> str:
    """``signature`` of a token answer: base64(HMAC-SHA256(client_secret, id + issued_at))."""
    mac = hmac.new(client_secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class OAuth:
    """The OAuth side of :class:`~bridge.sim.salesforce.state.SalesforceSandbox`, which sets
    these attributes (see its docstring)."""

    clock: Callable[[], float]
    org_id: str
    user_id: str
    client_id: str
    jwt_username: str
    session_lifetime_s: float
    _client_secret: str
    _jwt_key: bytes | None
    _sessions: dict[str, float]
    _refresh_tokens: set[str]

    def expire_sessions(self) -> None:
        """Invalidate every access token issued so far."""
        self._sessions.clear()

    def issue_refresh_token(self) -> str:
        """A refresh token (as the web-server flow would issue) for the ``refresh_token`` grant."""
        token = f"5Aep861{secrets.token_urlsafe(40)}"
        self._refresh_tokens.add(token)
        return token

    def grant(
        self, form: Mapping[str, str], authorization: str | None, origin: str
    ) -> dict[str, str]:
        """Answer a token request: the token body, or raise :class:`OAuthError`.

        Args:
            form: The decoded form fields.
            authorization: The ``Authorization`` header, if any (HTTP Basic client auth).
            origin: ``scheme://host`` the request came to: the ``instance_url`` to return.
        """
        grant_type = form.get("grant_type", "")
        if grant_type == "client_credentials":
            self._check_client(*_client_auth(form, authorization), secret_required=True)
        elif grant_type == JWT_GRANT:
            self._check_assertion(form.get("assertion", ""), origin)
        elif grant_type == "refresh_token":
            self._check_client(*_client_auth(form, authorization), secret_required=False)
            if form.get("refresh_token") not in self._refresh_tokens:
                raise OAuthError("invalid_grant", "expired access/refresh token")
        else:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        return self._token_body(origin)

    def _check_client(
        self, client_id: str | None, client_secret: str | None, *, secret_required: bool
    ) -> None:
        id_ok = client_id is not None and hmac.compare_digest(client_id, self.client_id)
        secret_ok = (client_secret is None and not secret_required) or (
            client_secret is not None and hmac.compare_digest(client_secret, self._client_secret)
        )
        if not (id_ok and secret_ok):
            raise OAuthError("invalid_client", "invalid client credentials")

    def _check_assertion(self, assertion: str, origin: str) -> None:
        claims = self._verified_claims(assertion)
        if claims["iss"] != self.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        allowed = {*LOGIN_AUDIENCES, origin}
        if not any(isinstance(a, str) and a.rstrip("/") in allowed for a in audiences):
            raise OAuthError("invalid_grant", "audience is invalid")
        if claims["sub"] != self.jwt_username:
            raise OAuthError("invalid_grant", "invalid assertion")
        expires, now = claims["exp"], self.clock()
        if not isinstance(expires, int | float) or expires > now + JWT_MAX_AHEAD_S:
            raise OAuthError("invalid_grant", "invalid assertion")
        if expires <= now:
            raise OAuthError("invalid_grant", "expired authorization code")

    def _verified_claims(self, assertion: str) -> dict[str, Any]:
        if self._jwt_key is None or not assertion:
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            # Time claims are checked against the injected clock, audience and issuer by hand.
            return jwt.decode(
                assertion,
                self._jwt_key,
                algorithms=["RS256"],
                options={
                    "require": ["iss", "sub", "aud", "exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc

    def _token_body(self, origin: str) -> dict[str, str]:
        now = self.clock()
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
        self._sessions[token] = now
        issued_at = str(int(now * 1000))
        identity = f"https://login.salesforce.com/id/{self.org_id}/{self.user_id}"
        return {
            "access_token": token,
            "signature": token_signature(self._client_secret, identity, issued_at),
            "scope": "api",
            "instance_url": origin,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }

    def _authenticate(self, authorization: str) -> None:
        scheme, token = _http.split_authorization(authorization)
        last_use = self._sessions.get(token) if scheme in ("bearer", "oauth") else None
        now = self.clock()
        if last_use is None or now - last_use >= self.session_lifetime_s:
            self._sessions.pop(token, None)
            raise RestError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        self._sessions[token] = now  # the timeout counts inactivity


def _client_auth(
    form: Mapping[str, str], authorization: str | None
) -> tuple[str | None, str | None]:
    """``(client_id, client_secret)`` from HTTP Basic if present, else from the form."""
    scheme, encoded = _http.split_authorization(authorization)
    if scheme != "basic":
        return form.get("client_id"), form.get("client_secret")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret

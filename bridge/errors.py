"""The exception hierarchy: every error the bridge raises derives from :class:`BridgeError`.

Driver errors (sqlite3, aiohttp) are translated at exactly one seam each — the ledger and the
HTTP clients — with the original exception chained as ``__cause__``.
"""

from __future__ import annotations


class BridgeError(Exception):
    """lance-bridge failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0])


class ConfigError(BridgeError):
    """The configuration is invalid."""


class LedgerError(BridgeError):
    """The ledger could not be read or written."""


class LedgerLockedError(LedgerError):
    """Another lance-bridge process already has this ledger open."""


class LedgerUnavailableError(LedgerError):
    """The ledger cannot store work right now (disk full, I/O error, corrupt file)."""


class LedgerLostError(LedgerUnavailableError):
    """The ledger file was deleted or replaced while open; restart to open the file at the path."""


class LedgerTooNewError(LedgerError):
    """The ledger was written by a newer lance-bridge; upgrade before opening it."""


class LanceError(BridgeError):
    """A request to the Lance API failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


class LanceRetryableError(LanceError):
    """Lance is unavailable or throttling; the request may succeed later."""


class LanceAuthError(LanceError):
    """Lance token rejected: set a valid token in lance.token (LANCE_BRIDGE_LANCE__TOKEN)."""


class LanceCreditsError(LanceError):
    """Lance reports insufficient credits: top up the organization's balance."""


class LancePermanentError(LanceError):
    """Lance rejected the request; repeating it will not help."""


class ConnectorError(BridgeError):
    """A connector could not be built or opened."""

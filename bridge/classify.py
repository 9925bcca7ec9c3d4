"""What is worth retrying, and when: one classifier for every remote the bridge talks to.

A status or a transport error becomes an :class:`Outcome`: delivered, retry (not before
``retry_after_s`` when set) or dead. The generic HTTP meaning is written once in
:func:`decide`; a remote that answers some status in its own way (HubSpot's 423 lock, a
Salesforce 403 that is throttling) says so with a :class:`Rule`, as data, not with its own
copy of the classifier.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import time
from typing import Literal

import aiohttp

# Throttling answers and timeouts are never retried sooner than this (DESIGN §8).
THROTTLE_MIN_DELAY_S = 60.0
# A remote asking for more than a day is capped: work must not be parked forever.
MAX_RETRY_AFTER_S = 86_400.0
ERROR_EXCERPT_CHARS = 300

Kind = Literal["delivered", "retry", "dead"]


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one event.

    ``delivered``: acknowledged. ``retry``: a transient failure; try again, not before
    ``retry_after_s`` when set. ``dead``: a permanent failure; retrying cannot help.
    """

    kind: Kind
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @classmethod
    def delivered(cls, status: int | None = None) -> Outcome:
        """An acknowledged delivery."""
        return cls("delivered", status)


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """How one remote means a status differently from plain HTTP.

    Attributes:
        kind: ``retry`` or ``dead``.
        error: The error to record instead of the generic ``HTTP <status> ...`` reason.
        fixed_s: Wait exactly this long, whatever ``Retry-After`` says.
        default_s: Wait this long when ``Retry-After`` gives no (or a zero) delay.
        floor_s: Never retry sooner than this.
        honour_header: Whether ``Retry-After`` counts at all.
    """

    kind: Literal["retry", "dead"] = "retry"
    error: str | None = None
    fixed_s: float | None = None
    default_s: float | None = None
    floor_s: float | None = None
    honour_header: bool = True

    def wait_s(self, retry_after_s: float | None) -> float | None:
        """The delay before a retry, from the remote's ``Retry-After`` (seconds)."""
        if self.kind == "dead":
            return None
        wait = self.fixed_s
        if wait is None and self.honour_header:
            wait = retry_after_s
        if self.default_s is not None:
            wait = wait or self.default_s
        if self.floor_s is not None:
            wait = max(wait or 0.0, self.floor_s)
        return wait


def retryable(status: int) -> bool:
    """Whether an HTTP error status is transient: 408, 425, 429 and every 5xx."""
    return status in (408, 425, 429) or status >= 500


def decide(
    status: int, reason: str, retry_after_s: float | None, rule: Rule | None = None
) -> Outcome:
    """The outcome of an HTTP answer with ``status``; ``reason`` is the error it records.

    2xx is delivered; 429 is retried not sooner than a minute, 408, 425 and 5xx when
    ``Retry-After`` says; every other answer, redirects included, is permanent. A ``rule``
    replaces this for the one status it was chosen for.
    """
    if rule is not None:
        return Outcome(rule.kind, status, rule.error or reason, rule.wait_s(retry_after_s))
    if 200 <= status < 300:
        return Outcome.delivered(status)
    if status == 429:
        return Outcome("retry", status, reason, max(retry_after_s or 0.0, THROTTLE_MIN_DELAY_S))
    if retryable(status):
        return Outcome("retry", status, reason, retry_after_s)
    return Outcome("dead", status, reason)


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # delay-seconds is 1*DIGIT (RFC 9110)
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    wait_s = when.timestamp() - (time.time() if now_s is None else now_s)
    return min(max(0.0, wait_s), MAX_RETRY_AFTER_S)


def classify(
    status: int | None = None,
    *,
    error: BaseException | None = None,
    body: str = "",
    retry_after: str | None = None,
) -> Outcome:
    """Turn an HTTP status or a transport exception into an :class:`Outcome`.

    This is the single place that decides what is worth retrying: 2xx is delivered; 408, 425,
    429, 5xx, timeouts and connection failures are retried (throttling and timeouts not sooner
    than a minute, ``Retry-After`` honoured); every other answer, redirects included, is
    permanent.
    """
    if error is not None:
        return transport_failure(error)
    assert status is not None
    excerpt = body.strip()[:ERROR_EXCERPT_CHARS]
    reason = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    return decide(status, reason, parse_retry_after(retry_after))


def transport_failure(error: BaseException) -> Outcome:
    """A request that got no answer: retried, a timeout not sooner than a minute."""
    reason = f"{type(error).__name__}: {error}".rstrip(": ")
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return Outcome("retry", None, f"timeout ({reason})", THROTTLE_MIN_DELAY_S)
    return Outcome("retry", None, reason)


async def read_excerpt(response: aiohttp.ClientResponse) -> bytes:
    """The start of an error answer's body, enough for the error message; empty if unreadable."""
    try:
        return await response.content.read(ERROR_EXCERPT_CHARS * 4)
    except (aiohttp.ClientError, TimeoutError):
        return b""

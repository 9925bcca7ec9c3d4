"""The connector contract: what a connector implements, and the template method around it.

A connector turns completion events into requests to one destination (a webhook endpoint, a CRM).
The core never names a connector: types are found through the ``lance_bridge.connectors``
entry-point group (:mod:`bridge.registry`), so a new connector is one module plus one line in
``pyproject.toml``. What is worth retrying is decided in :mod:`bridge.classify`.
The inbound half (hook requests, their refusals, what a record lookup found) lives in
:mod:`bridge.inbound_contract`; this module names it too.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
import pydantic
from aiohttp import web

from bridge import classify, model
from bridge.classify import Outcome
from bridge.inbound_contract import (
    HookError,
    HookRequest,
    IdWrite,
    Lookup,
    inbound_of,
    linkedin_match,
    name_match,
    same_secret,
    wire_bytes,
)

__all__ = [
    "Connector",
    "ConnectorConfig",
    "HookError",
    "HookRequest",
    "IdWrite",
    "Lookup",
    "OutcomesCallback",
    "Reply",
    "inbound_of",
    "linkedin_match",
    "name_match",
    "not_blank",
    "same_secret",
    "wire_bytes",
]

logger = logging.getLogger(__name__)


def not_blank(value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
    """A secret given empty is a mistake (an unset variable, an uncommented example line).

    Left as is, an empty signing secret or token would let anyone through: refuse it, and let
    the key be unset instead.
    """
    if value is not None and not value.get_secret_value().strip():
        raise ValueError("must not be empty: remove the key to leave it unset")
    return value


class ConnectorConfig(pydantic.BaseModel):
    """Settings every connector has; each connector type extends this with its own keys."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = pydantic.Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: str
    events: tuple[model.EventType, ...] = model.EVENT_TYPES
    timeout_seconds: float = pydantic.Field(default=15.0, gt=0, le=120)
    max_concurrency: int = pydantic.Field(default=8, ge=1, le=256)


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A remote's answer to :meth:`Connector.request`, read.

    Attributes:
        status: The HTTP status.
        raw: The body: whole, or for ``excerpt_only`` requests nothing on 2xx and the start
            of an error answer (enough for its message).
        headers: The response headers (case-insensitive).
    """

    status: int
    raw: bytes
    headers: Mapping[str, str]


# Told the outcomes of one chunk as they arrive: (indexes into the events sent, outcomes).
OutcomesCallback = Callable[[Sequence[int], Sequence[Outcome]], None]


class Connector(abc.ABC):
    """Base class of every connector (template method: :meth:`send` calls :meth:`_send`).

    Subclasses set :attr:`Config` to their pydantic settings model, :attr:`max_batch` to the
    most events their API takes in one request, and :attr:`needs_record` when they update a
    CRM record (such connectors only receive events of enrichments whose targets name them).
    They send every request through :meth:`request`, which times and counts it the same way
    for all (``crm_requests_total``).
    """

    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    max_batch: ClassVar[int] = 1
    needs_record: ClassVar[bool] = False
    # Connectors that take inbound events set the path of their hook (``/hooks/hubspot``)
    # and implement :meth:`verify_hook` and :meth:`parse_hook`.
    hook_path: ClassVar[str | None] = None

    def __init__(
        self,
        config: ConnectorConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.session = session
        self.clock = clock  # the bridge's clock (Unix seconds); tests pass a controllable one
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        # Requests to the remote API by (endpoint, HTTP status or "none"), for the metrics.
        self.remote_requests: collections.Counter[tuple[str, str]] = collections.Counter()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.config.name!r}>"

    @property
    def name(self) -> str:
        """The configured, unique connector name."""
        return self.config.name

    async def request(
        self, method: str, url: str, *, endpoint: str, excerpt_only: bool = False, **kwargs: Any
    ) -> Reply:
        """One HTTP request to the remote, counted in ``crm_requests_total`` by ``endpoint``.

        Every connector sends through here, so every one reports the same metrics and applies
        ``timeout_seconds``. Redirects are not followed unless ``allow_redirects`` says so:
        only the remote's own answer counts.

        Args:
            method: The HTTP method.
            url: The full URL.
            endpoint: The metrics label, ``METHOD /path`` without ids or secrets.
            excerpt_only: Read no body of a 2xx and only the start of an error answer (the
                webhook connector needs nothing more).
            **kwargs: Passed to :meth:`aiohttp.ClientSession.request` (``json``, ``data``,
                ``headers`` ...).

        Raises:
            aiohttp.ClientError, TimeoutError: the request did not complete (counted as
                status ``none``).
        """
        kwargs.setdefault("allow_redirects", False)
        try:
            async with self.session.request(
                method, url, timeout=self.timeout, **kwargs
            ) as response:
                if not excerpt_only:
                    raw = await response.read()
                elif 200 <= response.status < 300:
                    raw = b""
                else:
                    raw = await classify.read_excerpt(response)
        except BaseException:
            self.remote_requests[(endpoint, "none")] += 1
            raise
        self.remote_requests[(endpoint, str(response.status))] += 1
        return Reply(response.status, raw, response.headers)

    async def open(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Acquire what the connector needs (tokens, caches). Called once at start."""

    async def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release what :meth:`open` acquired."""

    async def check(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Verify credentials against the remote side (``check-config --online``)."""

    def target_problem(self, object_type: str, object_id: str) -> str | None:
        """Why a ``/v1/triggers`` target cannot be a record of this CRM, or ``None``.

        Checked when the task is accepted, so a target no write could ever reach is a 422 for
        the caller rather than a dead delivery hours later.
        """
        return None

    def verify_hook(self, request: HookRequest) -> None:
        """Check that ``request`` really comes from this connector's CRM.

        Raises:
            HookError: 401 with the reason (bad signature, stale timestamp, wrong org ...).
        """
        raise HookError(404, "not_found", f"connector {self.name} takes no inbound events")

    def parse_hook(self, request: HookRequest) -> list[model.Inbound]:
        """The events of a verified request, each with what it asks for.

        Raises:
            HookError: 400/415/422 when the body is not what the CRM sends.
        """
        raise HookError(404, "not_found", f"connector {self.name} takes no inbound events")

    def hook_reply(self, request: HookRequest, received: model.Received) -> web.Response:
        """The answer once the events are durable (a JSON summary unless the CRM needs more)."""
        return web.json_response(
            {
                "received": received.events,
                "duplicates": received.duplicates,
                "skipped": received.skipped,
                "lookups": received.lookups,
                "enrichments": len(received.accepted),
            }
        )

    def hook_error(self, request: HookRequest, error: HookError) -> web.Response:
        """The answer to a refused request; nothing was stored."""
        body = {"error": {"code": error.code, "message": error.message, "details": None}}
        return web.json_response(body, status=error.status)

    async def lookup(self, records: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Lookup]:
        """Read CRM records that inbound events named without their properties.

        Args:
            records: (objectType, objectId) pairs, at most :attr:`max_batch` of each type.

        Returns:
            For each record read: the tasks it asks for, or a string saying why none.
            Records left out are read again on the next run (a transient failure).
        """
        return dict.fromkeys(records, "this connector reads no records")

    async def write_ids(self, writes: Sequence[IdWrite]) -> list[Outcome]:
        """Write Lance ids found by a person search to their records' Lance-id property.

        Batched as the CRM's API allows; one outcome per write, in order. Connectors that
        take no inbound records write nothing.
        """
        return [Outcome("dead", None, f"connector {self.name} writes no ids")] * len(writes)

    async def send(
        self, events: Sequence[model.Delivery], *, on_outcomes: OutcomesCallback | None = None
    ) -> list[Outcome]:
        """Deliver ``events`` in chunks of :attr:`max_batch`; one outcome per event, in order.

        An unexpected exception in a chunk is classified (and logged) instead of escaping, so
        one bad chunk never loses the outcomes of the others.

        Args:
            events: The events to deliver.
            on_outcomes: Called with the indexes and outcomes of each chunk as soon as its
                answer arrives, once per event: the caller records acknowledgements as they
                come, so a run cancelled midway (drain) still knows what was delivered.
        """
        outcomes: list[Outcome | None] = [None] * len(events)

        def settle(indexes: Sequence[int], results: Sequence[Outcome]) -> None:
            fresh = [(i, o) for i, o in zip(indexes, results, strict=True) if outcomes[i] is None]
            for index, outcome in fresh:
                outcomes[index] = outcome
            if fresh and on_outcomes is not None:
                on_outcomes([i for i, _ in fresh], [o for _, o in fresh])

        groups = self.batches(events)
        waiting = iter(groups)

        async def deliver() -> None:
            # Each worker takes the next chunk as its last one is answered: as many workers
            # as the connector may have requests in flight, not a task per chunk (a backlog
            # of a thousand webhooks would otherwise be a thousand tasks queued on _slots).
            for group in waiting:
                settle(group, await self._send_guarded([events[i] for i in group]))

        workers = min(self.config.max_concurrency, len(groups))
        await asyncio.gather(*(deliver() for _ in range(workers)))
        missed = [index for index, outcome in enumerate(outcomes) if outcome is None]
        if missed:
            # A batches() that left events out: like a miscounting _send, retry them rather
            # than raise out of the delivery run (which would re-send the others' events).
            logger.error(
                "connector %s left events without an outcome",
                self.name,
                extra={"event": "connector.error", "connector": self.name},
            )
            retry = Outcome("retry", None, "internal error: no outcome for this event")
            settle(missed, [retry] * len(missed))
        return [outcome for outcome in outcomes if outcome is not None]  # all settled now

    def batches(self, events: Sequence[model.Delivery]) -> list[list[int]]:
        """How ``events`` are split into requests: lists of indexes, each one :meth:`_send`.

        The default keeps their order, :attr:`max_batch` at a time; a CRM connector groups
        events of one object type, and of one record, into the same request.
        """
        size = self.max_batch
        return [list(range(i, min(i + size, len(events)))) for i in range(0, len(events), size)]

    async def _send_guarded(self, chunk: Sequence[model.Delivery]) -> list[Outcome]:
        async with self._slots:
            try:
                outcomes = await self._send(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return [classify.transport_failure(exc)] * len(chunk)
            except Exception as exc:
                logger.exception(
                    "connector failed", extra={"event": "connector.error", "connector": self.name}
                )
                return [Outcome("retry", None, f"internal error: {type(exc).__name__}")] * len(
                    chunk
                )
        if len(outcomes) != len(chunk):
            logger.error(
                "connector %s returned %d outcomes for %d events",
                self.name,
                len(outcomes),
                len(chunk),
                extra={"event": "connector.error", "connector": self.name},
            )
            return [Outcome("retry", None, "internal error: wrong number of outcomes")] * len(chunk)
        return outcomes

    @abc.abstractmethod
    async def _send(self, chunk: Sequence[model.Delivery]) -> list[Outcome]:
        """Send one chunk (at most :attr:`max_batch` events); one outcome per event."""

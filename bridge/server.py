"""The HTTP server ``serve`` runs: aiohttp's app runner behind limits that protect the service.

aiohttp bounds header sizes and closes idle keep-alive connections (``keepalive_timeout``), but
it waits forever for headers that never finish and for a body that stops arriving, and it
accepts connections until the process runs out of file descriptors, after which asyncio logs a
traceback every second. This module adds what aiohttp lacks (DESIGN §14), at the protocol level
so a stalled client costs a timer and nothing else:

- a header deadline: a request's headers must arrive within ``header_timeout_seconds`` of the
  connection opening (first request) or of the request's first byte (later ones); a trickle of
  bytes does not extend it. The client gets a bare 408 and the connection is closed.
- a body deadline: the whole body must arrive within ``body_timeout_seconds`` of the headers.
  The handler's read fails with a 408 (answered as a JSON error) and the connection is closed.
- a cap on open connections: one more is answered a bare 503 and closed at once, so a fresh
  client is served again as soon as stalled ones time out. The cap is lowered to stay below the
  file-descriptor limit, whose soft value is raised to the hard one at start.
- fd exhaustion anyway (other processes, other descriptors): asyncio already pauses accepting
  for a second; its error becomes one warning line a minute instead of a traceback a second.

It relies on ``aiohttp.web_protocol.RequestHandler`` of aiohttp 3.x (pinned ``<4``); the
acceptance tests in ``tests/acceptance/test_limits.py`` drive every path through raw sockets.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import streams, web, web_protocol
from yarl import URL

from bridge import errors
from bridge import settings as settings_mod

logger = logging.getLogger(__name__)

# Descriptors kept free beyond client connections: the ledger (database, WAL, shared memory),
# the outbound connection pool to Lance and the CRMs, the listening sockets, logs.
FD_RESERVE = 256
LOG_EVERY_S = 60.0
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Length: 0\r\n\r\n"
)
_HEADER_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class _Throttled:
    """One log line per ``every_s`` for an event a hostile client can repeat at will."""

    def __init__(self, level: int, event: str, message: str, every_s: float = LOG_EVERY_S) -> None:
        self._level, self._event, self._message, self._every_s = level, event, message, every_s
        self._last_s = -math.inf
        self._held = 0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last_s < self._every_s:
            self._held += 1
            return
        more = f" ({self._held} more since the last such line)" if self._held else ""
        logger.log(
            self._level,
            "%s%s",
            self._message,
            more,
            extra={"event": self._event, "suppressed": self._held},
        )
        self._last_s, self._held = now, 0


class _Gate:
    """Open client connections, and how many may be open at once."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0
        self.refused = _Throttled(
            logging.WARNING,
            "http.connection_refused",
            f"connection refused: {cap} connections open (server.max_connections)",
        )
        self.header_timeout = _Throttled(
            logging.INFO, "http.header_timeout", "connection closed: request headers too slow"
        )
        self.body_timeout = _Throttled(
            logging.INFO, "http.body_timeout", "connection closed: request body too slow"
        )


class _Refused(asyncio.Protocol):
    """A connection over the cap: a bare 503, then closed, before any parsing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSED)
        transport.close()


class GuardedHandler(web_protocol.RequestHandler):
    """aiohttp's request handler with a header deadline and a body deadline.

    Args:
        manager: The runner's low-level server (it tracks connections for shutdown).
        loop: The running loop.
        gate: Counts this connection while it is open.
        limits: The ``[server]`` settings.
        kwargs: Passed to aiohttp's ``RequestHandler``.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        gate: _Gate,
        limits: settings_mod.ServerSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            manager, loop=loop, keepalive_timeout=limits.keepalive_timeout_seconds, **kwargs
        )
        self._gate = gate
        self._header_s = limits.header_timeout_seconds
        self._body_s = limits.body_timeout_seconds
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: streams.StreamReader | None = None  # the latest request's payload
        self._counted = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The first request is due from the moment the connection opens: a client that
        # connects and sends nothing holds a descriptor just like one that stalls mid-header.
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        head_starts = bool(data) and self._header_timer is None and self._awaiting_head()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed and self._messages:
            self._cancel(self._header_timer)
            self._header_timer = None
            self._watch_body(self._messages[-1][1])
        elif head_starts and self.transport is not None:
            # Only a partial head needs a deadline (most requests arrive whole in one read):
            # it is counted from this first byte, and later bytes do not extend it.
            self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        if self._counted:
            self._counted = False
            self._gate.open -= 1
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        """No request is being read or handled: bytes arriving now start a new request."""
        body_done = self._body is None or self._body.is_eof()
        return body_done and not self._messages and not self._request_in_progress

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_s, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport is None or not self._awaiting_head():
            return
        self._gate.header_timeout()
        # Nothing else writes on this connection while it waits for a request's headers.
        self.transport.write(_HEADER_TIMEOUT)
        self.force_close()

    def _watch_body(self, payload: streams.StreamReader) -> None:
        self._body = payload
        if payload.is_eof():  # the common case: the body came with the headers
            return
        self._cancel(self._body_timer)
        self._body_timer = self._loop.call_later(self._body_s, self._body_timed_out)
        payload.on_eof(self._body_complete)

    def _body_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        payload = self._body
        if self.transport is None or payload is None or payload.is_eof():
            return
        self._gate.body_timeout()
        if not self._request_in_progress:  # queued or lingering: nobody is left to answer
            self.force_close()
            return
        # The handler answers: its read fails with a 408 (a JSON error via the middleware).
        # The payload is then ended and the connection closed after that answer, so neither
        # aiohttp's lingering read nor the parser touch the rest of the stalled body.
        payload.set_exception(web.HTTPRequestTimeout())
        payload.feed_eof()
        self.close()

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are :class:`GuardedHandler`, at most ``max_connections``.

    Args:
        runner: A set-up ``web.AppRunner``.
        limits: The ``[server]`` settings (host, port and the limits).
        max_connections: The cap in force (see :func:`connection_cap`).
    """

    def __init__(
        self, runner: web.AppRunner, limits: settings_mod.ServerSettings, max_connections: int
    ) -> None:
        super().__init__(runner)
        self._limits = limits
        self._gate = _Gate(max_connections)

    @property
    def name(self) -> str:
        """The site's URL."""
        return str(URL.build(scheme="http", host=self._limits.host, port=self.port))

    @property
    def port(self) -> int:
        """The port listened on (the bound one once started, for ``port = 0``)."""
        if self._server is not None and self._server.sockets:  # type: ignore[attr-defined]
            return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self._limits.port

    async def start(self) -> None:
        """Listen on ``host:port``."""
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection, self._limits.host, self._limits.port, backlog=self._backlog
        )

    def _connection(self) -> asyncio.Protocol:
        """A protocol for one accepted connection (asyncio calls this once per accept)."""
        gate = self._gate
        if gate.open >= gate.cap:
            gate.refused()
            return _Refused()
        server = self._runner.server
        assert server is not None
        gate.open += 1
        return GuardedHandler(
            server,
            loop=asyncio.get_running_loop(),
            gate=gate,
            limits=self._limits,
            access_log=None,  # one line per request would drown the log at 2,000 requests/s
        )


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard not in (resource.RLIM_INFINITY, soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. a sandbox that forbids it: keep what we have
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(configured: int, fd_limit: int) -> int:
    """``server.max_connections``, lowered so the cap is reached before the fd limit."""
    cap = max(1, min(configured, fd_limit - FD_RESERVE))
    if cap < configured:
        logger.warning(
            "server.max_connections lowered to %d: the file-descriptor limit is %d",
            cap,
            fd_limit,
            extra={"event": "serve.max_connections", "max_connections": cap},
        )
    return cap


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Turn asyncio's "accept out of system resource" tracebacks into a line a minute.

    Returns:
        A function that puts the previous exception handler back.
    """
    previous = loop.get_exception_handler()
    exhausted = _Throttled(
        logging.WARNING,
        "http.fd_exhausted",
        "out of file descriptors: new connections wait (raise the limit, ulimit -n)",
    )

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_EXHAUSTED:
            exhausted()
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return lambda: loop.set_exception_handler(previous)


class HttpServer:
    """The app served on ``server.host:server.port`` with the limits of ``[server]``.

    Args:
        app: The aiohttp application.
        limits: The ``[server]`` settings.
    """

    def __init__(self, app: web.Application, limits: settings_mod.ServerSettings) -> None:
        self._limits = limits
        # RequestHandler.shutdown waits up to this for a request in progress, then as long
        # again for its cancellation: both within drain_seconds, however a client stalls.
        # (aiohttp reads 0 as "no timeout", hence the floor.)
        shutdown_s = max(limits.drain_seconds / 2, 0.01)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_s
        )
        self._site: GuardedSite | None = None
        self._restore: Callable[[], None] | None = None

    @property
    def app(self) -> web.Application:
        """The application served."""
        return self._runner.app

    @property
    def port(self) -> int:
        """The port listened on."""
        return self._site.port if self._site is not None else self._limits.port

    async def start(self) -> None:
        """Start the app (its cleanup contexts) and listen.

        Raises:
            errors.ConfigError: The address cannot be listened on.
        """
        self._restore = quiet_accept_errors(asyncio.get_running_loop())
        cap = connection_cap(self._limits.max_connections, raise_fd_limit())
        await self._runner.setup()
        self._site = GuardedSite(self._runner, self._limits, cap)
        try:
            await self._site.start()
        except OSError as exc:
            where = f"{self._limits.host}:{self._limits.port}"
            raise errors.ConfigError(f"server: cannot listen on {where}: {exc.strerror}") from exc

    async def stop(self) -> None:
        """Stop listening, end the connections within the drain, then clean the app up."""
        try:
            await self._runner.cleanup()
        finally:
            if self._restore is not None:
                self._restore()

"""Logging: console lines or JSON objects, each carrying a stable ``event`` key and ids.

Callers pass ``extra={"event": "delivery.dead", "delivery_id": 7}``; those fields appear in
both formats. Secrets are ``SecretStr`` everywhere and so print as ``**********``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from aiohttp import http_exceptions

# Libraries that write the values they handle at DEBUG: aiosqlite logs every statement with
# its parameters (enriched emails and phones). They stay at WARNING whatever ``log.level`` is.
VALUE_LOGGERS = ("aiosqlite",)

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, event and ids."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ConsoleFormatter(logging.Formatter):
    """``time level event message key=value ...`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line, extras appended."""
        text = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{text} [{extras}]" if extras else text


class MalformedRequestFilter(logging.Filter):
    """aiohttp's report of a request it cannot parse, as one line without its data.

    A request line or header that is not HTTP (a NUL or a 0xff byte in ``Authorization``, say)
    is answered 400 by aiohttp itself, which logs it at ERROR with a traceback whose message
    quotes the offending line: a log flood anyone can cause, carrying that client's token.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a parse failure in place; keep it only if INFO is logged."""
        problem = record.exc_info[1] if record.exc_info else None
        if not isinstance(problem, http_exceptions.HttpProcessingError):
            return True
        # The first line names the problem; the lines after it quote the client's bytes.
        what = problem.message.splitlines()[0].rstrip(": ") if problem.message else "malformed"
        record.msg, record.args = "refused a request that is not valid HTTP: %s", (what,)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.event = "http.malformed"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def configure(level: str, fmt: str) -> None:
    """Send logs to stderr in ``fmt`` (``console`` or ``json``) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler reports every run at INFO and every skipped run (a slow job still busy,
    # which is by design) at WARNING; the supervisor counts skips instead.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in VALUE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [MalformedRequestFilter()]

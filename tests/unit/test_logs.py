"""Log formatting: a stable event key and ids in every record, never a secret's value."""

from __future__ import annotations

import json
import logging
import sys

from pydantic import SecretStr

from bridge import logs

SECRET = "s3cret-token-value"


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {
            "name": "bridge.dispatcher",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "delivery dead: %s",
            "args": (SecretStr(SECRET),),
        }
    )
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_event_key_and_ids_and_mask_secrets() -> None:
    record = _record(
        event="delivery.dead", delivery_id=7, connector="hook", token=SecretStr(SECRET)
    )

    line = json.loads(logs.JsonFormatter().format(record))

    assert line["event"] == "delivery.dead"
    assert line["delivery_id"] == 7
    assert line["connector"] == "hook"
    assert line["level"] == "warning"
    assert line["logger"] == "bridge.dispatcher"
    assert line["token"] == "**********"
    assert line["message"] == "delivery dead: **********"
    assert SECRET not in json.dumps(line)


def test_console_lines_carry_the_extras_and_mask_secrets() -> None:
    record = _record(event="delivery.dead", delivery_id=7, token=SecretStr(SECRET))

    text = logs.ConsoleFormatter().format(record)

    assert "event=delivery.dead" in text
    assert "delivery_id=7" in text
    assert SECRET not in text


def test_an_exception_is_included_in_the_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("bridge", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    line = json.loads(logs.JsonFormatter().format(record))
    assert "ValueError: boom" in line["exception"]

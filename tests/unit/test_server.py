"""The pieces of ``bridge.server`` that need no socket: the accept-error filter, the cap."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from bridge import server as server_mod

EXHAUSTED = {
    "message": "socket.accept() out of system resource",
    "exception": OSError(errno.EMFILE, "Too many open files"),
}


async def test_fd_exhaustion_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    passed: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: passed.append(context))
    restore = server_mod.quiet_accept_errors(loop)
    try:
        with caplog.at_level(logging.WARNING, logger="bridge.server"):
            for _ in range(100):  # asyncio reports it once a second for as long as it lasts
                loop.call_exception_handler(dict(EXHAUSTED))
            loop.call_exception_handler({"message": "something else"})
    finally:
        restore()

    lines = [r for r in caplog.records if r.name == "bridge.server"]
    assert len(lines) == 1
    assert lines[0].exc_info is None
    assert "out of file descriptors" in lines[0].getMessage()
    assert passed == [{"message": "something else"}]  # other errors go where they went
    loop.call_exception_handler({"message": "after"})
    assert passed[-1] == {"message": "after"}  # and the previous handler is back
    loop.set_exception_handler(None)


def test_the_cap_stays_below_the_fd_limit(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.server"):
        assert server_mod.connection_cap(1000, 1_048_576) == 1000
        assert caplog.records == []
        assert server_mod.connection_cap(1000, 1024) == 1024 - server_mod.FD_RESERVE

    [line] = caplog.records
    assert "lowered to 768" in line.getMessage()

"""``lance-bridge serve`` against stalled raw sockets: timeouts, the connection cap, SIGTERM.

Each test runs the installed CLI as a subprocess with short limits, so a stalled client is
dropped in about a second; the clients are plain TCP sockets that stop mid-request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge import server as server_mod
from tests.acceptance import test_serve as serve_mod
from tests.conftest import API_TOKEN

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
KEEPALIVE_TIMEOUT_S = 2.0
DRAIN_S = 2.0
MAX_CONNECTIONS = 8
SLACK_S = 1.0  # scheduling on a busy 2-core machine


LIMITS = {
    "header_timeout_seconds": HEADER_TIMEOUT_S,
    "body_timeout_seconds": BODY_TIMEOUT_S,
    "keepalive_timeout_seconds": KEEPALIVE_TIMEOUT_S,
    "max_connections": MAX_CONNECTIONS,
    "drain_seconds": DRAIN_S,
}


def _config(tmp_path: Path, port: int, server: dict[str, float]) -> Path:
    lines = "\n".join(f"{key} = {value}" for key, value in server.items())
    path = tmp_path / "lance-bridge.toml"
    path.write_text(
        f"""
[lance]
base_url = "http://127.0.0.1:9"
token = "unused"

[ledger]
path = "{tmp_path / "ledger.db"}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]
{lines}

[log]
level = "info"

[[connectors]]
name = "salesforce"
type = "salesforce"
login_url = "https://example.my.salesforce.com"
client_id = "test-consumer-key"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[serve_mod.Serve]:
    port = serve_mod._free_port()
    process = serve_mod.Serve(_config(tmp_path, port, LIMITS), port, tmp_path / "serve.log")
    await process.start()
    yield process
    if process.process is not None and process.process.returncode is None:
        process.process.kill()
        await process.process.wait()


async def _connect(serve: serve_mod.Serve) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(serve.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def _until_closed(reader: asyncio.StreamReader, timeout_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the socket, and how long that took."""
    started = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), timeout_s):
            received += chunk
    return received, time.monotonic() - started


async def _received_within(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """What the server sends within ``timeout_s``, whether or not it closes the socket."""
    received = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def _healthz(serve: serve_mod.Serve) -> bytes:
    reader, writer = await _connect(serve)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
    received, _ = await _until_closed(reader, 5)
    writer.close()
    return received


async def test_an_idle_keepalive_socket_is_closed_after_the_keepalive_timeout(
    serve: serve_mod.Serve,
) -> None:
    reader, writer = await _connect(serve)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"keep-alive" in head.lower() or b"connection: close" not in head.lower()

    rest, idle_s = await _until_closed(reader, KEEPALIVE_TIMEOUT_S + SLACK_S)

    assert b'"ok"' in rest  # the body, then nothing until the server hangs up
    assert KEEPALIVE_TIMEOUT_S - 0.3 < idle_s < KEEPALIVE_TIMEOUT_S + SLACK_S
    writer.close()


async def test_half_the_headers_is_closed_after_the_header_timeout(
    serve: serve_mod.Serve,
) -> None:
    reader, writer = await _connect(serve)
    writer.write(b"POST /v1/triggers HTTP/1.1\r\nHost: bridge\r\nContent-")

    received, waited_s = await _until_closed(reader, HEADER_TIMEOUT_S + SLACK_S)

    assert received.startswith(b"HTTP/1.1 408")
    assert waited_s < HEADER_TIMEOUT_S + SLACK_S
    writer.close()


async def test_a_trickle_of_header_bytes_does_not_extend_the_header_timeout(
    serve: serve_mod.Serve,
) -> None:
    reader, writer = await _connect(serve)
    started = time.monotonic()
    closed = asyncio.ensure_future(_until_closed(reader, 3 * HEADER_TIMEOUT_S + SLACK_S))
    with contextlib.suppress(ConnectionError):
        for byte in b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Slow: aaaaaaaa":
            if closed.done():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    received, _ = await closed

    assert received.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S
    writer.close()


async def test_half_a_body_is_answered_408_and_closed_after_the_body_timeout(
    serve: serve_mod.Serve,
) -> None:
    reader, writer = await _connect(serve)
    writer.write(
        b"POST /v1/triggers HTTP/1.1\r\nHost: bridge\r\n"
        + f"Authorization: Bearer {API_TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        + b'{"tasks": ['
    )

    received, waited_s = await _until_closed(reader, BODY_TIMEOUT_S + SLACK_S)

    assert received.startswith(b"HTTP/1.1 408")
    assert b"request_timeout" in received
    assert BODY_TIMEOUT_S - 0.3 < waited_s < BODY_TIMEOUT_S + SLACK_S
    assert b"Traceback" not in serve.log.read_bytes()
    writer.close()


async def test_stalled_connections_beyond_the_cap_are_refused_and_healthz_answers_after_them(
    serve: serve_mod.Serve,
) -> None:
    extra = 5
    stalled = [await _connect(serve) for _ in range(MAX_CONNECTIONS + extra)]
    for _, writer in stalled:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n")  # no blank line: stalled
    refused = await asyncio.gather(*(_until_closed(r, 0.5) for r, _ in stalled[-extra:]))
    assert all(answer.startswith(b"HTTP/1.1 503") for answer, _ in refused)

    started = time.monotonic()
    answer = b""
    while not answer.startswith(b"HTTP/1.1 200"):
        assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S, answer
        answer = await _healthz(serve)
        await asyncio.sleep(0.05)

    for _, writer in stalled:
        writer.close()
    log = serve.log.read_bytes()
    assert len(log) < 4096, log[-2000:]
    assert b"Traceback" not in log


async def test_sigterm_with_a_stalled_hook_body_exits_within_drain_seconds(
    tmp_path: Path,
) -> None:
    # Only drain_seconds is set: the default body timeout is far longer than the drain.
    port = serve_mod._free_port()
    config = _config(tmp_path, port, {"drain_seconds": DRAIN_S})
    slow = serve_mod.Serve(config, port, tmp_path / "drain.log")
    await slow.start()
    _, writer = await _connect(slow)
    writer.write(
        b"POST /hooks/salesforce HTTP/1.1\r\nHost: bridge\r\nContent-Type: text/xml\r\n"
        b"Content-Length: 1000000\r\n\r\n<?xml version="
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body
    assert slow.process is not None

    started = time.monotonic()
    slow.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(slow.process.wait(), DRAIN_S + 1)
    finally:
        if slow.process.returncode is None:
            slow.process.kill()
            await slow.process.wait()
        writer.close()

    assert code == 0
    assert time.monotonic() - started < DRAIN_S + 1
    assert b"Traceback" not in (tmp_path / "drain.log").read_bytes()


# Runs its arguments as a program under a lower RLIMIT_NOFILE (exec, so the pid is serve's).
_WITH_FD_LIMIT = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


async def test_more_clients_than_file_descriptors_are_refused_not_logged_as_a_flood(
    tmp_path: Path,
) -> None:
    # Soft 290, hard 320: serve raises the soft limit and keeps 256 descriptors in reserve.
    soft, hard = 290, 320
    cap = hard - server_mod.FD_RESERVE
    port = serve_mod._free_port()
    # A header deadline longer than the test: the connections within the cap stay open and
    # silent however long 400 connects take, so every other one must be refused with a 503.
    held = LIMITS | {"max_connections": 1000, "header_timeout_seconds": 60}
    config = _config(tmp_path, port, held)
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WITH_FD_LIMIT.format(soft=soft, hard=hard),
            *serve_mod._cli(),
            "serve",
            "-c",
            str(config),
            stdout=out,
            stderr=out,
            env={k: v for k, v in os.environ.items() if not k.startswith("LANCE_BRIDGE_")},
        )
    slow = serve_mod.Serve(config, port, log)
    slow.process = process
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await serve_mod._eventually(slow.ready, "readyz", 20)
        clients.extend([await _connect(slow) for _ in range(hard + 80)])  # past the limit
        for _, writer in clients:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n")
        answers = await asyncio.gather(*(_received_within(r, 5 * SLACK_S) for r, _ in clients))
        refused = sum(answer.startswith(b"HTTP/1.1 503") for answer in answers)
        silent = sum(answer == b"" for answer in answers)
        assert refused >= len(clients) - cap
        assert refused + silent == len(clients)
        for _, writer in clients:
            writer.close()
        clients.clear()

        async def healthy() -> bool:
            return (await _healthz(slow)).startswith(b"HTTP/1.1 200")

        await serve_mod._eventually(healthy, "healthz once the held clients are gone", 10)
        assert await slow.stop(signal.SIGTERM) == 0
    finally:
        for _, writer in clients:
            writer.close()
        if process.returncode is None:
            process.kill()
            await process.wait()

    text = log.read_text()
    assert f"server.max_connections lowered to {cap}: the file-descriptor limit is {hard}" in text
    assert "out of system resource" not in text
    assert "Traceback" not in text
    assert len(text) < 4096, text[-2000:]

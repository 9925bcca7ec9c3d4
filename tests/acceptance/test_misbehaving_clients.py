"""Clients that leave mid-body or send what is not HTTP, against ``lance-bridge serve``.

The in-process test server cancels a handler whose client is gone, and its logging is not the
one ``serve`` sets up, so only the real ``serve`` shows what an operator reads: its stderr,
checked here. Each misbehaving request is one INFO line, never a traceback or an ERROR.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.acceptance.test_serve import Serve, _eventually, _free_port
from tests.conftest import API_TOKEN

NOWHERE = "http://127.0.0.1:9"  # nothing is triggered, so Lance is never called
FLOW_TOKEN = "flow-shared-secret-0123456789"
BODY = b'{"tasks": [{"entityId": "3f6b6f2e-8a7c-4d8e-9b1a-2c3d4e5f6a7b", "field": "emails"}]}'


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "lance-bridge.toml"
    path.write_text(
        f"""
[lance]
base_url = "{NOWHERE}"
token = "sim-token"

[ledger]
path = "{tmp_path / "ledger.db"}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]
drain_seconds = 2

[log]
level = "info"

[[connectors]]
name = "hubspot"
type = "hubspot"
base_url = "{NOWHERE}"
access_token = "pat-unused"
client_secret = "hubspot-app-client-secret"

[[connectors]]
name = "salesforce"
type = "salesforce"
login_url = "{NOWHERE}"
client_id = "unused"
client_secret = "unused"
organization_id = "00D000000000001EAA"
flow_token = "{FLOW_TOKEN}"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    port = _free_port()
    process = Serve(_config(tmp_path, port), port, tmp_path / "serve.log")
    await process.start()
    yield process
    if process.process is not None and process.process.returncode is None:
        process.process.kill()  # the test failed before its own SIGTERM
        await process.process.wait()


async def _leave_mid_body(port: int, route: str, credentials: bytes) -> None:
    """Send the headers and half the body, then close the connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n" % route.encode()
        + credentials
        + b"Content-Length: %d\r\n\r\n" % len(BODY)
        + BODY[: len(BODY) // 2]
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


ROUTES = [
    ("/v1/triggers", b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"),
    ("/hooks/hubspot", b""),
    ("/hooks/salesforce", b"Authorization: Bearer " + FLOW_TOKEN.encode() + b"\r\n"),
]


async def test_clients_leaving_mid_body_are_one_info_line_each_and_serving_goes_on(
    serve: Serve,
) -> None:
    port = int(serve.url.rsplit(":", 1)[1])

    for route, credentials in ROUTES:
        await _leave_mid_body(port, route, credentials)

    async def all_noticed() -> bool:
        return serve.log.read_text().count("client disconnected") == len(ROUTES)

    await _eventually(all_noticed, "the disconnects in the log", timeout_s=10)
    async with aiohttp.ClientSession() as session, session.get(f"{serve.url}/healthz") as health:
        assert health.status == 200
    assert await serve.stop(signal.SIGTERM) == 0
    log = serve.log.read_text()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    lines = [line for line in log.splitlines() if "client disconnected" in line]
    assert len(lines) == len(ROUTES)
    assert all(" INFO " in line for line in lines), lines


MALFORMED = [
    # A NUL in a header value, a 0xff in a header name, a 0xff in the query: aiohttp refuses
    # each before any handler runs.
    b"GET /v1/enrichments HTTP/1.1\r\nHost: bridge\r\n"
    b"Authorization: Bearer " + API_TOKEN.encode() + b"\x00\r\n\r\n",
    b"GET /v1/enrichments HTTP/1.1\r\nHost: bridge\r\nX-Trace\xff: 1\r\n\r\n",
    b"GET /v1/enrichments?state=\xff HTTP/1.1\r\nHost: bridge\r\n\r\n",
]


async def _send(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_requests_that_are_not_http_are_400_and_one_line_without_their_bytes(
    serve: Serve,
) -> None:
    port = int(serve.url.rsplit(":", 1)[1])

    answers = [await _send(port, request) for request in MALFORMED]

    async def all_logged() -> bool:
        return serve.log.read_text().count("not valid HTTP") == len(MALFORMED)

    await _eventually(all_logged, "the refusals in the log", timeout_s=10)
    assert await serve.stop(signal.SIGTERM) == 0
    assert all(answer.startswith(b"HTTP/1.0 400 ") for answer in answers), answers
    log = serve.log.read_text()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    assert API_TOKEN not in log, log
    lines = [line for line in log.splitlines() if "not valid HTTP" in line]
    assert all(" INFO " in line and "event=http.malformed" in line for line in lines), lines
